# expect: succeeded
# Prints its whole environment; the test checks nothing came from the host.
import os
for key in sorted(os.environ):
    print(f"{key}={os.environ[key]}")
