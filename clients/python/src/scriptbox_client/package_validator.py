"""The origin platform's validator API, served by scriptbox.

Switching is one line::

    # from app.services.package_validator import validator
    from scriptbox_client.package_validator import validator

    all_ok, missing, available = validator.validate_packages("path/to/script.py")
    error_msg = validator.create_error_message(missing)
    success, message = validator.auto_install_packages(missing)

Where the answers come from, read at each call (so settings made after
import count):

- a server, when ``$SCRIPTBOX_URL`` is set (``$SCRIPTBOX_TOKEN`` is its
  token): scripts are judged by the server's policy ``$SCRIPTBOX_POLICY``
  (default: the server's ``default``);
- otherwise the local ``scriptbox`` binary (``$SCRIPTBOX_BIN``, else
  ``PATH``): by the policy ``$SCRIPTBOX_POLICY`` (a name in ``policies/``
  or a path) when set, else against the interpreter ``$SCRIPTBOX_PYTHON``
  (default ``python3``), as the origin platform checked its own
  environment.
"""

from __future__ import annotations

import os
import tempfile
from typing import List, Optional, Sequence, Tuple, Union

from . import _binary
from .client import Client
from .errors import InvalidScript, ScriptboxError
from .models import RunStatus, ValidationReport

__all__ = ["PackageValidator", "validator", "create_error_message"]


def _shell_word(word: str) -> str:
    # The same quoting as scriptbox's pip command.
    safe = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=+,")
    if word and all(c in safe for c in word):
        return word
    return "'" + word.replace("'", "'\\''") + "'"


def create_error_message(missing: Sequence[str]) -> str:
    """The origin platform's message for missing packages, word for word
    (empty when nothing is missing)."""
    if not missing:
        return ""
    pip = "pip install " + " ".join(_shell_word(m) for m in missing)
    return (
        "Missing Python packages detected!\n\n"
        "Your script requires the following packages that are not installed:\n"
        f"{', '.join(missing)}\n\n"
        "To install these packages, run:\n"
        f"{pip}\n\n"
        "Or ask your administrator to install them in the backend environment."
    )


def _inline_script(packages: Sequence[str]) -> str:
    """A script that only declares ``packages`` (PEP 723): validating or
    running it asks for exactly their environment."""
    deps = ", ".join('"' + p.replace("\\", "\\\\").replace('"', '\\"') + '"' for p in packages)
    return f"# /// script\n# dependencies = [{deps}]\n# ///\n"


