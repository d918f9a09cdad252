# expect: timed-out
# expect-gvisor: memory-limit
# (Under gVisor, RLIMIT_NPROC inside stops the forks, but each forked
# Python costs gVisor memory of its own: the memory limit comes first.)
# Forks without end; the pids limit stops the growth, the wall clock ends it.
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
