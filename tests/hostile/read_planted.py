# expect: succeeded
# Tries to read a file the test planted on the host (its path is argv[1]).
import sys
try:
    print("ESCAPED:", open(sys.argv[1]).read())
except OSError as e:
    print("BLOCKED:", e.strerror)
