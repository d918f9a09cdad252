# expect: succeeded
# Tries to become root.
import os
for name, call in [("setuid", lambda: os.setuid(0)), ("setgid", lambda: os.setgid(0)),
                   ("setgroups", lambda: os.setgroups([0]))]:
    try:
        call()
        print("ESCAPED:", name)
    except OSError as e:
        print("BLOCKED:", name, e.strerror)
print("uid", os.getuid(), "euid", os.geteuid())
