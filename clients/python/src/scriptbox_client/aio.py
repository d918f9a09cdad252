"""The asynchronous client: :class:`AsyncClient` (asyncio or trio)."""

from __future__ import annotations

import time
from typing import Any, AsyncIterator, Dict, Mapping, Optional, Sequence, Union

import anyio
import httpx

from . import _core
from ._core import Script
from .errors import ScriptboxError, TransportError, WaitTimeout
from .models import LogEvent, Run, RunPage, RunStatus, ValidationReport


class AsyncClient:
    """The asynchronous twin of :class:`~scriptbox_client.Client`: the same
    methods, awaited; :meth:`logs` is an async iterator."""

    def __init__(
        self,
        url: Optional[str] = None,
        token: Optional[str] = None,
        *,
        timeout: float = 30.0,
        transport: Optional[httpx.AsyncBaseTransport] = None,
    ) -> None:
        self._timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=_core.base_url(url),
            headers=_core.headers(token),
            timeout=timeout,
            transport=transport,
        )

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Closes the connections."""
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as e:
            raise TransportError(f"{method} {path}: {e}") from e
        return _core.check(response)

    async def health(self) -> Dict[str, Any]:
        """``GET /v1/health``."""
        return await self._request("GET", "/v1/health")  # type: ignore[no-any-return]

    async def validate(
        self, script: Script, *, filename: Optional[str] = None, policy: Optional[str] = None
    ) -> ValidationReport:
        """Validates a script under a policy without running it."""
        body = _core.validate_body(script, filename=filename, policy=policy)
        return ValidationReport.from_json(await self._request("POST", "/v1/validate", json=body))

    async def submit(
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
        """Submits a script (see :meth:`Client.submit`)."""
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
            await self._request("POST", "/v1/runs", json=body, params=params, timeout=timeout)
        )

    async def run(
        self,
        script: Script,
        *,
        wait: bool = True,
        timeout: Optional[float] = None,
        **options: Any,
    ) -> Run:
        """Submits a script and, with ``wait``, returns its final record
        (see :meth:`Client.run`)."""
        if not wait:
            return await self.submit(script, **options)
        deadline = None if timeout is None else time.monotonic() + timeout
        first = _core.MAX_SERVER_WAIT if timeout is None else int(min(timeout, _core.MAX_SERVER_WAIT))
        run = await self.submit(script, wait=max(first, 0), **options)
        if run.is_final:
            return run
        remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        return await self.wait(run.id, timeout=remaining)

    async def get(self, run_id: str) -> Run:
        """A run's record (with its output once it has ended)."""
        return Run.from_json(await self._request("GET", f"/v1/runs/{run_id}"))

    async def list(
        self,
        *,
        status: Optional[Union[RunStatus, str]] = None,
        labels: Optional[Mapping[str, str]] = None,
        limit: Optional[int] = None,
        cursor: Optional[str] = None,
        tenant: Optional[str] = None,
    ) -> RunPage:
        """One page of runs, newest first."""
        params = _core.list_params(
            status=status, labels=labels, limit=limit, cursor=cursor, tenant=tenant
        )
        page = await self._request("GET", "/v1/runs", params=params)
        return RunPage(
            runs=[Run.from_json(r) for r in page.get("runs", [])],
            next_cursor=page.get("next_cursor"),
        )

    async def iter_runs(self, **filters: Any) -> AsyncIterator[Run]:
        """Every run matching ``filters``, page by page."""
        cursor = filters.pop("cursor", None)
        while True:
            page = await self.list(cursor=cursor, **filters)
            for run in page.runs:
                yield run
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def cancel(self, run_id: str) -> Run:
        """Cancels a run (see :meth:`Client.cancel`)."""
        return Run.from_json(await self._request("POST", f"/v1/runs/{run_id}/cancel"))

    async def wait(self, run_id: str, *, timeout: Optional[float] = None) -> Run:
        """Waits for a run to end and returns its final record."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            async for event in self.logs(run_id, _deadline=deadline):
                if event.record is not None:
                    return event.record
        except _core.Expired:
            raise WaitTimeout(run_id, timeout or 0) from None
        raise ScriptboxError(f"the event stream of run {run_id} ended without its record")

    async def logs(
        self,
        run_id: str,
        *,
        last_event_id: Optional[str] = None,
        reconnects: int = 5,
        _deadline: Optional[float] = None,
    ) -> AsyncIterator[LogEvent]:
        """The run's output as it is written, then ``end`` with the final
        record; resumes after a dropped connection (see :meth:`Client.logs`)."""
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
                async with self._http.stream(
                    "GET",
                    f"/v1/runs/{run_id}/logs",
                    headers=headers,
                    timeout=httpx.Timeout(self._timeout, read=read),
                ) as response:
                    if not response.is_success:
                        await response.aread()
                        raise _core.error_of(response)
                    decoder = _core.SSEDecoder()
                    async for line in response.aiter_lines():
                        if _deadline is not None and time.monotonic() > _deadline:
                            raise _core.Expired()
                        decoded = decoder.feed(line)
                        if decoded is None:
                            continue
                        event_id, name, data = decoded
                        failures = 0
                        if event_id is not None:
                            last = event_id
                        yield LogEvent.from_sse(event_id, name, data)
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
            await anyio.sleep(min(0.2 * 2 ** (failures - 1), 5.0))
