"""The package promises Python 3.9 to 3.14, and only 3.11 is on the test
machines: every module is parsed with 3.9's grammar, and scriptbox itself
checks each against a bare CPython 3.9 (syntax, and standard-library
modules 3.9 has)."""

from __future__ import annotations

import ast
import json
import subprocess
from pathlib import Path

from conftest import BIN, REPO

PACKAGE = REPO / "clients" / "python" / "src" / "scriptbox_client"
SOURCES = sorted(PACKAGE.glob("*.py")) + [REPO / "clients" / "python" / "examples" / "fastapi_backend.py"]


def test_every_module_parses_with_python_3_9_grammar() -> None:
    assert len(SOURCES) >= 9
    for path in SOURCES:
        ast.parse(path.read_text(), filename=str(path), feature_version=(3, 9))


def test_scriptbox_finds_nothing_3_9_lacks() -> None:
    out = subprocess.run(
        [BIN, "validate", "--python-version", "3.9", "--format", "json", *map(str, SOURCES)],
        capture_output=True,
        text=True,
    )
    reports = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(reports) == len(SOURCES), out.stderr
    third_party = {"httpx", "anyio", "fastapi", "scriptbox_client", "scriptbox-client"}
    for report in reports:
        assert report["syntax_errors"] == [] and report["error"] is None, report["path"]
        assert report["unresolved"] == [], report["path"]
        statuses = {i["top_level"]: i["status"] for i in report["imports"]}
        assert "removed-from-stdlib" not in statuses.values(), report["path"]
        assert set(report["missing"]) <= third_party, (report["path"], report["missing"])
