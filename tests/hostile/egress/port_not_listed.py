# expect: succeeded
# refused: port-not-allowed
# stdout: proxy port 22: 403
# stdout: transparent port 22: refused
# An allowed name on a port the policy does not list.
import socket

with socket.create_connection(("127.0.0.1", 3128), timeout=10) as s:
    s.sendall(b"CONNECT api.exchange.test:22 HTTP/1.1\r\n\r\n")
    print(f"proxy port 22: {s.recv(4096).split()[1].decode()}")
try:
    socket.create_connection(("api.exchange.test", 22), timeout=5).close()
    print("ESCAPED: port 22")
except OSError:
    print("transparent port 22: refused")
