"""The AsyncClient against a real server: every method, awaited; logs as
an async iterator, resumed after the connection is cut."""

from __future__ import annotations

import uuid
from typing import List

import pytest

from scriptbox_client import (
    AsyncClient,
    BadRequest,
    Conflict,
    LogEvent,
    NotFound,
    RunStatus,
    WaitTimeout,
)

from conftest import (
    COUNTING_OUTPUT,
    COUNTING_SCRIPT,
    SLEEPING_SCRIPT,
    CuttingProxy,
    Server,
    last_event_id,
)

pytestmark = pytest.mark.anyio


async def test_every_method(server: Server, token: str) -> None:
    tag = uuid.uuid4().hex[:8]
    async with AsyncClient(server.url, token) as sb:
        assert (await sb.health())["status"] == "ok"
        report = await sb.validate("import six\n", policy="manual")
        assert (report.verdict, report.missing) == ("missing", ["six"])

        run = await sb.run("print(6 * 7)\n", policy="tiny", labels={"bot": tag})
        assert (run.status, run.stdout) == (RunStatus.SUCCEEDED, "42\n")
        assert (await sb.get(run.id)).stdout == "42\n"

        queued = await sb.submit("print('later')\n", policy="tiny", labels={"bot": tag})
        done = await sb.wait(queued.id)
        assert (done.status, done.stdout) == (RunStatus.SUCCEEDED, "later\n")

        page = await sb.list(labels={"bot": tag}, limit=1)
        assert [r.id for r in page.runs] == [queued.id] and page.next_cursor
        assert [r.id async for r in sb.iter_runs(labels={"bot": tag}, limit=1)] == [queued.id, run.id]

        with pytest.raises(NotFound) as missing:
            await sb.get("no-such-run")
        assert missing.value.code == "not-found"
        with pytest.raises(BadRequest) as bad:
            await sb.submit("print(1)\n", policy="no-such-policy")
        assert bad.value.code == "unknown-policy"


async def test_cancel_and_wait_timeout(server: Server, token: str) -> None:
    async with AsyncClient(server.url, token) as sb:
        run = await sb.submit(SLEEPING_SCRIPT, policy="tiny")
        async for event in sb.logs(run.id):
            if event.text == "started\n":
                break
        with pytest.raises(WaitTimeout):
            await sb.wait(run.id, timeout=0.5)
        cancelled = await sb.cancel(run.id)
        assert cancelled.status is RunStatus.CANCELLED
        with pytest.raises(Conflict):
            await sb.cancel(run.id)


async def test_logs_resume_after_the_connection_is_cut(
    server: Server, token: str, proxy: CuttingProxy
) -> None:
    async with AsyncClient(server.url, token) as direct, AsyncClient(proxy.url, token) as sb:
        run = await direct.submit(COUNTING_SCRIPT, policy="tiny")
        seen: List[LogEvent] = []
        cut_after = None
        async for event in sb.logs(run.id):
            seen.append(event)
            text = "".join(e.text or "" for e in seen)
            if cut_after is None and event.event == "stdout" and "line 3\n" in text:
                cut_after = event.id
                proxy.cut()
        assert "".join(e.text or "" for e in seen if e.event == "stdout") == COUNTING_OUTPUT
        assert seen[-1].event == "end" and seen[-1].record is not None
        assert seen[-1].record.status is RunStatus.SUCCEEDED
        assert len(proxy.heads) >= 2, proxy.heads
        assert last_event_id(proxy.heads[1]) == cut_after
