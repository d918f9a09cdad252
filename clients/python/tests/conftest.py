"""A real `scriptbox serve` on loopback for the client's tests: started with
a store, cache and data directory of its own, the repository's test
policies, and callbacks allowed to 127.0.0.1 only; its tokens and tenant
secrets made with `scriptbox token`. Also a loopback callback receiver and
a TCP proxy that can cut connections."""

from __future__ import annotations

import http.server
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

REPO = Path(__file__).resolve().parents[3]
BIN = os.environ.get("SCRIPTBOX_BIN") or str(REPO / "target" / "release" / "scriptbox")


def host_python() -> str:
    """The real interpreter behind `python3` (the test policies' 3.11)."""
    command = os.environ.get("SCRIPTBOX_TEST_PYTHON", "python3")
    out = subprocess.run(
        [command, "-c", "import sys; print(sys.executable)"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def cache_dir() -> Iterator[str]:
    """One cache for every server and binary call: environments build once."""
    d = tempfile.mkdtemp(prefix="sbx-client-cache-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


class Server:
    """A running `scriptbox serve`."""

    def __init__(self, cache: str, args: List[str]) -> None:
        self.dir = tempfile.mkdtemp(prefix="sbx-client-serve-")
        self.store = os.path.join(self.dir, "service.db")
        self.env = dict(os.environ, SCRIPTBOX_CACHE_DIR=cache, SCRIPTBOX_DATA_DIR=self.dir)
        cmd = [
            BIN, "serve", "--listen", "127.0.0.1:0", "--policies", "tests/policies",
            "--python", host_python(), "--store", self.store, *args,
        ]
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=self.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self.log: List[str] = []
        found: "queue.Queue[str]" = queue.Queue()

        def read() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.log.append(line)
                if "serving on http://" in line:
                    found.put(line.split("serving on http://")[1].split()[0])

        threading.Thread(target=read, daemon=True).start()
        try:
            addr = found.get(timeout=60)
        except queue.Empty:
            self.proc.kill()
            raise RuntimeError("scriptbox serve did not start:\n" + "".join(self.log))
        self.url = f"http://{addr}"
        self.port = int(addr.rsplit(":", 1)[1])

    def _token_cmd(self, *args: str) -> str:
        out = subprocess.run(
            [BIN, "token", *args, "--store", self.store],
            capture_output=True, text=True, env=self.env,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    def token(self, tenant: str, role: str = "submit") -> str:
        """A new token for ``tenant``."""
        return self._token_cmd("create", "--tenant", tenant, "--role", role)

    def secret(self, tenant: str) -> str:
        """The tenant's callback secret (made on first use)."""
        return self._token_cmd("secret", "--tenant", tenant)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


#: Fast retries so the retry tests do not wait long; callbacks to 127.0.0.1 only.
SERVER_ARGS = [
    "--workers", "2",
    "--callback-allow", "127.0.0.1/32",
    "--callback-backoff", "200ms",
    "--callback-attempts", "3",
]


@pytest.fixture(scope="session")
def server(cache_dir: str) -> Iterator[Server]:
    s = Server(cache_dir, SERVER_ARGS)
    yield s
    s.stop()


@pytest.fixture(scope="session")
def token(server: Server) -> str:
    return server.token("acme")


@pytest.fixture(scope="session")
def admin_token(server: Server) -> str:
    return server.token("ops", "admin")


def wait_for(predicate: Any, what: str, limit: float = 120.0) -> Any:
    """Polls ``predicate`` until it returns something true (a generous
    limit only turns a hang into a failure; nothing is timed)."""
    deadline = time.monotonic() + limit
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.05)


class Receiver:
    """A loopback HTTP server recording every POST (headers, body) and
    answering with the next queued status (200 once they run out)."""

    def __init__(self) -> None:
        self.requests: List[Tuple[Dict[str, str], bytes]] = []
        self.statuses: List[int] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


class CuttingProxy:
    """A TCP proxy to the server that records each connection's request
    head and can cut every open connection at once."""

    def __init__(self, port: int) -> None:
        self.target = ("127.0.0.1", port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.heads: List[str] = []
        self.open: List[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.open += [client, upstream]
            head = bytearray()

            def pump(src: socket.socket, dst: socket.socket, record: bool) -> None:
                try:
                    while True:
                        data = src.recv(65536)
                        if not data:
                            break
                        if record and b"\r\n\r\n" not in head:
                            head.extend(data)
                            if b"\r\n\r\n" in head:
                                with self.lock:
                                    self.heads.append(head.decode("latin-1").lower())
                        dst.sendall(data)
                except OSError:
                    pass
                finally:
                    for s in (src, dst):
                        try:
                            s.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass

            threading.Thread(target=pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=pump, args=(upstream, client, False), daemon=True).start()

    def cut(self) -> None:
        """Breaks every connection open now (new ones still go through)."""
        with self.lock:
            sockets, self.open = self.open, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self.cut()
        self.listener.close()


@pytest.fixture
def proxy(server: Server) -> Iterator[CuttingProxy]:
    p = CuttingProxy(server.port)
    yield p
    p.close()


def last_event_id(head: str) -> Optional[str]:
    for line in head.split("\r\n"):
        if line.startswith("last-event-id:"):
            return line.split(":", 1)[1].strip()
    return None


#: A script printing 30 numbered lines, flushed one by one, a little apart.
COUNTING_SCRIPT = (
    "import time\n"
    "for i in range(1, 31):\n"
    "    print(f'line {i}', flush=True)\n"
    "    time.sleep(0.05)\n"
)
COUNTING_OUTPUT = "".join(f"line {i}\n" for i in range(1, 31))

#: A script that says it started, then sleeps (to cancel it, or time out).
SLEEPING_SCRIPT = "import time\nprint('started', flush=True)\ntime.sleep(25)\n"


def sqlite_value(store: str, sql: str) -> Any:
    import sqlite3

    with sqlite3.connect(store) as c:
        return c.execute(sql).fetchone()[0]


__all__ = ["json", "sys"]
