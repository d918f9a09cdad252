# expect: succeeded
# refused: unknown-protocol
# stdout: raw tcp: refused
# Bytes that are neither TLS nor HTTP carry no name the proxy can check
# against the one it dialled, so they are not carried, even to an allowed
# name on an allowed port.
import json, socket, sys

port = json.loads(sys.argv[1])["echo"]
with socket.create_connection(("echo.exchange.test", port), timeout=15) as s:
    s.sendall(b"\x01raw bytes, neither TLS nor HTTP\n")
    data = b""
    try:
        while chunk := s.recv(4096):
            data += chunk
    except OSError:
        pass
    print("ESCAPED" if b"raw bytes" in data else "raw tcp: refused")
