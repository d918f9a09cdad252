"""The blocking client: :class:`Client`."""

from __future__ import annotations

import time
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Union

import httpx

from . import _core
from ._core import Script
from .errors import ScriptboxError, TransportError, WaitTimeout
from .models import LogEvent, Run, RunPage, RunStatus, ValidationReport


class Client:
    """A blocking client of a scriptbox server.

    ``url`` and ``token`` default to ``$SCRIPTBOX_URL`` and
    ``$SCRIPTBOX_TOKEN``. Use it as a context manager, or call
    :meth:`close`. API errors raise :class:`~scriptbox_client.APIError`
    subclasses; connection problems raise
    :class:`~scriptbox_client.TransportError`.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        token: Optional[str] = None,
        *,
        timeout: float = 30.0,
        transport: Optional[httpx.BaseTransport] = None,
    ) -> None:
        self._timeout = timeout
        self._http = httpx.Client(
            base_url=_core.base_url(url),
            headers=_core.headers(token),
            timeout=timeout,
            transport=transport,
        )

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connections."""
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as e:
            raise TransportError(f"{method} {path}: {e}") from e
        return _core.check(response)

    def health(self) -> Dict[str, Any]:
        """``GET /v1/health``: ``{"status", "version", "queued", "running"}``."""
        return self._request("GET", "/v1/health")  # type: ignore[no-any-return]

    def validate(
        self, script: Script, *, filename: Optional[str] = None, policy: Optional[str] = None
    ) -> ValidationReport:
        """Validates a script under a policy without running it."""
        body = _core.validate_body(script, filename=filename, policy=policy)
        return ValidationReport.from_json(self._request("POST", "/v1/validate", json=body))

    def submit(
        self,
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
        wait: Optional[int] = None,
    ) -> Run:
        """Submits a script; the record as recorded (``queued``, or
        ``rejected`` with the reason). With ``wait`` (seconds, at most 60),
        the server answers once the run ends, if it ends by then."""
        body = _core.submit_body(
            script,
            filename=filename,
            policy=policy,
            profile=profile,
            backend=backend,
            args=args,
            stdin=stdin,
            labels=labels,
            idempotency_key=idempotency_key,
            callback_url=callback_url,
        )
        params = {"wait": str(wait)} if wait else None
        timeout = self._timeout + (wait or 0)
        return Run.from_json(
            self._request("POST", "/v1/runs", json=body, params=params, timeout=timeout)
        )

    def run(
        self,
        script: Script,
        *,
        wait: bool = True,
        timeout: Optional[float] = None,
        **options: Any,
    ) -> Run:
        """Submits a script and, with ``wait`` (the default), returns its
        final record, however long it runs (or until ``timeout`` seconds,
        then :class:`~scriptbox_client.WaitTimeout`). ``options`` are those
        of :meth:`submit`."""
        if not wait:
            return self.submit(script, **options)
        deadline = None if timeout is None else time.monotonic() + timeout
        first = _core.MAX_SERVER_WAIT if timeout is None else int(min(timeout, _core.MAX_SERVER_WAIT))
        run = self.submit(script, wait=max(first, 0), **options)
        if run.is_final:
            return run
        remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        return self.wait(run.id, timeout=remaining)

    def get(self, run_id: str) -> Run:
        """A run's record (with its output once it has ended)."""
        return Run.from_json(self._request("GET", f"/v1/runs/{run_id}"))

    def list(
        self,
        *,
        status: Optional[Union[RunStatus, str]] = None,
        labels: Optional[Mapping[str, str]] = None,
        limit: Optional[int] = None,
        cursor: Optional[str] = None,
        tenant: Optional[str] = None,
    ) -> RunPage:
        """One page of runs, newest first (pass ``next_cursor`` on)."""
        params = _core.list_params(
            status=status, labels=labels, limit=limit, cursor=cursor, tenant=tenant
        )
        page = self._request("GET", "/v1/runs", params=params)
        return RunPage(
            runs=[Run.from_json(r) for r in page.get("runs", [])],
            next_cursor=page.get("next_cursor"),
        )

    def iter_runs(self, **filters: Any) -> Iterator[Run]:
        """Every run matching ``filters`` (those of :meth:`list`), page by page."""
        cursor = filters.pop("cursor", None)
        while True:
            page = self.list(cursor=cursor, **filters)
            yield from page.runs
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def cancel(self, run_id: str) -> Run:
        """Cancels a run: a queued one never starts, a running one is
        stopped. The record (final, or still ``running`` if it has not
        stopped within the server's wait)."""
        return Run.from_json(self._request("POST", f"/v1/runs/{run_id}/cancel"))

    def wait(self, run_id: str, *, timeout: Optional[float] = None) -> Run:
        """Waits for a run to end and returns its final record, following its
        event stream (no polling)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            for event in self.logs(run_id, _deadline=deadline):
                if event.record is not None:
                    return event.record
        except _core.Expired:
            raise WaitTimeout(run_id, timeout or 0) from None
        # logs() ends only with `end`, or raises.
        raise ScriptboxError(f"the event stream of run {run_id} ended without its record")

    def logs(
        self,
        run_id: str,
        *,
        last_event_id: Optional[str] = None,
        reconnects: int = 5,
        _deadline: Optional[float] = None,
    ) -> Iterator[LogEvent]:
        """The run's output as it is written, then its ``end`` event with
        the final record. A dropped connection is resumed where it broke
        (``Last-Event-ID``), up to ``reconnects`` times in a row."""
        last = last_event_id
        failures = 0
        while True:
            headers = {"Accept": "text/event-stream"}
            if last is not None:
                headers["Last-Event-ID"] = last
            read = _core.SSE_READ_TIMEOUT
            if _deadline is not None:
                read = max(min(read, _deadline - time.monotonic()), 0.001)
            try:
                with self._http.stream(
                    "GET",
                    f"/v1/runs/{run_id}/logs",
                    headers=headers,
                    timeout=httpx.Timeout(self._timeout, read=read),
                ) as response:
                    if not response.is_success:
                        response.read()
                        raise _core.error_of(response)
                    decoder = _core.SSEDecoder()
                    for line in response.iter_lines():
                        if _deadline is not None and time.monotonic() > _deadline:
                            raise _core.Expired()
                        decoded = decoder.feed(line)
                        if decoded is None:
                            continue
                        event_id, name, data = decoded
                        failures = 0
                        if event_id is not None:
                            last = event_id
                        event = LogEvent.from_sse(event_id, name, data)
                        yield event
                        if name == "end":
                            return
            except httpx.TimeoutException as e:
                if _deadline is not None and time.monotonic() >= _deadline:
                    raise _core.Expired() from e
                error: Exception = e
            except httpx.TransportError as e:
                error = e
            else:
                error = TransportError("the stream ended before the run did")
            failures += 1
            if failures > reconnects:
                raise TransportError(
                    f"the log stream of run {run_id} broke {failures} times in a row: {error}"
                ) from error
            time.sleep(min(0.2 * 2 ** (failures - 1), 5.0))
