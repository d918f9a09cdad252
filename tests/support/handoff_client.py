"""Speaks the relay's side of the handoff protocol to the host proxy's
socket by hand, and prints one JSON line of what happened.

    python handoff_client.py SOCKET HOST PORT CA

CONNECT with `Scriptbox-Handoff: fd`, the TLS ClientHello through the
socket, then the verdict byte and the upstream descriptor (SCM_RIGHTS);
the rest of the handshake and a kept-alive GET go over that descriptor.
Then it closes the Unix connection, as a finished relay does, and checks
that the proxy cut the descriptor it kept (a stolen copy is worth
nothing once the proxy's side is closed).
"""

import json
import socket
import ssl
import sys
import time

path, host, port, ca = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
unix = socket.socket(socket.AF_UNIX)
unix.connect(path)
unix.sendall(
    f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\nScriptbox-Handoff: fd\r\n\r\n".encode()
)
head = b""
while not head.endswith(b"\r\n\r\n"):
    byte = unix.recv(1)
    if not byte:
        break
    head += byte
result = {"status": head.split(b"\r\n", 1)[0].decode()}

incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
tls = ssl.create_default_context(cafile=ca).wrap_bio(incoming, outgoing, server_hostname=host)
try:
    tls.do_handshake()
except ssl.SSLWantReadError:
    pass
unix.sendall(outgoing.read())
verdict, fds, _, _ = socket.recv_fds(unix, 16, 1)
result["verdict"] = verdict.hex()
result["fds"] = len(fds)
if not fds:
    print(json.dumps(result))
    sys.exit(0)
upstream = socket.socket(fileno=fds[0])
upstream.settimeout(10)


def flush():
    data = outgoing.read()
    if data:
        upstream.sendall(data)


while True:
    try:
        tls.do_handshake()
        break
    except ssl.SSLWantReadError:
        flush()
        data = upstream.recv(65536)
        if not data:
            raise SystemExit("the upstream closed during the handshake")
        incoming.write(data)
flush()
tls.write(f"GET /v8/quote HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
flush()
body = b""
while b"AAPL" not in body:
    try:
        body += tls.read(65536)
    except ssl.SSLWantReadError:
        data = upstream.recv(65536)
        if not data:
            break
        incoming.write(data)
result["quote"] = b"AAPL" in body

unix.close()
time.sleep(0.5)
try:
    result["cut"] = upstream.recv(16) == b""
except OSError:
    result["cut"] = True
print(json.dumps(result))
