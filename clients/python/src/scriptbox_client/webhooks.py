"""Checking callbacks: a server started with ``--callback-allow`` POSTs a
run's final record to its ``callback_url`` when it ends, with

- ``X-Scriptbox-Timestamp``: Unix seconds when it was signed;
- ``X-Scriptbox-Signature``: ``v1=`` and the hex HMAC-SHA256, keyed with the
  tenant's secret (``scriptbox token secret --tenant T``), of the
  timestamp, ``.``, and the body's bytes.

:func:`verify_signature` checks both, in constant time, and refuses
timestamps older (or newer) than ``tolerance`` seconds, so a recorded
delivery cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any, Mapping, Optional, Union

#: The header carrying the signature.
SIGNATURE_HEADER = "X-Scriptbox-Signature"
#: The header carrying the time it was signed.
TIMESTAMP_HEADER = "X-Scriptbox-Timestamp"
#: Deliveries signed longer ago than this (seconds) are refused by default.
DEFAULT_TOLERANCE = 300


def sign(secret: str, timestamp: Union[int, str], body: bytes) -> str:
    """The ``X-Scriptbox-Signature`` value for ``body`` at ``timestamp``."""
    message = str(timestamp).encode("ascii") + b"." + body
    digest = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()
    return f"v1={digest}"


def _header(headers: Any, name: str) -> Optional[str]:
    value = headers.get(name)
    if value is None and isinstance(headers, Mapping):
        lowered = name.lower()
        for key, v in headers.items():
            if str(key).lower() == lowered:
                return str(v)
    return None if value is None else str(value)


def verify_signature(
    secret: str,
    headers: Any,
    body: bytes,
    *,
    tolerance: Optional[float] = DEFAULT_TOLERANCE,
    now: Optional[float] = None,
) -> bool:
    """True when ``body`` was signed with ``secret`` by scriptbox within
    ``tolerance`` seconds of ``now`` (``None``: any age).

    ``headers`` is any mapping of the request's headers (a dict, httpx's or
    Starlette's headers, Django's ``request.headers``); ``body`` the raw
    bytes as received, before any JSON decoding.
    """
    signature = _header(headers, SIGNATURE_HEADER)
    timestamp = _header(headers, TIMESTAMP_HEADER)
    if not signature or not timestamp or not timestamp.isdigit():
        return False
    if tolerance is not None:
        current = time.time() if now is None else now
        if abs(current - int(timestamp)) > tolerance:
            return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature.strip())
