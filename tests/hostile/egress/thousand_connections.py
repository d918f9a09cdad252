# expect: succeeded
# refused: connection-cap
# stdout: opened 1000, none hung
# A thousand connections through the proxy port, as many at once as the
# sandbox's open-files limit (256) lets one process hold: the caps refuse
# what is over them, at once, and nothing hangs.
import json, selectors, socket, sys, time

port = json.loads(sys.argv[1])["https"]
request = f"CONNECT api.exchange.test:{port} HTTP/1.1\r\n\r\n".encode()
done = 0
deadline = time.monotonic() + 60
for _ in range(5):
    sel = selectors.DefaultSelector()
    batch = []
    for _ in range(200):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", 3128))
        sel.register(s, selectors.EVENT_WRITE)
        batch.append(s)
    pending = len(batch)
    while pending and time.monotonic() < deadline:
        for key, events in sel.select(timeout=1):
            s = key.fileobj
            if events & selectors.EVENT_WRITE:
                try:
                    s.send(request)
                    sel.modify(s, selectors.EVENT_READ)
                except OSError:
                    sel.unregister(s)
                    pending -= 1
                    done += 1
            else:
                try:
                    s.recv(64)
                except OSError:
                    pass
                sel.unregister(s)
                pending -= 1
                done += 1
    for s in batch:
        s.close()
    sel.close()
print(f"opened {done}, none hung" if done == 1000 else f"HUNG: {done} of 1000 answered")
