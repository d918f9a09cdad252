# expect: succeeded
# Tries to use /dev/shm and /dev/mqueue as extra disk beyond the tmp limit.
import errno, os
for place in ["/dev/shm/fill", "/dev/mqueue/fill"]:
    written = 0
    try:
        with open(place, "wb") as f:
            for _ in range(256):
                f.write(b"\0" * (1 << 20))
                written += 1
        print("ESCAPED:", place, written, "MiB")
    except OSError as e:
        print("BLOCKED:", place, "after", written, "MiB:", errno.errorcode.get(e.errno, e.errno))
