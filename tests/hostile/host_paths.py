# expect: succeeded
# stdout: mountinfo names no host cache path
# stdout: mountinfo names no host interpreter path
# stdout-local: mountinfo names no scriptbox binary path
# stdout-gvisor-local: mountinfo names no scriptbox binary path
# stdout: sys names no host path
# stdout: pid 1 cmdline names no host path
# Looks for the host's paths (one per line on stdin: the cache directory,
# the interpreter's prefix and the scriptbox binary) in what the sandbox
# shows about itself: its mount table, the interpreter's own paths, its
# environment and pid 1's command line. The environment's layers and the
# interpreter are mounted at neutral paths, so none should appear.
import os, sys
cache, prefix, binary = sys.stdin.read().splitlines()[:3]
mountinfo = open("/proc/self/mountinfo").read()
def check(name, text, path, what):
    # An interpreter under /usr is bound at its own path by design.
    if path.startswith("/usr/") or path == "/usr":
        print(f"{name} names no {what}")
    elif path in text:
        lines = [l for l in text.splitlines() if path in l]
        print(f"HOST PATH in {name}: {lines}")
    else:
        print(f"{name} names no {what}")
check("mountinfo", mountinfo, cache, "host cache path")
check("mountinfo", mountinfo, prefix, "host interpreter path")
check("mountinfo", mountinfo, binary, "scriptbox binary path")
own = "\n".join([sys.executable, sys.prefix, sys.base_prefix, *sys.path,
                 *os.environ.values()])
found = [p for p in (cache, prefix) if p in own and not p.startswith("/usr")]
print(f"HOST PATH in sys: {found}" if found else "sys names no host path")
cmdline = open("/proc/1/cmdline").read()
found = [p for p in (cache, prefix, binary) if p in cmdline]
print(f"HOST PATH in pid 1 cmdline: {found}" if found else "pid 1 cmdline names no host path")
