# expect: succeeded
# stdout-local: process_vm_readv EPERM
# stdout-local: ptrace EPERM
# stdout-docker: process_vm_readv EPERM
# Docker's profile allows ptrace itself (engine 20.10 here: PTRACE_TRACEME
# succeeded), so the docker side asserts no line for it.
# Reads its own memory through process_vm_readv, then asks to be traced
# by its parent (PTRACE_TRACEME, last: a traced process stops on signals).
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)


class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


src, dst = ctypes.create_string_buffer(b"secret!", 8), ctypes.create_string_buffer(8)
local, remote = iovec(ctypes.addressof(dst), 8), iovec(ctypes.addressof(src), 8)
libc.process_vm_readv.restype = ctypes.c_ssize_t
r = libc.process_vm_readv(os.getpid(), ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
e = ctypes.get_errno()
print("process_vm_readv", f"allowed ({r} bytes of itself)" if r >= 0 else errno.errorcode.get(e, str(e)))
libc.ptrace.restype = ctypes.c_long
r = libc.ptrace(ctypes.c_long(0), 0, None, None)
e = ctypes.get_errno()
print("ptrace", "allowed (PTRACE_TRACEME)" if r == 0 else errno.errorcode.get(e, str(e)))
