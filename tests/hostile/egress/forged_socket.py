# expect: succeeded
# refused: ip-literal
# refused: not-allowed
# refused: bad-request
# stdout: forged 127.0.0.1:22: 403
# stdout: forged evil.example.test:443: 403
# stdout: forged garbage: 400
# Straight to the host proxy's socket, around the relay, with forged
# requests: the proxy decides the same way.
import socket

PATH = "/run/scriptbox/egress/proxy.sock"
for label, request in [
    ("127.0.0.1:22", b"CONNECT 127.0.0.1:22 HTTP/1.1\r\n\r\n"),
    ("evil.example.test:443", b"CONNECT evil.example.test:443 HTTP/1.1\r\nX-Scriptbox-Allow: yes\r\n\r\n"),
    ("garbage", b"\x16\x03\x01garbage\r\n\r\n"),
]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(15)
        s.connect(PATH)
        s.sendall(request)
        head = s.recv(4096)
        print(f"forged {label}: {head.split()[1].decode() if head else 'closed'}")
