"""examples/fastapi_backend.py against the real server: an upload refused
with the origin platform's message, an upload accepted, a run started on
demand, and its logs streamed as Server-Sent Events."""

from __future__ import annotations

import importlib.util
import json
from types import ModuleType
from typing import Iterator

import pytest

from conftest import REPO, Server

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402


def load_example() -> ModuleType:
    path = REPO / "clients" / "python" / "examples" / "fastapi_backend.py"
    spec = importlib.util.spec_from_file_location("fastapi_backend", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch, server: Server, token: str) -> Iterator[TestClient]:
    monkeypatch.setenv("SCRIPTBOX_URL", server.url)
    monkeypatch.setenv("SCRIPTBOX_TOKEN", token)
    monkeypatch.setenv("SCRIPTBOX_POLICY", "manual")
    with TestClient(load_example().app) as client:
        yield client


def test_upload_validate_run_and_stream(backend: TestClient) -> None:
    refused = backend.post("/scripts", files={"file": ("bot.py", b"import six\n")})
    assert refused.status_code == 422
    detail = refused.json()["detail"]
    assert detail["message"].startswith("Missing Python packages detected!")
    assert detail["pip_command"] == "pip install six"

    accepted = backend.post(
        "/scripts", files={"file": ("bot.py", b"import sys\nprint('args', sys.argv[1:])\n")}
    )
    assert accepted.status_code == 200, accepted.text
    script_id = accepted.json()["id"]

    started = backend.post(f"/scripts/{script_id}/runs", json={"args": ["AAPL"]})
    assert started.status_code == 200, started.text
    run_id = started.json()["run_id"]

    events = []
    with backend.stream("GET", f"/runs/{run_id}/logs") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line[len("event: "):]
            elif line.startswith("data: "):
                events.append((event, json.loads(line[len("data: "):])))
    assert ("stdout", {"text": "args ['AAPL']\n"}) in events
    assert events[-1] == ("end", {"status": "succeeded", "exit_code": 0})
    assert backend.get(f"/runs/{run_id}").json()["stdout"] == "args ['AAPL']\n"
    assert backend.get("/runs/nope").status_code == 404
    assert "EventSource" in backend.get("/").text
