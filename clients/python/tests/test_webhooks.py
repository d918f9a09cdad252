"""Callbacks from a real server to a loopback receiver: delivery of the
final record, its signature, a retry after the receiver's 500, the
attempts recorded on the run, and refusals (private and metadata
addresses, names resolving to loopback, tenants without a secret)."""

from __future__ import annotations

import json
from typing import Iterator

import pytest

from scriptbox_client import (
    BadRequest,
    CallbackState,
    Client,
    Run,
    RunStatus,
    sign,
    verify_signature,
)

from conftest import Receiver, Server, wait_for


def settled(sb: Client, run_id: str) -> Run:
    """The run once its callback is delivered or has failed."""

    def check() -> object:
        run = sb.get(run_id)
        assert run.callback is not None
        return run if run.callback.state in (CallbackState.DELIVERED, CallbackState.FAILED) else None

    return wait_for(check, f"the callback of run {run_id} settles")  # type: ignore[no-any-return]


def test_the_final_record_is_delivered_signed(server: Server, token: str, receiver: Receiver) -> None:
    secret = server.secret("acme")
    assert secret.startswith("whsec_") and server.secret("acme") == secret  # stable
    with Client(server.url, token) as sb:
        run = sb.run("print('filled')\n", policy="tiny", callback_url=receiver.url("/hooks/run?x=1"))
        assert run.status is RunStatus.SUCCEEDED
        assert run.callback is not None and run.callback.url == receiver.url("/hooks/run?x=1")
        final = settled(sb, run.id)
    assert final.callback is not None and final.callback.state is CallbackState.DELIVERED
    [attempt] = final.callback.attempts
    assert (attempt.attempt, attempt.status_code, attempt.error) == (1, 200, None)
    assert attempt.address == f"127.0.0.1:{receiver.port}"

    [(headers, body)] = receiver.requests
    record = json.loads(body)
    assert (record["id"], record["status"], record["stdout"]) == (run.id, "succeeded", "filled\n")
    assert record["schema"] == "scriptbox.run-record/1"
    assert headers["content-type"] == "application/json"
    assert headers["x-scriptbox-event"] == "run.ended"
    assert headers["x-scriptbox-attempt"] == "1"
    assert headers["x-scriptbox-delivery"] == f"{run.id}.1"
    # The signature: HMAC-SHA256 over "timestamp.body" with the tenant's secret.
    assert verify_signature(secret, headers, body)
    assert headers["x-scriptbox-signature"] == sign(secret, headers["x-scriptbox-timestamp"], body)
    assert not verify_signature("whsec_wrong", headers, body)
    assert not verify_signature(secret, headers, body.replace(b"filled", b"filler"))
    replayed = int(headers["x-scriptbox-timestamp"]) + 3600
    assert not verify_signature(secret, headers, body, now=replayed)
    assert verify_signature(secret, headers, body, now=replayed, tolerance=None)
    assert not verify_signature(secret, {}, body)


def test_a_receivers_500_is_retried_and_attempts_are_recorded(
    server: Server, token: str, receiver: Receiver
) -> None:
    secret = server.secret("acme")
    receiver.statuses = [500]
    with Client(server.url, token) as sb:
        run = sb.run("print(1)\n", policy="tiny", callback_url=receiver.url())
        final = settled(sb, run.id)
    assert final.callback is not None and final.callback.state is CallbackState.DELIVERED
    first, second = final.callback.attempts
    assert (first.status_code, second.status_code) == (500, 200)
    assert first.error is not None and "500" in first.error
    assert len(receiver.requests) == 2
    for number, (headers, body) in enumerate(receiver.requests, start=1):
        assert headers["x-scriptbox-attempt"] == str(number)
        assert verify_signature(secret, headers, body)
        assert json.loads(body)["id"] == run.id


def test_attempts_stop_at_the_limit(server: Server, token: str, receiver: Receiver) -> None:
    server.secret("acme")
    receiver.statuses = [503, 503, 503, 503]
    with Client(server.url, token) as sb:
        run = sb.run("print(1)\n", policy="tiny", callback_url=receiver.url())
        final = settled(sb, run.id)
    assert final.callback is not None and final.callback.state is CallbackState.FAILED
    # The test server allows 3 attempts (--callback-attempts 3).
    assert [a.status_code for a in final.callback.attempts] == [503, 503, 503]
    assert len(receiver.requests) == 3


def test_runs_that_end_without_running_are_called_back_too(
    server: Server, token: str, receiver: Receiver
) -> None:
    server.secret("acme")
    with Client(server.url, token) as sb:
        rejected = sb.submit("import six\n", policy="manual", callback_url=receiver.url())
        assert rejected.status is RunStatus.REJECTED
        assert rejected.callback is not None
        assert rejected.callback.state in (CallbackState.PENDING, CallbackState.DELIVERED)
        final = settled(sb, rejected.id)
    assert final.callback is not None and final.callback.state is CallbackState.DELIVERED
    [(_, body)] = receiver.requests
    assert json.loads(body)["status"] == "rejected"


@pytest.mark.parametrize(
    "url, why",
    [
        ("http://10.0.0.1/hook", "not in an allowed range"),
        ("http://192.168.1.10:8080/hook", "not in an allowed range"),
        ("http://169.254.169.254/latest/meta-data/", "not in an allowed range"),
        ("http://127.0.0.2:9/hook", "not in an allowed range"),
        ("http://[::1]:9/hook", "not in an allowed range"),
        ("http://hooks.example.com/hook", "not allowed"),
        ("ftp://127.0.0.1/hook", "expected an http:// URL"),
        ("https://127.0.0.1/hook", "https is not supported yet"),
        ("http://user:pw@127.0.0.1/hook", "user name"),
    ],
)
def test_private_metadata_and_unlisted_callbacks_are_refused(
    server: Server, token: str, url: str, why: str
) -> None:
    server.secret("acme")
    with Client(server.url, token) as sb:
        with pytest.raises(BadRequest) as refused:
            sb.submit("print(1)\n", policy="tiny", callback_url=url)
    assert refused.value.code == "callback-refused"
    assert why in refused.value.message


def test_a_tenant_without_a_secret_cannot_ask_for_callbacks(server: Server, receiver: Receiver) -> None:
    with Client(server.url, server.token("nosecret")) as sb:
        with pytest.raises(BadRequest) as refused:
            sb.submit("print(1)\n", policy="tiny", callback_url=receiver.url())
    assert refused.value.code == "no-callback-secret"
    assert "scriptbox token secret --tenant nosecret" in refused.value.message


@pytest.fixture
def name_only_server(cache_dir: str) -> Iterator[Server]:
    """A server that allows the name `localhost` but opens no address range."""
    s = Server(cache_dir, ["--callback-allow", "localhost", "--callback-backoff", "100ms"])
    yield s
    s.stop()


def test_a_name_resolving_to_loopback_is_refused_when_delivering(
    name_only_server: Server, receiver: Receiver
) -> None:
    server = name_only_server
    server.secret("acme")
    with Client(server.url, server.token("acme")) as sb:
        url = f"http://localhost:{receiver.port}/hook"
        run = sb.run("print(1)\n", policy="tiny", callback_url=url)  # the name is allowed
        final = settled(sb, run.id)
    assert final.callback is not None and final.callback.state is CallbackState.FAILED
    [attempt] = final.callback.attempts  # refused: never retried
    assert attempt.error is not None and "loopback" in attempt.error
    assert attempt.address is None and attempt.status_code is None
    # Refused before connecting: the receiver never saw a request.
    assert receiver.requests == []