class PackageValidator:
    """The origin platform's ``PackageValidator``: the same three methods,
    answered by a scriptbox server or the local binary.

    Arguments override the environment variables; unset, they are read at
    each call: ``url`` (``SCRIPTBOX_URL``), ``token`` (``SCRIPTBOX_TOKEN``),
    ``policy`` (``SCRIPTBOX_POLICY``), ``binary`` (``SCRIPTBOX_BIN``),
    ``python`` (``SCRIPTBOX_PYTHON``).
    """

    def __init__(
        self,
        *,
        url: Optional[str] = None,
        token: Optional[str] = None,
        policy: Optional[str] = None,
        binary: Optional[str] = None,
        python: Optional[str] = None,
        timeout: float = 600.0,
    ) -> None:
        self.url = url
        self.token = token
        self.policy = policy
        self.binary = binary
        self.python = python
        self.timeout = timeout

    # ---- where answers come from ----------------------------------------

    def _url(self) -> Optional[str]:
        return self.url or os.environ.get("SCRIPTBOX_URL") or None

    def _policy(self) -> Optional[str]:
        return self.policy or os.environ.get("SCRIPTBOX_POLICY") or None

    def _client(self, url: str) -> Client:
        return Client(url, self.token, timeout=30.0)

    def validate(self, script_path: Union[str, "os.PathLike[str]"]) -> ValidationReport:
        """The whole ``scriptbox.validate/1`` report of a script file."""
        path = os.fspath(script_path)
        url = self._url()
        if url is not None:
            try:
                with open(path, "rb") as f:
                    source = f.read().decode("utf-8")
            except (OSError, UnicodeDecodeError) as e:
                raise InvalidScript(f"{path}: cannot read it as UTF-8 text ({e})") from None
            with self._client(url) as client:
                return client.validate(source, filename=os.path.basename(path), policy=self._policy())
        binary = _binary.find(self.binary)
        python = self.python or os.environ.get("SCRIPTBOX_PYTHON") or None
        report = _binary.validate(
            binary, path, policy=self._policy(), python=python, timeout=self.timeout
        )
        return ValidationReport.from_json(report)

    # ---- the origin platform's API ---------------------------------------

    def validate_packages(self, script_path: Union[str, "os.PathLike[str]"]) -> Tuple[bool, List[str], List[str]]:
        """``(all_ok, missing, available)`` for a script file: whether every
        required package is there (or, under a policy, allowed and
        installable without asking), the distributions to install, and
        those already present. A script that cannot be judged (unreadable,
        a syntax error, bad inline metadata) raises
        :class:`~scriptbox_client.InvalidScript`."""
        report = self.validate(script_path)
        if report.verdict == "invalid":
            raise InvalidScript(
                report.error or _first_syntax_error(report) or "the script cannot be validated",
                report.raw,
            )
        return report.ok, list(report.missing), report.available

    def create_error_message(self, missing: Sequence[str]) -> str:
        """The origin platform's message for missing packages, word for word."""
        return create_error_message(missing)

    def auto_install_packages(self, missing: Sequence[str]) -> Tuple[bool, str]:
        """Installs ``missing`` the scriptbox way: builds (or finds) the
        cached environment holding them, when the policy allows each one and
        its ``auto_install`` is on. ``(success, message)``; ``(False, why)``
        otherwise. Nothing is ever installed into this Python."""
        packages = [m for m in missing if m]
        if not packages:
            return True, "Nothing to install."
        script = _inline_script(packages)
        url = self._url()
        try:
            if url is not None:
                return self._install_through_server(url, packages, script)
            return self._install_with_binary(packages, script)
        except ScriptboxError as e:
            return False, f"Could not install {', '.join(packages)}: {e}"

    def _refusal(self, report: ValidationReport, packages: Sequence[str]) -> Optional[str]:
        """Why the policy does not let ``packages`` be installed, if it does not."""
        names = ", ".join(packages)
        policy = (report.raw.get("policy") or {}).get("name") or self._policy() or "default"
        if report.forbidden:
            return f"Not installed: policy '{policy}' refuses " + "; ".join(report.forbidden)
        if report.unresolved:
            return "Not installed: no known distribution provides " + ", ".join(report.unresolved)
        if report.verdict == "invalid":
            return f"Not installed: {report.error or 'the package list is not valid'}"
        if report.auto_install is False and report.verdict != "ok":
            return (
                f"Not installed: policy '{policy}' has auto_install = false, so scriptbox "
                f"does not install {names} by itself; ask your administrator to add them "
                "to the policy's preinstalled packages."
            )
        if report.verdict != "ok":
            return f"Not installed: {names} ({report.verdict})"
        return None

    def _install_through_server(
        self, url: str, packages: Sequence[str], script: str
    ) -> Tuple[bool, str]:
        with self._client(url) as client:
            report = client.validate(script, filename="auto_install.py", policy=self._policy())
            why = self._refusal(report, packages)
            if why is not None:
                return False, why
            # The server builds environments as part of a run: an empty run
            # declaring the packages builds (or finds) theirs.
            run = client.run(
                script,
                filename="auto_install.py",
                policy=self._policy(),
                labels={"scriptbox.purpose": "auto-install"},
                timeout=self.timeout,
            )
        names = ", ".join(packages)
        if run.status is RunStatus.SUCCEEDED:
            env = run.raw.get("env") or {}
            where = f" (environment {env.get('key', '?')[:12]})" if env else ""
            return True, f"Installed {names}{where}."
        return False, f"Installing {names} failed: {run.status.value}: {run.message or run.stderr or ''}".rstrip(": ")

    def _install_with_binary(self, packages: Sequence[str], script: str) -> Tuple[bool, str]:
        policy = self._policy()
        if policy is None:
            return False, (
                "Not installed: auto-install needs a policy (set SCRIPTBOX_POLICY): scriptbox "
                "installs only what a policy allows, into its own environments."
            )
        binary = _binary.find(self.binary)
        with tempfile.TemporaryDirectory(prefix="scriptbox-install-") as tmp:
            path = os.path.join(tmp, "auto_install.py")
            with open(path, "w", encoding="utf-8") as f:
                f.write(script)
            report = ValidationReport.from_json(
                _binary.validate(binary, path, policy=policy, timeout=self.timeout)
            )
        why = self._refusal(report, packages)
        if why is not None:
            return False, why
        ready, result, error = _binary.build_env(binary, packages, policy=policy, timeout=self.timeout)
        names = ", ".join(packages)
        if ready:
            key = str(result.get("key", "?"))[:12]
            return True, f"Installed {names} (environment {key})."
        return False, f"Installing {names} failed: {error}"


def _first_syntax_error(report: ValidationReport) -> Optional[str]:
    errors = report.raw.get("syntax_errors") or []
    if errors:
        e = errors[0]
        return f"line {e.get('line')}: {e.get('message')}"
    meta = report.raw.get("metadata_error")
    if isinstance(meta, dict):
        return f"line {meta.get('line')}: {meta.get('message')}"
    return None


#: The module-level instance the origin platform imports.
validator = PackageValidator()
