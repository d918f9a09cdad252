# expect: succeeded
# Tries to open raw and packet sockets.
import socket
for family, kind, proto in [(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
                            (socket.AF_PACKET, socket.SOCK_RAW, 0)]:
    try:
        socket.socket(family, kind, proto)
        print("ESCAPED:", family)
    except OSError as e:
        print("BLOCKED:", family, e.strerror)
