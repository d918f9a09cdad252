//! `scriptbox policy check` and `policy explain` end to end, on the shipped
//! policies and on broken ones written by the tests.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_scriptbox");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[&str], cwd: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("scriptbox runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

const VALID: &str = r#"
preinstalled = ["numpy"]

[python]
version = "3.11"

[[allow]]
name = "numpy"

[[allow]]
name = "TA-Lib"
version = ">=0.5"
system = ["libta-lib0"]

[[deny]]
name = "panda"
reason = "typosquat of pandas"

[profiles.default]
memory = "512M"
cpus = 1
pids = 64
wall_time = "60s"
output = "1M"
tmp = "64M"
network = "none"

[profiles.tiny]
memory = "64M"
"#;

#[test]
fn shipped_policies_are_clean() {
    let out = run(&["policy", "check"], &repo());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        !text(&out.stdout).contains("error:"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn every_error_is_reported_at_once_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let bad = r#"colour = "blue"
preinstalled = ["numpy", "pandas"]

[python]
version = "3.7"

[[allow]]
name = "numpy"
version = ">=2,<<3"

[[allow]]
name = "NumPy"

[[allow]]
name = "requests"

[[deny]]
name = "requests"
reason = "no"

[profiles.default]
memory = "lots"
cpus = 0
pids = 64
wall_time = "soon"
output = "1M"
tmp = "64M"
network = "host"
"#;
    let path = dir.path().join("bad.toml");
    fs::write(&path, bad).unwrap();
    let out = run(&["policy", "check", path.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let stdout = text(&out.stdout);
    let file = path.display().to_string();
    for expected in [
        format!("{file}:1:1: error: unknown key 'colour'"),
        format!("{file}:2:26: error: 'pandas' is preinstalled but not allowed"),
        format!("{file}:5:11: error: python.version '3.7' is not supported"),
        format!("{file}:9:11: error: invalid version specifier '>=2,<<3'"),
        format!("{file}:11:1: error: duplicate allow entry for 'numpy' (first at line 7)"),
        format!("{file}:17:1: error: 'requests' is both denied here and allowed at line 14"),
        format!("{file}:22:10: error: profiles.default.memory: expected a size"),
        format!("{file}:23:8: error: profiles.default.cpus must be a number of cores above 0"),
        format!("{file}:25:13: error: profiles.default.wall_time: expected a duration"),
        format!("{file}:28:11: error: profiles.default.network 'host' is not supported"),
    ] {
        assert!(
            stdout.contains(&expected),
            "missing: {expected}\n--- got:\n{stdout}"
        );
    }
    assert_eq!(stdout.lines().count(), 10, "{stdout}");
}

#[test]
fn missing_default_profile_and_invalid_toml() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    fs::write(&path, "[python]\nversion = \"3.11\"\n").unwrap();
    let out = run(&["policy", "check", path.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stdout).contains("missing [profiles.default]"));
    fs::write(&path, "[python\nversion = 3\n").unwrap();
    let out = run(&["policy", "check", path.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stdout).contains(":1:"), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("invalid TOML"));
}

#[test]
fn profiles_inherit_from_default_and_json_output() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("team.toml");
    fs::write(&path, VALID).unwrap();
    let out = run(
        &[
            "policy",
            "check",
            "--format",
            "json",
            path.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let line: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(line["schema"], "scriptbox.policy-check/1");
    assert_eq!(line["policy"], "team");
    assert_eq!(line["ok"], true);
    assert_eq!(line["digest"].as_str().unwrap().len(), 64);
    let (policy, _) = scriptbox::policy::load(&path).unwrap();
    let tiny = &policy.profiles["tiny"];
    assert_eq!(tiny.memory, 64 << 20);
    assert_eq!(tiny.pids, 64, "inherited from default");
}

#[test]
fn digest_ignores_comments_and_a_stale_lock_warns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("team.toml");
    fs::write(&path, VALID).unwrap();
    let (policy, _) = scriptbox::policy::load(&path).unwrap();
    fs::write(&path, format!("# a comment\n{VALID}")).unwrap();
    let (same, warnings) = scriptbox::policy::load(&path).unwrap();
    assert_eq!(policy.digest(), same.digest());
    assert!(warnings.is_empty());
    fs::write(
        dir.path().join("team.lock"),
        format!("# policy-digest: {}\n", policy.digest()),
    )
    .unwrap();
    assert!(
        scriptbox::policy::load(&path).unwrap().1.is_empty(),
        "fresh lock"
    );
    fs::write(
        &path,
        VALID.replace("memory = \"64M\"", "memory = \"128M\""),
    )
    .unwrap();
    let out = run(&["policy", "check", path.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(0), "a stale lock is a warning");
    assert!(
        text(&out.stdout).contains("warning: lock"),
        "{}",
        text(&out.stdout)
    );
    assert!(text(&out.stdout).contains("is stale"));
}

#[test]
fn explain_names_the_deciding_rule() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("team.toml");
    fs::write(&path, VALID).unwrap();
    let p = path.to_str().unwrap();
    let out = run(&["policy", "explain", "ta_lib", "--policy", p], dir.path());
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).contains("ta-lib: allowed (versions >=0.5)"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stdout).contains(":10:1"),
        "the [[allow]] header line"
    );
    let out = run(&["policy", "explain", "panda", "--policy", p], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("denied by"));
    assert!(text(&out.stdout).contains("typosquat of pandas"));
    let out = run(&["policy", "explain", "scipy", "--policy", p], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("[[allow]]\nname = \"scipy\""));
    let out = run(
        &["policy", "explain", "not a name", "--policy", p],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let out = run(
        &["policy", "explain", "numpy", "--policy", "nonexistent"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("policies/nonexistent.toml"));
}

#[test]
fn five_thousand_entries_check_clean() {
    let dir = tempfile::tempdir().unwrap();
    let mut policy = String::from("[python]\nversion = \"3.12\"\n\n");
    for i in 0..5000 {
        policy.push_str(&format!(
            "[[allow]]\nname = \"pkg-{i}\"\nversion = \">={i}.0\"\n\n"
        ));
    }
    policy.push_str(
        VALID
            .split("[profiles.default]")
            .nth(1)
            .map(|p| format!("[profiles.default]{p}"))
            .unwrap()
            .as_str(),
    );
    let path = dir.path().join("big.toml");
    fs::write(&path, policy).unwrap();
    let out = run(&["policy", "check", path.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let (loaded, _) = scriptbox::policy::load(&path).unwrap();
    assert_eq!(loaded.allow.len(), 5000);
}

fn validate_under(policy_text: &str, script: &str) -> (i32, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("team.toml");
    fs::write(&policy, policy_text).unwrap();
    let path = dir.path().join("bot.py");
    fs::write(&path, script).unwrap();
    let out = run(
        &[
            "validate",
            "--policy",
            policy.to_str().unwrap(),
            "--format",
            "json",
            path.to_str().unwrap(),
        ],
        dir.path(),
    );
    let report = serde_json::from_str(text(&out.stdout).trim()).expect("one JSON report");
    (out.status.code().unwrap(), report)
}

fn policy_statuses(report: &serde_json::Value) -> Vec<(String, String)> {
    report["imports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["module"].as_str().unwrap().to_string(),
                i["policy_status"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect()
}

#[test]
fn validation_under_a_policy_classifies_every_dependency() {
    let script =
        "import os\nimport numpy\nimport talib\nimport flask\nimport panda\nimport google\n";
    let (code, r) = validate_under(VALID, script);
    assert_eq!(code, 1);
    assert_eq!(r["verdict"], "forbidden");
    assert_eq!(r["policy"]["name"], "team");
    assert_eq!(r["policy"]["digest"].as_str().unwrap().len(), 64);
    let s = policy_statuses(&r);
    assert_eq!(s[0], ("os".into(), "-".into()));
    assert_eq!(s[1], ("numpy".into(), "available".into()));
    assert_eq!(s[2], ("talib".into(), "installable".into()));
    assert_eq!(s[3], ("flask".into(), "forbidden".into()));
    assert_eq!(s[4], ("panda".into(), "forbidden".into()));
    assert_eq!(s[5], ("google".into(), "unknown".into()));
    let forbidden: Vec<&str> = r["forbidden"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(
        forbidden
            .iter()
            .any(|f| f.contains("'flask' is not allowed")
                && f.contains("team.toml")
                && f.contains("[[allow]] name = \"flask\""))
    );
    assert!(
        forbidden
            .iter()
            .any(|f| f.contains("'panda' is denied") && f.contains("typosquat of pandas"))
    );
    // Installable packages produce the seed's message while auto_install is off.
    assert_eq!(r["missing"], serde_json::json!(["TA-Lib"]));
    assert_eq!(r["pip_command"], "pip install TA-Lib");
}

#[test]
fn auto_install_reports_packages_for_the_builder() {
    let policy = VALID.replace("[python]", "[install]\nauto_install = true\n\n[python]");
    let (code, r) = validate_under(&policy, "import numpy\nimport talib\n");
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["missing"], serde_json::json!([]));
    assert_eq!(r["to_install"], serde_json::json!(["TA-Lib"]));
    assert_eq!(r["policy"]["auto_install"], true);
}

#[test]
fn specifiers_meet_the_policy() {
    let script = "# /// script\n# dependencies = [\"TA-Lib<0.4\"]\n# ///\nimport talib\n";
    let (code, r) = validate_under(VALID, script);
    assert_eq!(code, 1);
    let reason = r["forbidden"][0].as_str().unwrap();
    assert!(
        reason.contains("needs ta-lib<0.4") && reason.contains("allows only ta-lib>=0.5"),
        "{reason}"
    );
    let ok = "# /// script\n# dependencies = [\"TA-Lib>=0.6\"]\n# ///\nimport talib\n";
    let (_, r) = validate_under(VALID, ok);
    assert_eq!(r["forbidden"], serde_json::json!([]));
    assert_eq!(
        r["missing_requirements"],
        serde_json::Value::Null,
        "not a schema key"
    );
    assert_eq!(r["pip_command"], "pip install 'ta-lib>=0.6'");
}

#[test]
fn a_broken_policy_refuses_validation() {
    let (code, _) = {
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("broken.toml");
        fs::write(&policy, "[python]\nversion = \"2.7\"\n").unwrap();
        let script = dir.path().join("bot.py");
        fs::write(&script, "import os\n").unwrap();
        let out = run(
            &[
                "validate",
                "--policy",
                policy.to_str().unwrap(),
                script.to_str().unwrap(),
            ],
            dir.path(),
        );
        assert!(
            text(&out.stderr).contains("broken.toml:2:11: error: python.version '2.7'"),
            "{}",
            text(&out.stderr)
        );
        (out.status.code().unwrap(), ())
    };
    assert_eq!(code, 2);
}

/// A policy over two small real packages from the index, pinned in time.
fn small_policy(allow: &str, index: Option<&str>) -> String {
    let index = index.map_or(String::new(), |i| format!("index = \"{i}\"\n"));
    format!(
        "[python]\nversion = \"3.11\"\n\n[install]\nexclude_newer = \"2025-06-01\"\n{index}\n{allow}\n{}",
        VALID
            .split("[profiles.default]")
            .nth(1)
            .map(|p| format!("[profiles.default]{p}"))
            .unwrap()
    )
}

#[test]
fn lock_pins_the_closure_with_hashes_and_lets_dependencies_in() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("small.toml");
    fs::write(
        &policy,
        small_policy("[[allow]]\nname = \"python-dateutil\"\n", None),
    )
    .unwrap();
    let p = policy.to_str().unwrap();
    let out = run(&["policy", "lock", "--policy", p], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("(2 packages"),
        "{}",
        text(&out.stdout)
    );
    let lock = fs::read_to_string(dir.path().join("small.lock")).unwrap();
    let (loaded, warnings) = scriptbox::policy::load(&policy).unwrap();
    assert!(warnings.is_empty(), "fresh lock: {warnings:?}");
    assert!(lock.contains(&format!("# policy-digest: {}", loaded.digest())));
    assert!(lock.contains("python-dateutil==2.9.0.post0"), "{lock}");
    assert!(lock.contains("six==1.17.0"), "{lock}");
    assert!(lock.contains("--hash=sha256:"));
    // six is not listed, but the lock shows python-dateutil needs it.
    let out = run(&["policy", "explain", "six", "--policy", p], dir.path());
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).contains("six: allowed as a dependency of python-dateutil"),
        "{}",
        text(&out.stdout)
    );
    // Changing the policy makes the lock stale.
    fs::write(
        &policy,
        small_policy(
            "[[allow]]\nname = \"python-dateutil\"\nversion = \">=2\"\n",
            None,
        ),
    )
    .unwrap();
    let out = run(&["policy", "check", p], dir.path());
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("is stale"));
}

#[test]
fn lock_names_the_packages_that_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("clash.toml");
    // pandas 2.2.3 needs tzdata>=2022.7.
    let allow = "[[allow]]\nname = \"pandas\"\nversion = \"==2.2.3\"\n\n[[allow]]\nname = \"tzdata\"\nversion = \"<2022.7\"\n";
    fs::write(&policy, small_policy(allow, None)).unwrap();
    let out = run(
        &["policy", "lock", "--policy", policy.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("cannot be resolved together"), "{err}");
    assert!(err.contains("(involved: pandas, tzdata)"), "{err}");
    assert!(
        !dir.path().join("clash.lock").exists(),
        "nothing half-written"
    );
}

#[test]
fn lock_reports_an_unreachable_index() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("offline.toml");
    // A closed loopback port: nothing listens on the discard port here.
    fs::write(
        &policy,
        small_policy(
            "[[allow]]\nname = \"six\"\n",
            Some("http://127.0.0.1:9/simple"),
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["policy", "lock", "--policy", policy.to_str().unwrap()])
        .current_dir(dir.path())
        .env("UV_HTTP_RETRIES", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("cannot reach the package index http://127.0.0.1:9/simple"));
    assert!(!dir.path().join("offline.lock").exists());
}

#[test]
fn shipped_locks_admit_transitive_dependencies() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("bot.py");
    fs::write(&script, "import pandas\nimport pytz\nimport requests\n").unwrap();
    let out = run(
        &[
            "validate",
            "--policy",
            "strict",
            "--format",
            "json",
            script.to_str().unwrap(),
        ],
        &repo(),
    );
    let r: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    let s = policy_statuses(&r);
    assert_eq!(s[0].1, "available");
    assert_eq!(
        s[1].1, "available",
        "pytz comes with pandas per policies/strict.lock"
    );
    assert_eq!(s[2].1, "forbidden");
    assert_eq!(out.status.code(), Some(1));
}
