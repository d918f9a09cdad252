# expect: succeeded
# Tries to mount a file system, directly and from a new user namespace.
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
if libc.mount(b"none", b"/tmp", b"tmpfs", 0, None) == 0:
    print("ESCAPED: mounted")
else:
    print("BLOCKED: mount", os.strerror(ctypes.get_errno()))
CLONE_NEWUSER, CLONE_NEWNS = 0x10000000, 0x00020000
if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) == 0 and libc.mount(b"none", b"/tmp", b"tmpfs", 0, None) == 0:
    print("contained: mounted only inside a private user namespace")
else:
    print("BLOCKED: unshare", os.strerror(ctypes.get_errno()))
