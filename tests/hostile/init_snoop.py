# expect: succeeded
# stdout: pid 1 is the init
# stdout: pid 1 cmdline has no host path
# stdout: pid 1 fds BLOCKED
# stdout-local: pid 1 fds unlisted
# stdout-docker: pid 1 fds unlisted
# stdout: pid 1 ptrace BLOCKED
# stdout: pid 1 signal ignored
# stdout-docker: pid 1 kill BLOCKED
# stdout: report file BLOCKED
# Looks at the sandbox's init, pid 1: its command line must show no host
# path (the command comes to it on a descriptor locally), its descriptors
# (the report channel) must be out of reach, ptrace must be refused, and a
# SIGKILL must not end it (under Docker it runs as another uid: EPERM),
# and the report file (Docker's, in a root-only directory) must not be
# writable.
# Markers are printed for the test; SCRIPTBOX_HOSTILE_MARKER never gets in.
import ctypes, errno, os, signal
cmd = open("/proc/1/cmdline", "rb").read().split(b"\0")
print("pid 1 cmdline:", cmd)
if cmd[:2] == [b"/run/scriptbox/scriptbox", b"sandbox-init"]:
    print("pid 1 is the init")
host = [w for w in cmd if w.startswith((b"/root", b"/home", b"/tmp", b"/var", b"/opt"))]
print("pid 1 cmdline has no host path" if not host else f"HOST PATH in pid 1 cmdline: {host}")
# The report channel is beyond fd 2 (0-2 are the run's own stdio, which
# the script holds too). gVisor's /proc lists another uid's descriptors, so
# only the namespace backends must refuse the listing itself.
try:
    fds = os.listdir("/proc/1/fd")
except OSError as e:
    fds = None
    print("pid 1 fds unlisted")
    print("errno:", errno.errorcode.get(e.errno))
opened = []
for fd in [f for f in (fds or []) if int(f) > 2]:
    try:
        os.open(f"/proc/1/fd/{fd}", os.O_WRONLY)
        opened.append(fd)
    except OSError:
        pass
print(f"ESCAPED: opened pid 1 fds {opened}" if opened else "pid 1 fds BLOCKED")
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.restype = ctypes.c_long
PTRACE_ATTACH, PTRACE_DETACH = 16, 17
if libc.ptrace(ctypes.c_long(PTRACE_ATTACH), 1, None, None) == 0:
    print("ESCAPED: attached to pid 1")
    libc.ptrace(ctypes.c_long(PTRACE_DETACH), 1, None, None)
else:
    print("pid 1 ptrace BLOCKED")
    print("errno:", errno.errorcode.get(ctypes.get_errno()))
try:
    os.kill(1, signal.SIGKILL)
    print("pid 1 kill sent")
except OSError as e:
    print("pid 1 kill BLOCKED")
    print("errno:", errno.errorcode.get(e.errno))
try:
    with open("/run/scriptbox/report/status", "w") as f:
        f.write("exited 0\n")
    print("ESCAPED: wrote the init's report")
except OSError as e:
    print("report file BLOCKED")
    print("errno:", errno.errorcode.get(e.errno))
import time
time.sleep(0.2)
print("pid 1 signal ignored")
