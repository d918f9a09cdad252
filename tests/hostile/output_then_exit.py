# expect: output-limit
# expect-gvisor: succeeded
# (Under gVisor the one 80,000-byte write to the stdout pipe is cut short
# at 64 KiB, which `python3 -u` does not retry: the run keeps exactly the
# limit and is not over it. A README known limit.)
# Writes past the output limit and exits at once, racing the check.
import sys
sys.stdout.write("y" * 80_000)
