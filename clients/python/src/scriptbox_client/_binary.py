"""The local ``scriptbox`` binary, for the seed API when no server is
configured: found at ``$SCRIPTBOX_BIN``, else on ``PATH``; asked for JSON
(``validate --format json``, ``env build --format json``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .errors import BinaryError


def find(explicit: Optional[str] = None) -> str:
    """The binary to run: ``explicit``, ``$SCRIPTBOX_BIN``, or ``scriptbox`` on PATH."""
    candidate = explicit or os.environ.get("SCRIPTBOX_BIN")
    if candidate:
        if not (os.path.isfile(candidate) and os.access(candidate, os.X_OK)):
            raise BinaryError(f"{candidate}: not an executable scriptbox binary (SCRIPTBOX_BIN)")
        return candidate
    found = shutil.which("scriptbox")
    if found is None:
        raise BinaryError(
            "no scriptbox server or binary: set SCRIPTBOX_URL (and SCRIPTBOX_TOKEN) "
            "to use a server, or SCRIPTBOX_BIN, or put scriptbox on PATH"
        )
    return found


def _run(binary: str, args: Sequence[str], timeout: Optional[float]) -> Tuple[int, str, str]:
    try:
        done = subprocess.run(
            [binary, *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except OSError as e:
        raise BinaryError(f"cannot run {binary}: {e}") from e
    except subprocess.TimeoutExpired as e:
        raise BinaryError(f"{binary} {' '.join(args[:2])} took longer than {timeout} s") from e
    return done.returncode, done.stdout, done.stderr


def _first_json(stdout: str) -> Optional[Dict[str, Any]]:
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None


def _last_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def validate(
    binary: str,
    path: str,
    *,
    policy: Optional[str] = None,
    python: Optional[str] = None,
    timeout: Optional[float] = None,
) -> Dict[str, Any]:
    """``scriptbox validate --format json`` of one script: its
    ``scriptbox.validate/1`` report (exit 0, 1 or 2 alike)."""
    args: List[str] = ["validate", "--format", "json"]
    if policy is not None:
        args += ["--policy", policy]
    elif python is not None:
        args += ["--python", python]
    args.append(path)
    code, stdout, stderr = _run(binary, args, timeout)
    report = _first_json(stdout)
    if report is None:
        raise BinaryError(f"scriptbox validate failed (exit {code}): {_last_line(stderr)}")
    return report


def build_env(
    binary: str, packages: Sequence[str], *, policy: str, timeout: Optional[float] = None
) -> Tuple[bool, Dict[str, Any], str]:
    """``scriptbox env build --packages ... --policy P --format json``:
    (ready, its ``scriptbox.env-build/1`` object, the error line if not)."""
    args = ["env", "build", "--policy", policy, "--format", "json", "--packages", *packages]
    code, stdout, stderr = _run(binary, args, timeout)
    result = _first_json(stdout) or {}
    return code == 0, result, "" if code == 0 else _last_line(stderr)
