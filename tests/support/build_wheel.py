#!/usr/bin/env python3
"""Build a real, installable wheel from a JSON spec, for offline tests.

Usage: build_wheel.py SPEC_JSON OUT_DIR
SPEC: {"name": "trading-kit", "version": "1.0", "files": {"tkit/__init__.py": "..."},
       "metadata": ["Import-Name: tkit"], "top_level": ["tkit"]}
Prints the wheel's path. Standard library only.
"""
import base64, hashlib, json, os, sys, zipfile


def record_hash(data):
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def main():
    spec = json.loads(sys.argv[1])
    out = sys.argv[2]
    name, version = spec["name"], spec["version"]
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    files = {path: text.encode() for path, text in spec.get("files", {}).items()}
    meta = ["Metadata-Version: 2.4", f"Name: {name}", f"Version: {version}"]
    meta += spec.get("metadata", [])
    files[f"{info}/METADATA"] = ("\n".join(meta) + "\n\nLong description.\n").encode()
    files[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: scriptbox-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    if "top_level" in spec:
        files[f"{info}/top_level.txt"] = ("\n".join(spec["top_level"]) + "\n").encode()
    rows = [f"{p},{record_hash(d)},{len(d)}" for p, d in files.items()]
    rows.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(rows) + "\n").encode()
    path = os.path.join(out, f"{dist}-{version}-py3-none-any.whl")
    with zipfile.ZipFile(path, "w") as zf:
        for p, d in files.items():
            zf.writestr(p, d)
    print(path)


main()
