# expect: succeeded
# Tries to write into the root directory and other system places.
for path in ["/scriptbox-hostile-was-here", "/usr/scriptbox-hostile", "/etc/scriptbox-hostile"]:
    try:
        open(path, "w").write("x")
        print("ESCAPED:", path)
    except OSError as e:
        print("BLOCKED:", path, e.strerror)
