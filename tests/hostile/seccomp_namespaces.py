# expect: succeeded
# expect-gvisor: failed
# stdout-gvisor: unshare allowed (inside this sandbox's own namespaces)
# stdout-gvisor: clone with CLONE_NEWUSER EPERM
# (gVisor's kernel answers: unshare makes a namespace inside gVisor, and
# its /proc has no /proc/self/ns/uts, so the setns step ends the script.)
# stdout-local: unshare EPERM
# stdout-local: clone with CLONE_NEWUSER EPERM
# stdout-local: setns EPERM
# stdout-local: clone3 ENOSYS
# stdout-local: fork ok
# stdout-local: subprocess ok
# stdout-docker: clone3 ENOSYS
# stdout-docker: fork ok
# stdout-docker: subprocess ok
# stdout-docker: unshare EPERM
# stdout-docker: clone with CLONE_NEWUSER EPERM
# stdout-docker: setns EPERM
# Tries to make new namespaces: unshare (os.unshare from Python 3.12,
# libc's before), the clone system call with namespace flags, setns, and
# clone3, whose flags sit behind a pointer a filter cannot read (ENOSYS
# makes glibc fall back to clone). Plain fork and subprocess still work.
import ctypes, errno, os, platform, subprocess, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NR = {"x86_64": {"clone": 56, "setns": 308}, "aarch64": {"clone": 220, "setns": 268}}[platform.machine()]
CLONE_NEWUSER, SIGCHLD, CLONE3 = 0x10000000, 17, 435


def err():
    return errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))


try:
    if hasattr(os, "unshare"):
        os.unshare(os.CLONE_NEWUSER)
    elif libc.unshare(CLONE_NEWUSER) != 0:
        raise OSError(ctypes.get_errno(), "unshare")
    print("unshare allowed (inside this sandbox's own namespaces)")
except OSError as e:
    print("unshare", errno.errorcode.get(e.errno, str(e.errno)))
sys.stdout.flush()
# The raw system call: the child returns here too, and leaves at once.
pid = libc.syscall(ctypes.c_long(NR["clone"]), ctypes.c_long(CLONE_NEWUSER | SIGCHLD),
                   ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0))
if pid == 0:
    os._exit(0)
elif pid > 0:
    os.waitpid(pid, 0)
    print("clone with CLONE_NEWUSER allowed (inside this sandbox's own namespaces)")
else:
    print("clone with CLONE_NEWUSER", err())
fd = os.open("/proc/self/ns/uts", os.O_RDONLY)
if libc.syscall(ctypes.c_long(NR["setns"]), ctypes.c_long(fd), ctypes.c_long(0)) == 0:
    print("setns allowed (to its own namespace)")
else:
    print("setns", err())
if libc.syscall(ctypes.c_long(CLONE3), None, ctypes.c_long(0)) < 0:
    print("clone3", err())
else:
    print("clone3 allowed")
sys.stdout.flush()
pid = os.fork()
if pid == 0:
    os._exit(7)
print("fork ok" if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 7 else "fork wrong")
out = subprocess.run([sys.executable, "-c", "print('child')"], capture_output=True, text=True)
print("subprocess ok" if out.stdout == "child\n" else f"subprocess wrong: {out}")
