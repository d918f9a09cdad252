# expect: succeeded
# refused: not-allowed
# stdout: proxy: 403
# stdout: dns: no answer
# stdout: system resolver: no answer
# A name off the list: the proxy refuses it by name, the stub gives it no
# address, and no lookup leaves the sandbox.
import json, socket, sys, urllib.error, urllib.request

opener = urllib.request.build_opener(urllib.request.ProxyHandler())
try:
    opener.open("http://evil.example.test/steal", timeout=10)
    print("ESCAPED through the proxy")
except urllib.error.HTTPError as e:
    print(f"proxy: {e.code}")
for label, name in [("dns", "evil.example.test"), ("system resolver", "example.com")]:
    try:
        socket.getaddrinfo(name, 443)
        print(f"ESCAPED: {name} resolved")
    except socket.gaierror:
        print(f"{label}: no answer")
