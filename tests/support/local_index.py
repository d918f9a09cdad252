#!/usr/bin/env python3
"""A package index on loopback, for offline tests of locking and building.

Usage: local_index.py DIR
Builds into DIR a PEP 503 simple index holding
  - sbxtest-pure 1.0: a pure-Python wheel (module sbxtest_pure),
  - sbxtest-sdist 1.0: a source distribution only (no wheel for any target),
serves it on 127.0.0.1 at a free port, prints "PORT <n>" and serves until
killed. Standard library only.
"""
import hashlib, http.server, io, json, os, subprocess, sys, tarfile

HERE = os.path.dirname(os.path.abspath(__file__))


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def build(root):
    files = os.path.join(root, "files")
    os.makedirs(files, exist_ok=True)
    spec = {"name": "sbxtest-pure", "version": "1.0",
            "files": {"sbxtest_pure/__init__.py": "VALUE = 42\n"},
            "top_level": ["sbxtest_pure"]}
    wheel = subprocess.check_output(
        [sys.executable, os.path.join(HERE, "build_wheel.py"), json.dumps(spec), files]).decode().strip()
    sdist = os.path.join(files, "sbxtest_sdist-1.0.tar.gz")
    with tarfile.open(sdist, "w:gz") as tar:
        for name, text in {
            "sbxtest_sdist-1.0/PKG-INFO": "Metadata-Version: 2.1\nName: sbxtest-sdist\nVersion: 1.0\n",
            "sbxtest_sdist-1.0/setup.py": "raise SystemExit('scriptbox must never run package code')\n",
        }.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    simple = os.path.join(root, "simple")
    for project, path in (("sbxtest-pure", wheel), ("sbxtest-sdist", sdist)):
        page = os.path.join(simple, project)
        os.makedirs(page, exist_ok=True)
        name = os.path.basename(path)
        with open(os.path.join(page, "index.html"), "w") as f:
            f.write(f'<!DOCTYPE html><html><body><a href="/files/{name}#sha256={sha256(path)}">{name}</a></body></html>\n')
    with open(os.path.join(simple, "index.html"), "w") as f:
        f.write('<!DOCTYPE html><html><body><a href="/simple/sbxtest-pure/">sbxtest-pure</a>'
                '<a href="/simple/sbxtest-sdist/">sbxtest-sdist</a></body></html>\n')
    return {"sbxtest-pure": sha256(wheel), "sbxtest-sdist": sha256(sdist)}


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def main():
    root = sys.argv[1]
    hashes = build(root)
    os.chdir(root)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    print(f"PORT {server.server_address[1]}", flush=True)
    print(f"HASHES {json.dumps(hashes)}", flush=True)
    server.serve_forever()


main()
