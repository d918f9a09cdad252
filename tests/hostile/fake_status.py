# expect: failed
# exit-code: 152
# Exits with 152, the code a SIGXCPU death shows as, without using any CPU
# time: it must be reported as a plain failure, not as cpu-limit.
import sys
sys.exit(128 + 24)
