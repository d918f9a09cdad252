# expect: succeeded
# connections: 0
# stdout: udp 203.0.113.7: unreachable
# stdout: udp 10.0.0.1: unreachable
# stdout: udp api.exchange.test: no reply
# UDP goes nowhere: no route off the sandbox, and the transparent path
# carries TCP only.
import json, socket, sys

for host in ["203.0.113.7", "10.0.0.1"]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.sendto(b"hello", (host, 53))
            print(f"ESCAPED: udp {host} sent")
        except OSError:
            print(f"udp {host}: unreachable")
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    s.settimeout(2)
    try:
        s.sendto(b"hello", ("api.exchange.test", json.loads(sys.argv[1])["https"]))
        s.recv(100)
        print("ESCAPED: udp reply")
    except OSError:
        print("udp api.exchange.test: no reply")
