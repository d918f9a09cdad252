# expect: succeeded
# Tries to change the environment other scripts share.
import os, sys
for entry in sys.path:
    if not entry or not os.path.isdir(entry) or "site-packages" not in entry and "dist-packages" not in entry:
        continue
    try:
        open(os.path.join(entry, "evil.pth"), "w").write("import os\n")
        print("ESCAPED:", entry)
    except OSError as e:
        print("BLOCKED:", entry, e.strerror)
