# expect: succeeded
# Leaves a grandchild behind in a new session, then exits at once; the
# grandchild must not outlive the run.
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        sys.stdout.close()
        time.sleep(10**6)
    os._exit(0)
print("parent exits")
