# expect: succeeded
# refused: ip-literal
# stdout: proxy 127.0.0.1: 403
# stdout: proxy [::1]: 403
# stdout: proxy 2130706433: 403
# stdout: proxy 127.1: 403
# stdout: direct 127.0.0.1: refused
# stdout: direct 2130706433: refused
# stdout: direct 127.1: refused
# stdout: direct ::1: refused
# IP literals, through the proxy and straight at the sandbox's loopback
# (where the fake exchange is not: the sandbox has its own).
import json, socket, sys

ports = json.loads(sys.argv[1])
port = ports["https"]


def connect_via_proxy(target):
    with socket.create_connection(("127.0.0.1", 3128), timeout=10) as s:
        s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        head = s.recv(4096).decode(errors="replace")
        return head.split()[1] if head else "closed"


for host in ["127.0.0.1", "[::1]", "2130706433", "127.1"]:
    print(f"proxy {host}: {connect_via_proxy(f'{host}:{port}')}")
for host in ["127.0.0.1", "2130706433", "127.1", "::1"]:
    try:
        socket.create_connection((host, port), timeout=5).close()
        print(f"ESCAPED: direct {host}")
    except OSError:
        print(f"direct {host}: refused")
