# expect: succeeded
# Opens files until the open-files limit says no.
import os
fds = []
try:
    while True:
        fds.append(os.open("/dev/null", os.O_RDONLY))
except OSError as e:
    print("BLOCKED: after", len(fds), "files:", e.strerror)
