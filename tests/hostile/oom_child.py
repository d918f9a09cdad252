# expect: succeeded
# expect-gvisor: memory-limit
# (Under gVisor, the host kernel sees one sandbox, not the child: its OOM
# kill ends gVisor as a whole, so the parent cannot cope.)
# A child runs out of memory and is killed; the script itself handles that
# and succeeds, so the run is not reported as memory-limit.
import os
pid = os.fork()
if pid == 0:
    hog = []
    while True:
        hog.append(bytearray(16 << 20))
_, status = os.waitpid(pid, 0)
print("child ended by signal", os.WTERMSIG(status) if os.WIFSIGNALED(status) else None)
