# expect: succeeded
# Fills /tmp until the file system or the file-size limit says no.
import errno
try:
    with open("/tmp/fill", "wb") as f:
        for _ in range(1 << 14):
            f.write(b"\0" * (1 << 20))
    print("ESCAPED: wrote 16 GiB to /tmp")
except OSError as e:
    print("BLOCKED:", errno.errorcode.get(e.errno, e.errno))
