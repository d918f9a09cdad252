# expect: succeeded
# refused: refused-address
# stdout: rebound name: 403
# An allowed name whose answer points at loopback (127.0.0.2; the policy
# opens only 127.0.0.1/32): the proxy refuses the address it resolved.
import json, socket, sys

port = json.loads(sys.argv[1])["https"]
with socket.create_connection(("127.0.0.1", 3128), timeout=10) as s:
    s.sendall(f"CONNECT rebind.exchange.test:{port} HTTP/1.1\r\n\r\n".encode())
    print(f"rebound name: {s.recv(4096).split()[1].decode()}")
