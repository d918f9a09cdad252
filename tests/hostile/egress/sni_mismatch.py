# expect: succeeded
# refused: sni-mismatch
# stdout: tls to another name: cut
# CONNECT to an allowed name, then a TLS hello naming another host.
import json, socket, ssl, sys

port = json.loads(sys.argv[1])["https"]
raw = socket.create_connection(("127.0.0.1", 3128), timeout=10)
raw.sendall(f"CONNECT api.exchange.test:{port} HTTP/1.1\r\n\r\n".encode())
head = b""
while b"\r\n\r\n" not in head:
    head += raw.recv(1)
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
try:
    with ctx.wrap_socket(raw, server_hostname="other.exchange.test") as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: other.exchange.test\r\n\r\n")
        print("ESCAPED" if b"AAPL" in s.recv(4096) else "tls to another name: cut")
except (OSError, ssl.SSLError):
    print("tls to another name: cut")
