# expect: succeeded
# connections: 0
# stdout: raw icmp: refused
# stdout: raw tcp: refused
# stdout: packet: refused
# Raw and packet sockets could forge traffic around the proxy: none opens.
import socket

for label, args in [
    ("raw icmp", (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)),
    ("raw tcp", (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)),
    ("packet", (socket.AF_PACKET, socket.SOCK_RAW, 0x0300)),
]:
    try:
        socket.socket(*args).close()
        print(f"ESCAPED: {label}")
    except OSError:
        print(f"{label}: refused")
