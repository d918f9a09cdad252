# expect: timed-out
# Forks without end; the pids limit stops the growth, the wall clock ends it.
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
