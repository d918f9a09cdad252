# expect: succeeded
# stdout-local: mount EPERM
# stdout-local: umount2 EPERM
# stdout-local: fsopen EPERM
# stdout-docker: mount EPERM
# stdout-docker: umount2 EPERM
# Mount calls on a path that does not exist: the kernel alone answers
# ENOENT, so EPERM shows the filter answered first.
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
path = b"/nonexistent-scriptbox-hostile"
calls = {
    "mount": lambda: libc.mount(b"none", path, b"tmpfs", 0, None),
    "umount2": lambda: libc.umount2(path, 0),
    "fsopen": lambda: libc.syscall(ctypes.c_long(430), b"tmpfs", ctypes.c_long(0)),
}
for name, call in calls.items():
    r = call()
    e = ctypes.get_errno()
    print(name, "ESCAPED: allowed" if r >= 0 else errno.errorcode.get(e, str(e)))
