"""The API's objects as Python types: run statuses as an enum, run records,
pages, log events, validation reports and callback attempts.

Every object keeps the JSON it was made from in ``raw``, so fields a newer
server adds are never lost.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional


class RunStatus(str, enum.Enum):
    """A run's status (``scriptbox.run-record/1``)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ERROR = "error"
    REJECTED = "rejected"
    TIMED_OUT = "timed-out"
    CPU_LIMIT = "cpu-limit"
    MEMORY_LIMIT = "memory-limit"
    OUTPUT_LIMIT = "output-limit"
    KILLED = "killed"
    CANCELLED = "cancelled"
    LOST = "lost"

    @property
    def is_final(self) -> bool:
        """True once the run has ended."""
        return self not in (RunStatus.QUEUED, RunStatus.RUNNING)

    def __str__(self) -> str:
        return self.value


class CallbackState(str, enum.Enum):
    """Where a run's callback delivery stands."""

    WAITING = "waiting"
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class CallbackAttempt:
    """One delivery attempt of a callback."""

    attempt: int
    at: str
    address: Optional[str]
    status_code: Optional[int]
    error: Optional[str]
    duration_ms: int

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "CallbackAttempt":
        return cls(
            attempt=int(d.get("attempt", 0)),
            at=str(d.get("at", "")),
            address=d.get("address"),
            status_code=d.get("status_code"),
            error=d.get("error"),
            duration_ms=int(d.get("duration_ms", 0)),
        )


@dataclass(frozen=True)
class Callback:
    """A run's callback: its URL, where delivery stands, every attempt."""

    url: str
    state: CallbackState
    attempts: List[CallbackAttempt]
    next_attempt_at: Optional[str]

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "Callback":
        return cls(
            url=str(d.get("url", "")),
            state=CallbackState(d.get("state", "waiting")),
            attempts=[CallbackAttempt.from_json(a) for a in d.get("attempts") or []],
            next_attempt_at=d.get("next_attempt_at"),
        )


@dataclass(frozen=True)
class Run:
    """A run record (``scriptbox.run-record/1``). ``stdout`` and ``stderr``
    are set once the run has ended (and never in listings)."""

    id: str
    tenant: str
    status: RunStatus
    created_at: str
    started_at: Optional[str]
    finished_at: Optional[str]
    filename: str
    script_sha256: str
    policy: str
    policy_digest: str
    profile: str
    backend: str
    args: List[str]
    labels: Dict[str, str]
    attempts: int
    exit_code: Optional[int]
    signal: Optional[str]
    stdout: Optional[str]
    stderr: Optional[str]
    stdout_truncated: bool
    stderr_truncated: bool
    message: Optional[str]
    pip_command: Optional[str]
    callback: Optional[Callback]
    raw: Dict[str, Any] = field(repr=False, compare=False)

    @property
    def is_final(self) -> bool:
        """True once the run has ended."""
        return self.status.is_final

    @property
    def ok(self) -> bool:
        """True when the script exited 0."""
        return self.status is RunStatus.SUCCEEDED

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "Run":
        policy = d.get("policy") or {}
        callback = d.get("callback")
        return cls(
            id=str(d["id"]),
            tenant=str(d.get("tenant", "")),
            status=RunStatus(d["status"]),
            created_at=str(d.get("created_at", "")),
            started_at=d.get("started_at"),
            finished_at=d.get("finished_at"),
            filename=str(d.get("filename", "")),
            script_sha256=str(d.get("script_sha256", "")),
            policy=str(policy.get("name", "")),
            policy_digest=str(policy.get("digest", "")),
            profile=str(d.get("profile", "")),
            backend=str(d.get("backend", "")),
            args=list(d.get("args") or []),
            labels=dict(d.get("labels") or {}),
            attempts=int(d.get("attempts", 0)),
            exit_code=d.get("exit_code"),
            signal=d.get("signal"),
            stdout=d.get("stdout"),
            stderr=d.get("stderr"),
            stdout_truncated=bool(d.get("stdout_truncated", False)),
            stderr_truncated=bool(d.get("stderr_truncated", False)),
            message=d.get("message"),
            pip_command=d.get("pip_command"),
            callback=Callback.from_json(callback) if isinstance(callback, dict) else None,
            raw=d,
        )


@dataclass(frozen=True)
class RunPage:
    """One page of ``GET /v1/runs``, newest first."""

    runs: List[Run]
    next_cursor: Optional[str]


@dataclass(frozen=True)
class LogEvent:
    """One event of a run's live output: ``stdout`` or ``stderr`` with
    ``text``, or ``end`` with the final ``record``. ``id`` is the number of
    the last chunk (what ``Last-Event-ID`` resumes after)."""

    id: Optional[str]
    event: str
    text: Optional[str] = None
    record: Optional[Run] = None

    @classmethod
    def from_sse(cls, event_id: Optional[str], event: str, data: str) -> "LogEvent":
        payload = json.loads(data) if data else {}
        if event == "end":
            return cls(id=event_id, event=event, record=Run.from_json(payload))
        return cls(id=event_id, event=event, text=str(payload.get("text", "")))


@dataclass(frozen=True)
class ValidationReport:
    """A ``scriptbox.validate/1`` report (see the README for every key)."""

    verdict: str
    exit_code: int
    missing: List[str]
    pip_command: Optional[str]
    forbidden: List[str]
    to_install: List[str]
    unresolved: List[str]
    error: Optional[str]
    raw: Dict[str, Any] = field(repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """True when every required dependency is present or allowed."""
        return self.verdict == "ok"

    @property
    def available(self) -> List[str]:
        """Distributions the script needs that the target already has:
        installed there, or preinstalled under the policy."""
        names: List[str] = []
        for dep in self.raw.get("dependencies") or []:
            policy = dep.get("policy") or {}
            if dep.get("status") == "installed" or policy.get("status") == "available":
                names.append(str(dep.get("name")))
        return names

    @property
    def auto_install(self) -> Optional[bool]:
        """The policy's ``auto_install``, when judged by a policy."""
        policy = self.raw.get("policy")
        return bool(policy.get("auto_install")) if isinstance(policy, dict) else None

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "ValidationReport":
        error = d.get("error")
        return cls(
            verdict=str(d.get("verdict", "invalid")),
            exit_code=int(d.get("exit_code", 2)),
            missing=list(d.get("missing") or []),
            pip_command=d.get("pip_command"),
            forbidden=list(d.get("forbidden") or []),
            to_install=list(d.get("to_install") or []),
            unresolved=list(d.get("unresolved") or []),
            error=error.get("message") if isinstance(error, dict) else None,
            raw=d,
        )
