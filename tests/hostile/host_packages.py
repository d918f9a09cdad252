# expect: succeeded
# Tries to import packages installed on the host but not allowed by the
# policy (pip and uv live in the host interpreter's site-packages).
import importlib
for name in ["pip", "uv", "setuptools"]:
    try:
        importlib.import_module(name)
        print("ESCAPED: imported", name)
    except ImportError:
        print("BLOCKED:", name)
