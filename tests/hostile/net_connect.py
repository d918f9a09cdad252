# expect: succeeded
# Tries to reach a server the test listens with on the host's loopback
# (port in argv[1]).
import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
    print("ESCAPED: connected")
except OSError as e:
    print("BLOCKED:", e)
