# expect: succeeded
# stdout-local: keyctl EPERM
# stdout-local: add_key EPERM
# stdout-local: request_key EPERM
# stdout-docker: keyctl EPERM
# stdout-docker: add_key EPERM
# stdout-docker: request_key EPERM
# Tries the kernel keyrings, which every process of a uid shares.
import ctypes, errno, platform
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NR = {"x86_64": {"add_key": 248, "request_key": 249, "keyctl": 250},
      "aarch64": {"add_key": 217, "request_key": 218, "keyctl": 219}}[platform.machine()]
KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, KEY_SPEC_PROCESS_KEYRING = 0, -3, -2
L = ctypes.c_long
calls = {
    "keyctl": (L(KEYCTL_GET_KEYRING_ID), L(KEY_SPEC_SESSION_KEYRING), L(1)),
    "add_key": (b"user", b"scriptbox-hostile", b"x", L(1), L(KEY_SPEC_PROCESS_KEYRING)),
    "request_key": (b"user", b"scriptbox-hostile", None, L(0)),
}
for name, args in calls.items():
    r = libc.syscall(L(NR[name]), *args)
    e = ctypes.get_errno()
    print(name, "allowed" if r >= 0 else errno.errorcode.get(e, str(e)))
