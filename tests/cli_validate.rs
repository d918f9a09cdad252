//! `scriptbox validate` end to end: the real binary, real interpreters, real
//! installs of wheels the tests build themselves (offline), and every kind of
//! bad input the stage must refuse cleanly.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

mod support;
use support::{BIN, python_command as python, write};

fn scriptbox(args: &[&str], cache: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .env("SCRIPTBOX_CACHE_DIR", cache)
        .output()
        .expect("scriptbox runs")
}

/// `scriptbox validate --python-version 3.11 ARGS...`
fn validate_311(args: &[&str], cache: &Path) -> Output {
    let mut all = vec!["validate", "--python-version", "3.11"];
    all.extend_from_slice(args);
    scriptbox(&all, cache)
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited normally, not by a signal")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("UTF-8 stdout")
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).expect("UTF-8 stderr")
}

fn json_lines(out: &Output) -> Vec<Value> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is a JSON object"))
        .collect()
}

/// Validates one script, as JSON, against `target` (e.g. `--python-version 3.11`).
fn validate_json(target: &[&str], source: &str) -> (i32, Value) {
    let dir = tempfile::tempdir().unwrap();
    let script = write(dir.path(), "bot.py", source);
    let mut args = vec!["validate", "--format", "json"];
    args.extend_from_slice(target);
    args.push(script.to_str().unwrap());
    let out = scriptbox(&args, dir.path());
    let mut lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "{}", stderr(&out));
    (code(&out), lines.remove(0))
}

/// Validates one script against a bare CPython `version` target, as JSON.
fn bare_json(version: &str, source: &str) -> (i32, Value) {
    validate_json(&["--python-version", version], source)
}

