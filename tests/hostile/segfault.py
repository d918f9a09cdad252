# expect: killed
# signal: SIGSEGV
# expect-gvisor-local: failed
# signal-gvisor-local: none
# exit-code-gvisor-local: 139
# (Known limit: local gVisor runs without scriptbox's init, so runsc's
# 128+N exit status is all there is to read.)
# stdout: about to crash
# A real SIGSEGV (a null pointer read through ctypes): killed, with the
# signal named SIGSEGV (the test checks the outcome's signal too).
import ctypes, sys
print("about to crash")
sys.stdout.flush()
ctypes.string_at(0)
print("ESCAPED: survived a null read")
