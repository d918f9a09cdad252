"""What the sync and async clients share: configuration, request bodies,
error answers, and the Server-Sent Events decoder. No I/O here."""

from __future__ import annotations

import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import httpx

from . import __version__
from .errors import APIError, ScriptboxError, api_error
from .models import RunStatus

#: A script: its source text, or a path to read it from.
Script = Union[str, "os.PathLike[str]"]

#: Longest ``?wait=`` the server accepts, in seconds.
MAX_SERVER_WAIT = 60

#: Keep-alive comments come every 15 s; a stream silent for this long is dead.
SSE_READ_TIMEOUT = 60.0


def base_url(url: Optional[str]) -> str:
    """The server's URL: given, else ``$SCRIPTBOX_URL``."""
    url = url or os.environ.get("SCRIPTBOX_URL")
    if not url:
        raise ScriptboxError(
            "no server URL: pass url= or set SCRIPTBOX_URL (e.g. http://127.0.0.1:8750)"
        )
    return url.rstrip("/")


def headers(token: Optional[str]) -> Dict[str, str]:
    """Headers of every request: the token (given, else ``$SCRIPTBOX_TOKEN``)."""
    token = token if token is not None else os.environ.get("SCRIPTBOX_TOKEN")
    h = {"User-Agent": f"scriptbox-client/{__version__}"}
    if token:
        h["Authorization"] = f"Bearer {token}"
    return h


def read_script(script: Script, filename: Optional[str]) -> Tuple[str, Optional[str]]:
    """The source text and file name of ``script`` (a path is read; its
    name is the default file name)."""
    if isinstance(script, str):
        return script, filename
    path = os.fspath(script)
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ScriptboxError(f"{path}: not UTF-8 ({e}); the API takes UTF-8 text") from None
    return text, filename or os.path.basename(path)


def submit_body(
    script: Script,
    *,
    filename: Optional[str] = None,
    policy: Optional[str] = None,
    profile: Optional[str] = None,
    backend: Optional[str] = None,
    args: Optional[Sequence[str]] = None,
    stdin: Optional[str] = None,
    labels: Optional[Mapping[str, str]] = None,
    idempotency_key: Optional[str] = None,
    callback_url: Optional[str] = None,
) -> Dict[str, Any]:
    """The JSON body of ``POST /v1/runs`` (unset fields left out)."""
    text, filename = read_script(script, filename)
    body: Dict[str, Any] = {"script": text}
    optional = {
        "filename": filename,
        "policy": policy,
        "profile": profile,
        "backend": backend,
        "stdin": stdin,
        "idempotency_key": idempotency_key,
        "callback_url": callback_url,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    if args:
        body["args"] = list(args)
    if labels:
        body["labels"] = dict(labels)
    return body


def validate_body(
    script: Script, *, filename: Optional[str] = None, policy: Optional[str] = None
) -> Dict[str, Any]:
    """The JSON body of ``POST /v1/validate``."""
    text, filename = read_script(script, filename)
    body: Dict[str, Any] = {"script": text}
    if filename is not None:
        body["filename"] = filename
    if policy is not None:
        body["policy"] = policy
    return body


def list_params(
    *,
    status: Optional[Union[RunStatus, str]] = None,
    labels: Optional[Mapping[str, str]] = None,
    limit: Optional[int] = None,
    cursor: Optional[str] = None,
    tenant: Optional[str] = None,
) -> List[Tuple[str, str]]:
    """The query of ``GET /v1/runs``."""
    params: List[Tuple[str, str]] = []
    if status is not None:
        params.append(("status", str(RunStatus(status))))
    for key, value in (labels or {}).items():
        params.append(("label", f"{key}={value}"))
    if limit is not None:
        params.append(("limit", str(limit)))
    if cursor is not None:
        params.append(("cursor", cursor))
    if tenant is not None:
        params.append(("tenant", tenant))
    return params


def check(response: httpx.Response) -> Any:
    """The decoded JSON of a successful answer; an :class:`APIError` otherwise."""
    if response.is_success:
        return response.json()
    raise error_of(response)


def error_of(response: httpx.Response) -> APIError:
    """The error an answer carries (its body must have been read)."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    retry_after: Optional[float] = None
    header = response.headers.get("retry-after")
    if header is not None:
        try:
            retry_after = float(header)
        except ValueError:
            retry_after = None
    return api_error(response.status_code, body, retry_after)


class Expired(Exception):
    """Internal: a wait's deadline passed while following a stream."""


class SSEDecoder:
    """Decodes a Server-Sent Events stream line by line (the WHATWG rules
    that matter here: ``id``, ``event``, multi-line ``data``, comments)."""

    def __init__(self) -> None:
        self._event = ""
        self._data: List[str] = []
        self._id: Optional[str] = None

    def feed(self, line: str) -> Optional[Tuple[Optional[str], str, str]]:
        """Takes one line (without its end); returns ``(id, event, data)``
        when it completes an event."""
        if line == "":
            if not self._data and not self._event:
                return None
            event = (self._id, self._event or "message", "\n".join(self._data))
            self._event, self._data = "", []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return None


