# expect: succeeded
# Receives a huge argument list from the test, then tries to exec itself
# with one larger than the kernel accepts.
import os, sys
print("args:", len(sys.argv) - 1, "bytes:", sum(len(a) for a in sys.argv))
try:
    os.execv(sys.executable, [sys.executable, "-c", "pass"] + ["y" * 4096] * 2000)
except OSError as e:
    print("BLOCKED: exec", e.strerror)
