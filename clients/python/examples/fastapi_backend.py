"""A FastAPI backend on scriptbox: users upload scripts, which are validated
on upload (the origin platform's message when packages are missing), run on
demand, and followed live in the browser.

Run it beside `scriptbox serve`::

    pip install ./clients/python fastapi uvicorn python-multipart
    SCRIPTBOX_URL=http://127.0.0.1:8750 SCRIPTBOX_TOKEN=sbx_... \\
        uvicorn fastapi_backend:app --app-dir clients/python/examples

then open http://127.0.0.1:8000/. Endpoints:

- ``POST /scripts`` (multipart ``file``): validates under the policy
  (``$SCRIPTBOX_POLICY``, default ``default``); 422 with the missing-packages
  message, the pip command and any forbidden package, else the script's id.
- ``POST /scripts/{id}/runs``: starts a run; its id and status.
- ``GET /runs/{id}``: the run's record.
- ``GET /runs/{id}/logs``: Server-Sent Events for the browser (``stdout``,
  ``stderr``, then ``end`` with the record), resumed by scriptbox_client if
  the backend's own connection to scriptbox drops.
- ``POST /runs/{id}/cancel``.

Scripts are kept in memory: a real backend keeps them in its database.
"""

from __future__ import annotations

import json
import os
import uuid
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Dict, List, Optional, Tuple

from fastapi import Body, FastAPI, File, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, StreamingResponse

from scriptbox_client import APIError, AsyncClient, NotFound
from scriptbox_client.package_validator import create_error_message

POLICY = os.environ.get("SCRIPTBOX_POLICY", "default")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # One client (one connection pool) for the whole backend; URL and token
    # from SCRIPTBOX_URL and SCRIPTBOX_TOKEN.
    app.state.scriptbox = AsyncClient()
    app.state.scripts = {}
    yield
    await app.state.scriptbox.aclose()


app = FastAPI(title="trading scripts", lifespan=lifespan)


def scriptbox(request: Request) -> AsyncClient:
    return request.app.state.scriptbox  # type: ignore[no-any-return]


def scripts(request: Request) -> Dict[str, Tuple[str, str]]:
    return request.app.state.scripts  # type: ignore[no-any-return]


@app.post("/scripts")
async def upload(request: Request, file: UploadFile = File(...)) -> Dict[str, Any]:
    """Validates an uploaded script; keeps it when it can run."""
    try:
        source = (await file.read()).decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPException(400, "the script must be UTF-8 text") from None
    filename = os.path.basename(file.filename or "script.py")
    try:
        report = await scriptbox(request).validate(source, filename=filename, policy=POLICY)
    except APIError as e:
        raise HTTPException(e.status_code, {"code": e.code, "message": e.message}) from None
    if not report.ok:
        raise HTTPException(
            422,
            {
                "verdict": report.verdict,
                "message": create_error_message(report.missing) or report.error,
                "pip_command": report.pip_command,
                "forbidden": report.forbidden,
                "unresolved": report.unresolved,
            },
        )
    script_id = uuid.uuid4().hex
    scripts(request)[script_id] = (filename, source)
    return {"id": script_id, "filename": filename, "to_install": report.to_install}


@app.post("/scripts/{script_id}/runs")
async def run_script(
    request: Request, script_id: str, args: Optional[List[str]] = Body(default=None, embed=True)
) -> Dict[str, Any]:
    """Starts a run of an uploaded script (it is validated again by scriptbox)."""
    try:
        filename, source = scripts(request)[script_id]
    except KeyError:
        raise HTTPException(404, f"no script {script_id}") from None
    run = await scriptbox(request).submit(
        source, filename=filename, policy=POLICY, args=args or [], labels={"script": script_id}
    )
    return {"run_id": run.id, "status": run.status.value, "message": run.message}


@app.get("/runs/{run_id}")
async def get_run(request: Request, run_id: str) -> Dict[str, Any]:
    try:
        return (await scriptbox(request).get(run_id)).raw
    except NotFound:
        raise HTTPException(404, f"no run {run_id}") from None


@app.post("/runs/{run_id}/cancel")
async def cancel_run(request: Request, run_id: str) -> Dict[str, Any]:
    try:
        return (await scriptbox(request).cancel(run_id)).raw
    except APIError as e:
        raise HTTPException(e.status_code, e.message) from None


@app.get("/runs/{run_id}/logs")
async def run_logs(request: Request, run_id: str) -> StreamingResponse:
    """The run's output for the browser, as Server-Sent Events."""
    client = scriptbox(request)
    try:
        await client.get(run_id)
    except NotFound:
        raise HTTPException(404, f"no run {run_id}") from None

    async def events() -> AsyncIterator[str]:
        async for event in client.logs(run_id, last_event_id=request.headers.get("last-event-id")):
            if event.record is not None:
                data = json.dumps({"status": event.record.status.value, "exit_code": event.record.exit_code})
            else:
                data = json.dumps({"text": event.text})
            yield f"id: {event.id or ''}\nevent: {event.event}\ndata: {data}\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


PAGE = """<!doctype html>
<meta charset="utf-8"><title>scripts</title>
<form id="up"><input type="file" name="file"><button>Upload</button></form>
<pre id="out"></pre>
<script>
const out = document.getElementById("out");
document.getElementById("up").onsubmit = async (e) => {
  e.preventDefault();
  out.textContent = "";
  const r = await fetch("/scripts", {method: "POST", body: new FormData(e.target)});
  const body = await r.json();
  if (!r.ok) { out.textContent = body.detail.message || JSON.stringify(body.detail); return; }
  const run = await (await fetch(`/scripts/${body.id}/runs`, {method: "POST"})).json();
  const logs = new EventSource(`/runs/${run.run_id}/logs`);
  for (const kind of ["stdout", "stderr"]) {
    logs.addEventListener(kind, (m) => { out.textContent += JSON.parse(m.data).text; });
  }
  logs.addEventListener("end", (m) => {
    out.textContent += "\\n[" + JSON.parse(m.data).status + "]\\n";
    logs.close();
  });
};
</script>
"""


@app.get("/", response_class=HTMLResponse)
async def index() -> str:
    return PAGE
