# expect: timed-out
# Sleeps past any wall limit.
import time
time.sleep(10**6)
