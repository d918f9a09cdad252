# expect: succeeded
# stdout-local: io_uring_setup EPERM
# stdout-local: io_uring_enter EPERM
# stdout-local: io_uring_register EPERM
# Docker engines before 25 allow io_uring (20.10 here: io_uring_setup
# succeeded); newer ones refuse it, so the docker side asserts no line.
# io_uring, a large and often exploited kernel interface. enter and
# register on a bad descriptor would be EBADF from the kernel itself.
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
L = ctypes.c_long
params = ctypes.create_string_buffer(120)
calls = {
    "io_uring_setup": (425, (L(1), params)),
    "io_uring_enter": (426, (L(-1), L(0), L(0), L(0), None, L(0))),
    "io_uring_register": (427, (L(-1), L(0), None, L(0))),
}
for name, (nr, args) in calls.items():
    r = libc.syscall(L(nr), *args)
    e = ctypes.get_errno()
    print(name, "allowed" if r >= 0 else errno.errorcode.get(e, str(e)))
    if name == "io_uring_setup" and r >= 0:
        os.close(r)
