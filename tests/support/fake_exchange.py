"""A fake exchange on loopback for the egress tests.

    python fake_exchange.py CERT KEY

Listens on 127.0.0.1 (free ports) with: an HTTPS API, the same API over
plain HTTP, a raw TCP echo service, and a TLS websocket that echoes each
message. Prints one JSON line with the ports, then serves until its stdin closes
(the test process holds the other end, so the exchange ends with it).
`GET /big/N` answers N bytes;
every other HTTP answer is JSON naming the Host header it got, so the tests can
see which name reached it. Needs the `websockets` package.
"""

import asyncio
import json
import os
import socket
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Api(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers go out in several writes: without this, Nagle's algorithm and
    # the client's delayed ACK add 40 ms to every kept-alive request.
    disable_nagle_algorithm = True

    def do_GET(self):
        if self.path.startswith("/big/"):
            size = int(self.path[5:])
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            chunk = b"x" * 65536
            while size > 0:
                self.wfile.write(chunk[: min(size, len(chunk))])
                size -= len(chunk)
            return
        body = json.dumps(
            {"symbol": "AAPL", "price": 187.25, "path": self.path, "host": self.headers.get("Host")}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def serve_http(tls):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    server.daemon_threads = True
    if tls:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


def serve_echo():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)

    def one(conn):
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def loop():
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=one, args=(conn,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return listener.getsockname()[1]


async def main(cert, key):
    import websockets.asyncio.server as ws_server

    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    ports = {"https": serve_http(tls), "http": serve_http(None), "echo": serve_echo()}

    async def echo(ws):
        async for message in ws:
            await ws.send(f"echo:{message}")

    async with ws_server.serve(echo, "127.0.0.1", 0, ssl=tls) as server:
        ports["wss"] = server.sockets[0].getsockname()[1]
        print(json.dumps(ports), flush=True)
        await asyncio.Future()


def exit_with_parent():
    sys.stdin.read()
    os._exit(0)


if __name__ == "__main__":
    threading.Thread(target=exit_with_parent, daemon=True).start()
    asyncio.run(main(sys.argv[1], sys.argv[2]))
