"""Real Python clients for the egress tests; each prints one JSON line.

    python egress_clients.py CLIENT URL [EXTRA]

CLIENT is requests, urllib, curl_cffi, aiohttp, websockets (proxy-aware
libraries, which read HTTPS_PROXY and friends from the environment, or
resolve through the stub when EGRESS_STUB is set), raw_tls (EXTRA: the
TLS server name to send), raw_http (EXTRA: the Host header to send),
raw_echo, tunnel_tls (CONNECT by hand through the proxy in EGRESS_PROXY,
EXTRA: server name) or dns (URL is a name, EXTRA a type: A or AAAA).

EGRESS_CA is the test CA's certificate. With EGRESS_STUB=host:port, every
name lookup in this process goes to the relay's DNS stub instead of the
system resolver, as /etc/resolv.conf will make it inside a sandbox; that
is the transparent path, for clients that ignore proxy settings.
"""

import asyncio
import json
import os
import random
import socket
import ssl
import struct
import sys
import urllib.parse

CA = os.environ.get("EGRESS_CA")
STUB = os.environ.get("EGRESS_STUB")


def dns_query(name, qtype=1):
    """Asks the stub; returns (rcode, [IPv4 addresses])."""
    host, port = STUB.rsplit(":", 1)
    qid = random.randrange(65536)
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    packet = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + question + struct.pack(">HH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(10)
        s.sendto(packet, (host, int(port)))
        reply = s.recv(4096)
    rid, flags, qd, an, _, _ = struct.unpack(">HHHHHH", reply[:12])
    assert rid == qid, "answer to another query"
    pos = 12
    for _ in range(qd):
        while reply[pos] != 0:
            if reply[pos] & 0xC0 == 0xC0:
                pos += 1
                break
            pos += reply[pos] + 1
        pos += 1 + 4
    addresses = []
    for _ in range(an):
        if reply[pos] & 0xC0 == 0xC0:
            pos += 2
        else:
            while reply[pos] != 0:
                pos += reply[pos] + 1
            pos += 1
        rtype, _, _, rdlen = struct.unpack(">HHIH", reply[pos : pos + 10])
        pos += 10
        if rtype == 1 and rdlen == 4:
            addresses.append(socket.inet_ntoa(reply[pos : pos + 4]))
        pos += rdlen
    return flags & 0xF, addresses


if STUB:
    _system_getaddrinfo = socket.getaddrinfo

    def _stub_getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        try:
            socket.inet_aton(host)
            return _system_getaddrinfo(host, port, family, type, proto, flags)
        except (OSError, TypeError):
            pass
        rcode, addresses = dns_query(host)
        if rcode != 0 or not addresses:
            raise socket.gaierror(socket.EAI_NONAME, f"stub answered rcode {rcode}")
        port = int(port or 0) if not isinstance(port, str) or port.isdigit() else socket.getservbyname(port)
        kinds = [type] if type else [socket.SOCK_STREAM]
        return [(socket.AF_INET, k, proto or 6, "", (a, port)) for a in addresses for k in kinds]

    socket.getaddrinfo = _stub_getaddrinfo


def tls_context():
    ctx = ssl.create_default_context(cafile=CA)
    return ctx


def read_response(sock):
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def split_url(url):
    u = urllib.parse.urlsplit(url)
    return u.hostname, u.port


def run(client, url, extra):
    if client == "requests":
        import requests

        r = requests.get(url, verify=CA, timeout=30)
        return {"status": r.status_code, "body": r.text}
    if client == "urllib":
        import urllib.request

        with urllib.request.urlopen(url, context=tls_context(), timeout=30) as r:
            return {"status": r.status, "body": r.read().decode()}
    if client == "curl_cffi":
        from curl_cffi import requests as curl_requests

        proxy = os.environ.get("HTTPS_PROXY")
        proxies = {"https": proxy, "http": proxy} if proxy else None
        r = curl_requests.get(url, verify=CA, proxies=proxies, timeout=30, impersonate="chrome")
        return {"status": r.status_code, "body": r.text}
    if client == "aiohttp":
        import aiohttp

        async def go():
            async with aiohttp.ClientSession(trust_env=True) as session:
                async with session.get(url, ssl=tls_context()) as r:
                    return {"status": r.status, "body": await r.text()}

        return asyncio.run(go())
    if client == "websockets":
        from websockets.asyncio.client import connect

        async def go():
            async with connect(url, ssl=tls_context(), open_timeout=30) as ws:
                await ws.send("BTCUSDT")
                return {"status": 101, "body": await ws.recv()}

        return asyncio.run(go())
    host, port = split_url(url)
    if client == "raw_tls":
        with socket.create_connection((host, port), timeout=30) as raw:
            with tls_context().wrap_socket(raw, server_hostname=extra or host) as s:
                s.sendall(f"GET /raw HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
                return {"status": 0, "body": read_response(s).decode(errors="replace")}
    if client == "raw_http":
        with socket.create_connection((host, port), timeout=30) as s:
            s.sendall(f"GET /raw HTTP/1.1\r\nHost: {extra or host}\r\n\r\n".encode())
            return {"status": 0, "body": read_response(s).decode(errors="replace")}
    if client == "raw_echo":
        with socket.create_connection((host, port), timeout=30) as s:
            s.sendall(b"\x01raw bytes, neither TLS nor HTTP\n")
            return {"status": 0, "body": read_response(s).decode(errors="replace")}
    if client == "tunnel_tls":
        proxy_host, proxy_port = os.environ["EGRESS_PROXY"].rsplit(":", 1)
        with socket.create_connection((proxy_host, int(proxy_port)), timeout=30) as raw:
            raw.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = raw.recv(1)
                if not chunk:
                    raise ConnectionError(f"proxy closed: {head!r}")
                head += chunk
            if not head.startswith(b"HTTP/1.1 200"):
                return {"status": int(head.split()[1]), "body": head.decode()}
            with tls_context().wrap_socket(raw, server_hostname=extra or host) as s:
                s.sendall(f"GET /tunnel HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
                return {"status": 0, "body": read_response(s).decode(errors="replace")}
    if client == "dns":
        rcode, addresses = dns_query(url, {"A": 1, "AAAA": 28}[extra or "A"])
        return {"status": rcode, "body": addresses}
    raise SystemExit(f"unknown client {client}")


def main():
    client, url = sys.argv[1], sys.argv[2]
    extra = sys.argv[3] if len(sys.argv) > 3 else None
    try:
        result = {"ok": True, **run(client, url, extra)}
    except Exception as e:  # the tests read what failed and how
        result = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
