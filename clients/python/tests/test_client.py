"""The blocking Client against a real server: every method, statuses as
an enum, errors carrying the API's code and message, live logs resumed
after the connection is cut."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from scriptbox_client import (
    BadRequest,
    Client,
    Conflict,
    NotFound,
    RunStatus,
    TransportError,
    Unauthorized,
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


def test_health_and_validate(server: Server, token: str) -> None:
    with Client(server.url, token) as sb:
        health = sb.health()
        assert health["status"] == "ok"
        report = sb.validate("import six\nimport numpy\n", policy="tiny")
        assert report.verdict == "forbidden" and not report.ok
        assert any("numpy" in why for why in report.forbidden)
        assert report.auto_install is True
        report = sb.validate("import six\n", policy="manual")
        assert (report.verdict, report.missing, report.pip_command) == ("missing", ["six"], "pip install six")


def test_run_waits_and_get_list_find_it(server: Server, token: str, tmp_path: Path) -> None:
    script = tmp_path / "hello.py"
    script.write_text("import sys\nprint('hello', sys.argv[1:])\nprint(sys.stdin.read().strip())\n")
    tag = uuid.uuid4().hex[:8]
    with Client(server.url, token) as sb:
        run = sb.run(script, policy="tiny", args=["a", "b c"], stdin="prices", labels={"bot": tag})
        assert run.status is RunStatus.SUCCEEDED and run.ok and run.is_final
        assert run.stdout == "hello ['a', 'b c']\nprices\n"
        assert (run.filename, run.exit_code, run.tenant, run.policy) == ("hello.py", 0, "acme", "tiny")
        assert run.callback is None

        again = sb.get(run.id)
        assert again.id == run.id and again.stdout == run.stdout and again.status is RunStatus.SUCCEEDED

        second = sb.run("print(2)\n", policy="tiny", labels={"bot": tag})
        page = sb.list(labels={"bot": tag})
        assert [r.id for r in page.runs] == [second.id, run.id]
        assert all(r.stdout is None for r in page.runs)  # listings carry no output
        first_page = sb.list(labels={"bot": tag}, limit=1)
        assert [r.id for r in first_page.runs] == [second.id] and first_page.next_cursor
        assert [r.id for r in sb.iter_runs(labels={"bot": tag}, limit=1)] == [second.id, run.id]
        assert sb.list(status=RunStatus.SUCCEEDED, labels={"bot": tag}).runs
        assert sb.list(status="failed", labels={"bot": tag}).runs == []

        # Without waiting: the record as recorded, then wait() for its end.
        queued = sb.run("print('later')\n", policy="tiny", wait=False)
        assert queued.status in (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.SUCCEEDED)
        done = sb.wait(queued.id)
        assert (done.status, done.stdout) == (RunStatus.SUCCEEDED, "later\n")


def test_rejections_and_failures_are_statuses(server: Server, token: str) -> None:
    with Client(server.url, token) as sb:
        rejected = sb.submit("import six\n", policy="manual")
        assert rejected.status is RunStatus.REJECTED
        assert rejected.pip_command == "pip install six"
        assert "Missing Python packages detected!" in (rejected.message or "")
        failed = sb.run("raise SystemExit(3)\n", policy="tiny")
        assert (failed.status, failed.exit_code, failed.ok) == (RunStatus.FAILED, 3, False)


def test_errors_carry_the_api_code_and_message(server: Server, token: str) -> None:
    with Client(server.url, token) as sb:
        with pytest.raises(NotFound) as missing:
            sb.get("no-such-run")
        assert (missing.value.status_code, missing.value.code) == (404, "not-found")
        assert "no-such-run" in missing.value.message
        with pytest.raises(BadRequest) as bad:
            sb.submit("print(1)\n", policy="no-such-policy")
        assert bad.value.code == "unknown-policy"
        with pytest.raises(BadRequest) as bad_list:
            sb.list(limit=100000)
        assert bad_list.value.code == "invalid-query"
    with Client(server.url, "sbx_not_a_token") as anonymous:
        with pytest.raises(Unauthorized) as denied:
            anonymous.list()
        assert denied.value.code == "unauthorized"
    with Client("http://127.0.0.1:9", token) as nowhere:
        with pytest.raises(TransportError):
            nowhere.health()


def test_cancel_a_running_run_and_timeouts(server: Server, token: str) -> None:
    with Client(server.url, token) as sb:
        run = sb.submit(SLEEPING_SCRIPT, policy="tiny")
        for event in sb.logs(run.id):
            if event.text == "started\n":
                break
        with pytest.raises(WaitTimeout) as late:
            sb.wait(run.id, timeout=0.5)
        assert late.value.run_id == run.id
        cancelled = sb.cancel(run.id)
        assert cancelled.status is RunStatus.CANCELLED
        with pytest.raises(Conflict) as again:
            sb.cancel(run.id)
        assert again.value.code == "already-finished"


def test_logs_stream_in_order_and_end_with_the_record(server: Server, token: str) -> None:
    with Client(server.url, token) as sb:
        run = sb.submit(COUNTING_SCRIPT + "import sys\nprint('bye', file=sys.stderr)\n", policy="tiny")
        events = list(sb.logs(run.id))
        out = "".join(e.text or "" for e in events if e.event == "stdout")
        assert out == COUNTING_OUTPUT
        assert [e.text for e in events if e.event == "stderr"] == ["bye\n"]
        assert events[-1].event == "end" and events[-1].record is not None
        assert events[-1].record.status is RunStatus.SUCCEEDED
        ids = [int(e.id) for e in events[:-1] if e.id]
        assert ids == sorted(set(ids))
        # Resuming after an event replays only what follows it.
        rest = list(sb.logs(run.id, last_event_id=events[2].id))
        assert [e.text for e in rest[:-1]] == [e.text for e in events[3:-1]]


def test_logs_resume_after_the_connection_is_cut(
    server: Server, token: str, proxy: CuttingProxy
) -> None:
    with Client(server.url, token) as direct, Client(proxy.url, token) as sb:
        run = direct.submit(COUNTING_SCRIPT, policy="tiny")
        seen = []
        cut_after = None
        for event in sb.logs(run.id):
            seen.append(event)
            if cut_after is None and event.event == "stdout" and "line 3\n" in "".join(
                e.text or "" for e in seen
            ):
                cut_after = event.id
                proxy.cut()
        out = "".join(e.text or "" for e in seen if e.event == "stdout")
        assert out == COUNTING_OUTPUT  # nothing lost, nothing twice
        assert seen[-1].event == "end"
        # The second connection asked to resume after the last event seen.
        assert len(proxy.heads) >= 2, proxy.heads
        assert last_event_id(proxy.heads[0]) is None
        assert last_event_id(proxy.heads[1]) == cut_after
