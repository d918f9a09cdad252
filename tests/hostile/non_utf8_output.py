# expect: succeeded
# Writes bytes that are not UTF-8 to both streams.
import sys
sys.stdout.buffer.write(b"before \xff\xfe\x80 after\n")
sys.stderr.buffer.write(b"\xc3\x28 broken\n")
