# expect: killed
# signal: SIGSEGV
# stdout: about to crash
# A real SIGSEGV (a null pointer read through ctypes): killed, with the
# signal named SIGSEGV (the test checks the outcome's signal too).
import ctypes, sys
print("about to crash")
sys.stdout.flush()
ctypes.string_at(0)
print("ESCAPED: survived a null read")
