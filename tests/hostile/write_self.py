# expect: succeeded
# Tries to rewrite itself and to plant files beside itself.
import os
for path in [__file__, os.path.join(os.path.dirname(__file__), "planted.py")]:
    try:
        open(path, "a").write("# changed\n")
        print("ESCAPED:", path)
    except OSError as e:
        print("BLOCKED:", path, e.strerror)
