# expect: succeeded
# Plants symlinks to host files wherever it can, in case scriptbox later
# reads, writes or deletes through them.
import os
for place in ["/sandbox/out.txt", "/tmp/out.txt", "/tmp/stdout", "out.txt"]:
    try:
        os.symlink("/etc/passwd", place)
        print("planted:", place)
    except OSError as e:
        print("BLOCKED:", place, e.strerror)
print("cwd:", os.getcwd())
