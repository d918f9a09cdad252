"""The origin platform's API, `from scriptbox_client.package_validator
import validator`, answered by a real server (SCRIPTBOX_URL) and by the
local binary (SCRIPTBOX_BIN, no server configured)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scriptbox_client import InvalidScript
from scriptbox_client.package_validator import PackageValidator, validator

from conftest import BIN, REPO, Server, host_python

SEED_MESSAGE = """Missing Python packages detected!

Your script requires the following packages that are not installed:
alpaca-trade-api, pandas-ta

To install these packages, run:
pip install alpaca-trade-api pandas-ta

Or ask your administrator to install them in the backend environment."""


def test_the_error_message_is_the_seeds_word_for_word() -> None:
    assert validator.create_error_message(["alpaca-trade-api", "pandas-ta"]) == SEED_MESSAGE
    assert validator.create_error_message([]) == ""
    # Specifiers are shell-quoted as scriptbox's own pip command.
    assert validator.create_error_message(["pandas>=2"]).endswith(
        "pip install 'pandas>=2'\n\nOr ask your administrator to install them in the backend environment."
    )


@pytest.fixture
def through_server(monkeypatch: pytest.MonkeyPatch, server: Server, token: str) -> None:
    monkeypatch.setenv("SCRIPTBOX_URL", server.url)
    monkeypatch.setenv("SCRIPTBOX_TOKEN", token)
    monkeypatch.delenv("SCRIPTBOX_BIN", raising=False)
    # The binary must not be what answers here.
    monkeypatch.setenv("PATH", "/nonexistent")


@pytest.fixture
def through_binary(monkeypatch: pytest.MonkeyPatch, cache_dir: str) -> None:
    monkeypatch.delenv("SCRIPTBOX_URL", raising=False)
    monkeypatch.delenv("SCRIPTBOX_TOKEN", raising=False)
    monkeypatch.setenv("SCRIPTBOX_BIN", BIN)
    monkeypatch.setenv("SCRIPTBOX_CACHE_DIR", cache_dir)
    monkeypatch.setenv("SCRIPTBOX_PYTHON", host_python())
    # Policy paths below are relative to the repository.
    monkeypatch.chdir(REPO)


def script(tmp_path: Path, text: str, name: str = "bot.py") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_seed_api_through_the_server(
    through_server: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bot = script(tmp_path, "import os, json\nimport six\n")
    monkeypatch.setenv("SCRIPTBOX_POLICY", "manual")  # six allowed, auto_install = false
    all_ok, missing, available = validator.validate_packages(bot)
    assert (all_ok, missing, available) == (False, ["six"], [])
    assert "pip install six" in validator.create_error_message(missing)
    success, message = validator.auto_install_packages(missing)
    assert not success and "auto_install = false" in message

    monkeypatch.setenv("SCRIPTBOX_POLICY", "tiny")  # six allowed, auto_install = true
    assert validator.validate_packages(bot)[0] is True
    success, message = validator.auto_install_packages(["six"])
    assert success, message
    assert message.startswith("Installed six")
    # numpy is not allowed by tiny: refused, and says why.
    success, message = validator.auto_install_packages(["numpy"])
    assert not success and "numpy" in message
    ok, missing, _ = validator.validate_packages(script(tmp_path, "import numpy\n", "np.py"))
    assert not ok

    assert validator.validate_packages(script(tmp_path, "print(1)\n", "plain.py")) == (True, [], [])
    with pytest.raises(InvalidScript):
        validator.validate_packages(script(tmp_path, "def broken(:\n", "broken.py"))
    with pytest.raises(InvalidScript):
        validator.validate_packages(str(tmp_path / "absent.py"))


def test_seed_api_through_the_binary(
    through_binary: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # No policy: judged against the host interpreter, as the seed did.
    monkeypatch.delenv("SCRIPTBOX_POLICY", raising=False)
    ok = script(tmp_path, "import json\nimport six\n")
    assert validator.validate_packages(ok) == (True, [], ["six"])
    bot = script(tmp_path, "import yfinance\n", "yf.py")
    all_ok, missing, available = validator.validate_packages(bot)
    assert (all_ok, missing, available) == (False, ["yfinance"], [])
    success, message = validator.auto_install_packages(missing)
    assert not success and "needs a policy" in message

    monkeypatch.setenv("SCRIPTBOX_POLICY", "tests/policies/manual.toml")
    six = script(tmp_path, "import six\n", "six_bot.py")
    assert validator.validate_packages(six) == (False, ["six"], [])
    success, message = validator.auto_install_packages(["six"])
    assert not success and "auto_install = false" in message

    monkeypatch.setenv("SCRIPTBOX_POLICY", "tests/policies/tiny.toml")
    assert validator.validate_packages(six)[0] is True
    success, message = validator.auto_install_packages(["six"])
    assert success and message.startswith("Installed six"), message

    with pytest.raises(InvalidScript):
        validator.validate_packages(script(tmp_path, "def broken(:\n", "broken.py"))


def test_explicit_settings_override_the_environment(
    through_binary: None, monkeypatch: pytest.MonkeyPatch, server: Server, token: str, tmp_path: Path
) -> None:
    monkeypatch.setenv("SCRIPTBOX_BIN", "/nonexistent/scriptbox")
    mine = PackageValidator(url=server.url, token=token, policy="manual")
    assert mine.validate_packages(script(tmp_path, "import six\n")) == (False, ["six"], [])
