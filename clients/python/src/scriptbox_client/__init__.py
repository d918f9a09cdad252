"""scriptbox_client: a client for scriptbox, the per-script sandbox manager.

- :class:`Client` / :class:`AsyncClient`: validate, submit, run, get, list,
  cancel, and follow live logs (resumed after a dropped connection).
- :mod:`scriptbox_client.package_validator`: the origin platform's
  ``validator`` API (``validate_packages``, ``create_error_message``,
  ``auto_install_packages``), over a server or the local binary.
- :func:`verify_signature`: checks the signature of a callback.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .aio import AsyncClient
from .client import Client
from .errors import (
    APIError,
    BadRequest,
    BinaryError,
    Conflict,
    Forbidden,
    InvalidScript,
    NotFound,
    PayloadTooLarge,
    ScriptboxError,
    ServiceUnavailable,
    TooManyRequests,
    TransportError,
    Unauthorized,
    UnsupportedMediaType,
    WaitTimeout,
)
from .models import (
    Callback,
    CallbackAttempt,
    CallbackState,
    LogEvent,
    Run,
    RunPage,
    RunStatus,
    ValidationReport,
)
from .webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, verify_signature

__all__ = [
    "APIError",
    "AsyncClient",
    "BadRequest",
    "BinaryError",
    "Callback",
    "CallbackAttempt",
    "CallbackState",
    "Client",
    "Conflict",
    "Forbidden",
    "InvalidScript",
    "LogEvent",
    "NotFound",
    "PayloadTooLarge",
    "Run",
    "RunPage",
    "RunStatus",
    "SIGNATURE_HEADER",
    "ScriptboxError",
    "ServiceUnavailable",
    "TIMESTAMP_HEADER",
    "TooManyRequests",
    "TransportError",
    "Unauthorized",
    "UnsupportedMediaType",
    "ValidationReport",
    "WaitTimeout",
    "__version__",
    "sign",
    "verify_signature",
]
