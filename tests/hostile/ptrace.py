# expect: succeeded
# Tries to ptrace-attach to every other process it can see. Whatever it
# attaches to (its own children, under Docker, whose profile allows ptrace)
# is inside the sandbox and detached again at once; pid 1, scriptbox's
# init, is out of reach on both backends (init_snoop.py).
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
PTRACE_ATTACH, PTRACE_DETACH = 16, 17
me = os.getpid()
for pid in sorted(int(p) for p in os.listdir("/proc") if p.isdigit()):
    if pid == me:
        continue
    if libc.ptrace(PTRACE_ATTACH, pid, None, None) == 0:
        os.waitpid(pid, 0x40000000)  # __WALL
        libc.ptrace(PTRACE_DETACH, pid, None, None)
        cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[0]
        print("contained: attached to", pid, cmd.decode(errors="replace"), "in this sandbox")
    else:
        print("BLOCKED:", pid, os.strerror(ctypes.get_errno()))
