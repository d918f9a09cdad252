# expect: succeeded
# refused: host-mismatch
# stdout: transparent: cut
# stdout: proxy: 403
# Plain HTTP to an allowed name with another Host header: on the
# transparent path and as an absolute-form proxy request.
import json, socket, sys

port = json.loads(sys.argv[1])["http"]
with socket.create_connection(("api.exchange.test", port), timeout=10) as s:
    s.sendall(b"GET / HTTP/1.1\r\nHost: evil.example.test\r\nConnection: close\r\n\r\n")
    data = b""
    try:
        while chunk := s.recv(4096):
            data += chunk
    except OSError:
        pass
    print("ESCAPED" if b"AAPL" in data else "transparent: cut")
with socket.create_connection(("127.0.0.1", 3128), timeout=10) as s:
    s.sendall(f"GET http://api.exchange.test:{port}/ HTTP/1.1\r\nHost: evil.example.test\r\n\r\n".encode())
    print(f"proxy: {s.recv(4096).split()[1].decode()}")
