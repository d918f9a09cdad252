"""Exceptions: every failure of the client is a :class:`ScriptboxError`.

An error answered by the API is an :class:`APIError` carrying the API's
stable ``code`` (``unknown-policy``, ``queue-full``, ``not-found``, ...),
its one-line ``message`` and the HTTP status; a subclass per status lets
callers catch, say, :class:`NotFound` alone.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Type


class ScriptboxError(Exception):
    """Base of every error raised by scriptbox_client."""


class APIError(ScriptboxError):
    """The server answered with an error (``{"error": {"code", "message"}}``)."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        *,
        retry_after: Optional[float] = None,
        body: Any = None,
    ) -> None:
        super().__init__(f"{code}: {message} (HTTP {status_code})")
        #: The HTTP status.
        self.status_code = status_code
        #: The API's stable machine-readable code.
        self.code = code
        #: The API's explanation, for people.
        self.message = message
        #: Seconds the server asked to wait before retrying (429, 503).
        self.retry_after = retry_after
        #: The decoded body as received.
        self.body = body


class BadRequest(APIError):
    """400: malformed request, unknown policy or profile, refused callback."""


class Unauthorized(APIError):
    """401: no valid token."""


class Forbidden(APIError):
    """403: the token's role does not allow this."""


class NotFound(APIError):
    """404: no such run (for this tenant) or endpoint."""


class Conflict(APIError):
    """409: the run already ended, or an idempotency key was reused."""


class PayloadTooLarge(APIError):
    """413: script, stdin or body too large."""


class UnsupportedMediaType(APIError):
    """415: the body was not JSON."""


class TooManyRequests(APIError):
    """429: queue full, tenant quota, or overloaded; see ``retry_after``."""


class ServiceUnavailable(APIError):
    """503: the store is unavailable or the server is shutting down."""


_BY_STATUS: Dict[int, Type[APIError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    429: TooManyRequests,
    503: ServiceUnavailable,
}


def api_error(
    status_code: int, body: Any, retry_after: Optional[float] = None
) -> APIError:
    """The exception for an error answer (any body, even one not ours)."""
    code = "http-error"
    message = f"HTTP {status_code}"
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = str(body["error"].get("code", code))
        message = str(body["error"].get("message", message))
    elif isinstance(body, str) and body.strip():
        message = body.strip().splitlines()[0][:500]
    cls = _BY_STATUS.get(status_code, APIError)
    return cls(status_code, code, message, retry_after=retry_after, body=body)


class TransportError(ScriptboxError):
    """The server could not be reached, or the connection broke."""


class WaitTimeout(ScriptboxError, TimeoutError):
    """A run did not end within the time given to wait for it."""

    def __init__(self, run_id: str, timeout: float) -> None:
        super().__init__(f"run {run_id} did not end within {timeout:g} s")
        #: The run waited for.
        self.run_id = run_id


class BinaryError(ScriptboxError):
    """The local ``scriptbox`` binary is missing or failed."""


class InvalidScript(ScriptboxError, ValueError):
    """The script cannot be validated: unreadable, too large, not decodable,
    a syntax error or bad inline metadata (``scriptbox validate`` exit 2)."""

    def __init__(self, message: str, report: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(message)
        #: The ``scriptbox.validate/1`` report, when there is one.
        self.report = report