fn statuses(report: &Value) -> Vec<(String, String, String)> {
    report["imports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["module"].as_str().unwrap().to_string(),
                i["status"].as_str().unwrap().to_string(),
                i["distribution"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn seed_example_prints_the_seed_message_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let script = write(
        dir.path(),
        "custom_indicators.py",
        "# custom_indicators.py\nimport pandas_ta as ta\nfrom alpaca_trade_api import REST\nimport os\n",
    );
    let out = validate_311(&[script.to_str().unwrap()], dir.path());
    assert_eq!(code(&out), 1);
    let expected = "Missing Python packages detected!\n\nYour script requires the following packages that are not installed:\nalpaca-trade-api, pandas-ta\n\nTo install these packages, run:\npip install alpaca-trade-api pandas-ta\n\nOr ask your administrator to install them in the backend environment.\n";
    assert!(stdout(&out).ends_with(expected), "{}", stdout(&out));
}

#[test]
fn json_schema_has_every_documented_key() {
    let (code, r) = bare_json("3.11", "import os\nimport sklearn.ensemble\n");
    assert_eq!(code, 1);
    for key in [
        "schema",
        "path",
        "verdict",
        "exit_code",
        "python_version",
        "python",
        "imports",
        "dependencies",
        "requires_python",
        "missing",
        "pip_command",
        "unresolved",
        "syntax_errors",
        "metadata_error",
        "error",
    ] {
        assert!(r.get(key).is_some(), "missing key {key}");
    }
    assert_eq!(r["schema"], "scriptbox.validate/1");
    let imp = &r["imports"][1];
    for key in [
        "module",
        "top_level",
        "line",
        "kind",
        "status",
        "distribution",
        "alternatives",
        "guessed",
    ] {
        assert!(imp.get(key).is_some(), "missing import key {key}");
    }
    assert_eq!(imp["top_level"], "sklearn");
    assert_eq!(imp["distribution"], "scikit-learn");
    assert_eq!(imp["guessed"], false);
    assert_eq!(r["missing"], serde_json::json!(["scikit-learn"]));
    assert_eq!(r["pip_command"], "pip install scikit-learn");
}

#[test]
fn target_version_decides_the_standard_library() {
    let src = "import tomllib\nimport telnetlib\nimport distutils.util\n";
    let (code311, r311) = bare_json("3.11", src);
    assert_eq!(code311, 0, "{r311}");
    let (code313, r313) = bare_json("3.13", src);
    assert_eq!(code313, 1);
    let s = statuses(&r313);
    assert_eq!(s[0].1, "stdlib");
    assert_eq!(s[1].1, "removed-from-stdlib");
    assert_eq!(
        s[2],
        (
            "distutils.util".into(),
            "removed-from-stdlib".into(),
            "setuptools".into()
        )
    );
    let (_, r310) = bare_json("3.10", src);
    assert_eq!(statuses(&r310)[0].1, "missing", "tomllib is new in 3.11");
}

#[test]
fn syntax_errors_keep_the_imports_and_exit_2() {
    let (code, r) = bare_json(
        "3.11",
        "import numpy\ndef broken(:\n    pass\nimport yfinance\n",
    );
    assert_eq!(code, 2);
    let modules: Vec<String> = statuses(&r).into_iter().map(|s| s.0).collect();
    assert_eq!(modules, ["numpy", "yfinance"]);
    assert_eq!(r["syntax_errors"][0]["line"], 2);
    assert!(r["syntax_errors"][0]["column"].as_u64().unwrap() > 0);
}

#[test]
fn python_312_fstrings_parse_for_312_and_fail_for_311() {
    let src = "row = {}\nprint(f\"{row[\"close\"]}\")\n";
    assert_eq!(bare_json("3.12", src).0, 0);
    assert_eq!(bare_json("3.11", src).0, 2);
}

#[test]
fn inline_metadata_errors_exit_2_with_their_line() {
    let (code, r) = bare_json(
        "3.11",
        "# /// script\n# dependencies = [\"evil @ https://example.invalid/evil.whl\"]\n# ///\n",
    );
    assert_eq!(code, 2);
    assert_eq!(r["metadata_error"]["line"], 2);
    let (code, r) = bare_json("3.11", "# /// script\n# dependencies = [\n");
    assert_eq!(code, 2);
    assert_eq!(r["metadata_error"]["line"], 1);
}

#[test]
fn malformed_requirement_names_are_errors_not_crashes() {
    // pep508_rs panics on these unless the name is checked first.
    let (code, r) = bare_json(
        "3.11",
        "# /// script\n# dependencies = [\"a- >=1\"]\n# ///\n",
    );
    assert_eq!(code, 2);
    assert!(
        r["metadata_error"]["message"]
            .as_str()
            .unwrap()
            .contains("must start and end")
    );
}

#[test]
fn syntax_errors_are_capped_and_counted() {
    let (code, r) = bare_json("3.11", &"import os\ndef f(:\n".repeat(500));
    assert_eq!(code, 2);
    assert_eq!(r["syntax_errors"].as_array().unwrap().len(), 100);
    assert!(r["syntax_error_count"].as_u64().unwrap() >= 500);
    assert_eq!(
        r["imports"].as_array().unwrap().len(),
        500,
        "imports survive the errors"
    );
}

#[test]
fn requires_python_mismatch_fails() {
    let src = "# /// script\n# requires-python = \">=3.12\"\n# ///\nimport os\n";
    let (code, r) = bare_json("3.11", src);
    assert_eq!(code, 1);
    assert_eq!(r["requires_python"]["satisfied"], false);
    assert_eq!(bare_json("3.12", src).0, 0);
}

#[test]
fn default_interpreter_target_works() {
    let dir = tempfile::tempdir().unwrap();
    let script = write(
        dir.path(),
        "ok.py",
        "import os, json\nfrom collections import deque\n",
    );
    let out = scriptbox(
        &["validate", "--python", &python(), script.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("stdlib"));
    // The second run is answered from the interpreter-description cache.
    let out = scriptbox(
        &["validate", "--python", &python(), script.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(code(&out), 0);
}

/// A virtual environment holding wheels built by the tests, installed by pip
/// without any index.
struct TestVenv {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

fn build_wheel(spec: &Value, out: &Path) -> PathBuf {
    let helper = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/build_wheel.py");
    let o = Command::new(python())
        .arg(helper)
        .arg(spec.to_string())
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    PathBuf::from(String::from_utf8(o.stdout).unwrap().trim())
}

fn test_venv() -> &'static TestVenv {
    static VENV: OnceLock<TestVenv> = OnceLock::new();
    VENV.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("venv");
        let ok = Command::new(python())
            .args(["-m", "venv", "--without-pip"])
            .arg(&root)
            .status()
            .unwrap();
        assert!(ok.success());
        let wheels = dir.path().join("wheels");
        fs::create_dir(&wheels).unwrap();
        let specs = [
            serde_json::json!({"name": "trading-kit", "version": "1.0",
                "files": {"tkit/__init__.py": "", "tkit/signals.py": ""}}),
            serde_json::json!({"name": "acme-cloud-storage", "version": "2.1",
                "files": {"acme/cloud/storage/__init__.py": ""}, "top_level": ["acme"]}),
            serde_json::json!({"name": "acme-cloud-queue", "version": "0.3",
                "files": {"acme/cloud/queue/__init__.py": ""}, "top_level": ["acme"]}),
            serde_json::json!({"name": "fancy-lib", "version": "3.0",
                "files": {"_fancy_impl/__init__.py": "", "fancy.py": ""},
                "metadata": ["Import-Name: fancy"]}),
            serde_json::json!({"name": "PyYAML", "version": "6.0.2",
                "files": {"yaml/__init__.py": "", "_yaml/__init__.py": ""}}),
        ];
        let paths: Vec<PathBuf> = specs.iter().map(|s| build_wheel(s, &wheels)).collect();
        let out = Command::new(python())
            .args(["-m", "pip", "--python"])
            .arg(root.join("bin/python"))
            .args([
                "install",
                "--no-index",
                "--no-deps",
                "--disable-pip-version-check",
                "--quiet",
            ])
            .args(&paths)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        TestVenv { _dir: dir, root }
    })
}

fn venv_json(source: &str) -> (i32, Value) {
    validate_json(&["--python", test_venv().root.to_str().unwrap()], source)
}

#[test]
fn installed_distributions_are_read_from_metadata() {
    let (code, r) = venv_json(
        "import tkit.signals\nimport yaml\nimport fancy\nfrom acme.cloud import storage, queue\nimport acme.cloud.queue\n",
    );
    assert_eq!(code, 0, "{r}");
    let s = statuses(&r);
    assert_eq!(
        s[0],
        (
            "tkit.signals".into(),
            "installed".into(),
            "trading-kit".into()
        )
    );
    assert_eq!(s[1], ("yaml".into(), "installed".into(), "PyYAML".into()));
    assert_eq!(
        s[2],
        ("fancy".into(), "installed".into(), "fancy-lib".into())
    );
    assert_eq!(
        s[3],
        (
            "acme.cloud.storage".into(),
            "installed".into(),
            "acme-cloud-storage".into()
        )
    );
    assert_eq!(
        s[4],
        (
            "acme.cloud.queue".into(),
            "installed".into(),
            "acme-cloud-queue".into()
        )
    );
    assert_eq!(s[5].2, "acme-cloud-queue");
    let deps: Vec<&str> = r["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["installed_version"].as_str().unwrap())
        .collect();
    // Sorted case-insensitively by name: acme-cloud-queue, acme-cloud-storage, ...
    assert_eq!(deps, ["0.3", "2.1", "3.0", "6.0.2", "1.0"]);
}

#[test]
fn pep794_import_names_are_authoritative() {
    // fancy-lib ships `_fancy_impl/` but declares only `fancy` as importable:
    // the directory is still importable, but no distribution claims it.
    let (code, r) = venv_json("import _fancy_impl\nimport fancy\n");
    assert_eq!(code, 0);
    assert_eq!(
        statuses(&r)[0],
        ("_fancy_impl".into(), "installed".into(), "".into())
    );
    assert_eq!(
        statuses(&r)[1],
        ("fancy".into(), "installed".into(), "fancy-lib".into())
    );
}

#[test]
fn namespace_siblings_are_not_confused() {
    let (code, r) = venv_json("import acme.cloud.billing\n");
    assert_eq!(code, 1, "{r}");
    assert_eq!(statuses(&r)[0].1, "missing");
}

#[test]
fn declared_specifiers_meet_installed_versions() {
    let src = "# /// script\n# dependencies = [\"trading-kit>=2\", \"PyYAML>=6\"]\n# ///\nimport tkit\nimport yaml\n";
    let (code, r) = venv_json(src);
    assert_eq!(code, 1);
    assert_eq!(r["missing"], serde_json::json!(["trading-kit"]));
    assert_eq!(r["pip_command"], "pip install 'trading-kit>=2'");
    let kit = r["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["normalized"] == "trading-kit")
        .unwrap();
    assert_eq!(kit["status"], "wrong-version");
    assert_eq!(kit["installed_version"], "1.0");
}

#[test]
fn local_modules_beside_the_script() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "helpers.py", "X = 1\n");
    fs::create_dir(dir.path().join("strategies")).unwrap();
    let script = write(
        dir.path(),
        "bot.py",
        "import helpers\nfrom strategies import sma\nfrom . import sibling\n",
    );
    let out = validate_311(&["--format", "json", script.to_str().unwrap()], dir.path());
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    let r = &json_lines(&out)[0];
    assert!(statuses(r).iter().all(|s| s.1 == "local"));
    let out = validate_311(
        &["--no-sibling-modules", script.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(code(&out), 1);
}

fn assert_one_line_error(out: &Output, path: &Path, expected: &str) {
    assert_eq!(code(out), 2, "{}", stderr(out));
    let err = stderr(out);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains(&path.display().to_string()),
        "names the file: {err}"
    );
    assert!(err.contains(expected), "{err}");
    assert!(!err.contains("panicked"));
}

#[test]
fn bad_inputs_get_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: Vec<(PathBuf, &str)> = vec![
        (write(d, "nul.py", b"import os\n\0import sys\n"), "NUL byte"),
        (
            write(d, "image.py", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"),
            "NUL byte",
        ),
        (
            write(d, "bad_utf8.py", b"import os\nx = '\xff\xfe'\n"),
            "not valid UTF-8",
        ),
        (
            write(d, "bad_cookie.py", "# -*- coding: klingon -*-\nimport os\n"),
            "unknown encoding",
        ),
        (d.join("does_not_exist.py"), "cannot read file"),
        (d.to_path_buf().join("a_dir.py"), "no *.py files"),
    ];
    fs::create_dir(d.join("a_dir.py")).unwrap();
    // A FIFO where a script should be must not hang the validator.
    let fifo = d.join("fifo.py");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let out = validate_311(&[fifo.to_str().unwrap()], d);
    assert_one_line_error(&out, &fifo, "not a regular file");
    for (path, expected) in &cases {
        let out = validate_311(&[path.to_str().unwrap()], d);
        assert_one_line_error(&out, path, expected);
        assert!(stdout(&out).is_empty());
    }
}

#[test]
fn oversized_file_is_refused_without_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.py");
    let file = fs::File::create(&path).unwrap();
    file.set_len(50 * 1024 * 1024).unwrap();
    let out = validate_311(&[path.to_str().unwrap()], dir.path());
    assert_one_line_error(&out, &path, "larger than the 16777216-byte limit");
    let out = validate_311(&["--max-size", "4K", path.to_str().unwrap()], dir.path());
    assert_one_line_error(&out, &path, "4096-byte limit");
}

#[test]
fn encodings_and_line_endings() {
    let (status, r) = bare_json("3.11", "\u{feff}import os\r\n\r\nimport numpy\r\n");
    assert_eq!(status, 1);
    assert_eq!(r["imports"][1]["line"], 3);
    let dir = tempfile::tempdir().unwrap();
    let script = write(
        dir.path(),
        "latin.py",
        b"# -*- coding: latin-1 -*-\nname = '\xe9t\xe9'\nimport numpy\n",
    );
    let out = validate_311(&["--format", "json", script.to_str().unwrap()], dir.path());
    assert_eq!(code(&out), 1);
    assert_eq!(json_lines(&out)[0]["imports"][0]["line"], 3);
}

#[test]
fn empty_file_is_valid_python() {
    let (code, r) = bare_json("3.11", "");
    assert_eq!(code, 0);
    assert_eq!(r["imports"], serde_json::json!([]));
}

#[test]
fn ten_thousand_nesting_levels_do_not_overflow() {
    let n = 10_000;
    let src = format!(
        "import numpy\nx = {}1{}\ny = {}1\n",
        "(".repeat(n),
        ")".repeat(n),
        "-".repeat(n)
    );
    let (code, r) = bare_json("3.11", &src);
    assert_eq!(code, 1, "{r}");
    assert_eq!(r["missing"], serde_json::json!(["numpy"]));
    // Beyond what any Python compiles: refused, not crashed.
    let n = 200_000;
    let src = format!("x = {}1\n", "-".repeat(n));
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "deep.py", src);
    let out = validate_311(&[path.to_str().unwrap()], dir.path());
    assert_one_line_error(&out, &path, "nests more than");
}

#[test]
fn bulk_mode_writes_one_json_line_per_file_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir_all(d.join("scripts/nested")).unwrap();
    write(&d.join("scripts"), "a_ok.py", "import os\n");
    write(&d.join("scripts"), "b_missing.py", "import yfinance\n");
    write(&d.join("scripts/nested"), "c_syntax.py", "import os\nif\n");
    write(&d.join("scripts"), "notes.txt", "not python");
    std::os::unix::fs::symlink(d.join("gone.py"), d.join("scripts/d_broken_link.py")).unwrap();
    let out = validate_311(
        &[
            "--format",
            "json",
            "-j",
            "2",
            d.join("scripts").to_str().unwrap(),
        ],
        d,
    );
    assert_eq!(code(&out), 2);
    let lines = json_lines(&out);
    let paths: Vec<&str> = lines.iter().map(|l| l["path"].as_str().unwrap()).collect();
    assert_eq!(paths.len(), 4, "{paths:?}");
    assert!(paths[0].ends_with("a_ok.py") && paths[1].ends_with("b_missing.py"));
    assert!(paths[2].ends_with("d_broken_link.py") && paths[3].ends_with("c_syntax.py"));
    let verdicts: Vec<&str> = lines
        .iter()
        .map(|l| l["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(verdicts, ["ok", "missing", "invalid", "invalid"]);
    assert!(
        lines[2]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot read file")
    );
    assert_eq!(
        stderr(&out).lines().count(),
        1,
        "only the unreadable file goes to stderr"
    );
}

#[test]
fn bad_arguments_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = scriptbox(&["validate"], dir.path());
    assert_eq!(code(&out), 2);
    let out = scriptbox(&["validate", "--python-version", "2.7", "x.py"], dir.path());
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("invalid Python version '2.7'"));
    let out = scriptbox(
        &["validate", "--python", "/nonexistent/python", "x.py"],
        dir.path(),
    );
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("not found"));
    let out = scriptbox(&["validate", "--max-size", "lots", "x.py"], dir.path());
    assert_eq!(code(&out), 2);
}

#[test]
fn pkg_resources_asks_for_a_setuptools_that_still_ships_it() {
    let (code, report) = bare_json("3.11", "import pkg_resources\n");
    assert_eq!(code, 1);
    assert_eq!(report["imports"][0]["distribution"], "setuptools");
    assert_eq!(report["imports"][0]["guessed"], false);
    assert_eq!(report["dependencies"][0]["requirement"], "setuptools<82");
    assert_eq!(report["pip_command"], "pip install 'setuptools<82'");
}
