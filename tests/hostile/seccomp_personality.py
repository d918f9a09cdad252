# expect: succeeded
# stdout-local: query ok
# stdout-local: PER_LINUX ok
# stdout-docker: query ok
# stdout-docker: PER_LINUX ok
# stdout-gvisor: query EINVAL
# stdout-gvisor: READ_IMPLIES_EXEC EINVAL
# stdout-local: READ_IMPLIES_EXEC EPERM
# stdout-local: ADDR_NO_RANDOMIZE EPERM
# stdout-docker: READ_IMPLIES_EXEC EPERM
# stdout-docker: ADDR_NO_RANDOMIZE EPERM
# personality: the query and PER_LINUX stay allowed; READ_IMPLIES_EXEC
# (every readable mapping executable) and ADDR_NO_RANDOMIZE are refused.
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
libc.personality.argtypes = [ctypes.c_ulong]
for name, value in [("query", 0xFFFFFFFF), ("PER_LINUX", 0), ("READ_IMPLIES_EXEC", 0x0400000),
                    ("ADDR_NO_RANDOMIZE", 0x0040000)]:
    r = libc.personality(value)
    e = ctypes.get_errno()
    print(name, "ok" if r >= 0 else errno.errorcode.get(e, str(e)))
    libc.personality(0)
