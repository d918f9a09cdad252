# expect: succeeded
# Tries a name lookup (a reserved name: nothing could answer it anyway).
import socket
try:
    print("ESCAPED:", socket.getaddrinfo("scriptbox-hostile.invalid", 80))
except OSError as e:
    print("BLOCKED:", e)
try:
    print("interfaces:", sorted(n for _, n in socket.if_nameindex()))
except OSError as e:
    print("interfaces:", e)
