# expect: failed
# exit-code: 139
# Exits with 139 by itself, the code a SIGSEGV death shows as: the init's
# report tells it apart, so it is a plain failure with exit code 139.
import sys
print("exiting 139")
sys.exit(139)
