# expect: output-limit
# Writes past the output limit and exits at once, racing the check.
import sys
sys.stdout.write("y" * 80_000)
