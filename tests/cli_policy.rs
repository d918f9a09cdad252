//! `scriptbox policy check` and `policy explain` end to end, on the shipped
//! policies and on broken ones written by the tests.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

mod support;
use support::{BIN, repo, text};

fn run(args: &[&str], cwd: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("scriptbox runs")
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

#[test]
fn egress_keys_are_checked_at_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let bad = r#"[python]
version = "3.11"

[profiles.default]
memory = "512M"
cpus = 1
pids = 64
wall_time = "60s"
output = "1M"
tmp = "64M"
network = "none"
egress = ["api.example.com"]

[profiles.market]
network = "allowlist"
egress = [
    "*",
    "*.com",
    "*.co.uk",
    "1.2.3.4",
    "2130706433",
    "127.1",
    "[::1]:443",
    "https://api.example.com",
    "api.example.com/v2",
    "user@api.example.com",
    "api.example.com:0",
    "",
    "a.*.example.com",
    "API.Example.com",
    "api.example.com:443",
    "localhost",
]
egress_private = ["10.1.2.3/24", "10.1.2.3", "lan"]
egress_resolve = { "api.example.com" = "not-an-ip", "bad_name" = "127.0.0.1" }
egress_connections = 0
egress_bytes = "lots"
"#;
    let path = dir.path().join("bad.toml");
    fs::write(&path, bad).unwrap();
    let out = run(&["policy", "check", path.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let stdout = text(&out.stdout);
    let file = path.display().to_string();
    for expected in [
        format!("{file}:12:1: error: profiles.default.egress needs network = \"allowlist\""),
        format!("{file}:17:5: error: profiles.market.egress: '*' would allow every host"),
        format!(
            "{file}:18:5: error: profiles.market.egress: '*.com' would allow every host under the public suffix 'com'"
        ),
        format!(
            "{file}:19:5: error: profiles.market.egress: '*.co.uk' would allow every host under the public suffix 'co.uk'"
        ),
        format!("{file}:20:5: error: profiles.market.egress: '1.2.3.4' is an IP address"),
        format!("{file}:21:5: error: profiles.market.egress: '2130706433' is an IP address"),
        format!("{file}:22:5: error: profiles.market.egress: '127.1' is an IP address"),
        format!("{file}:23:5: error: profiles.market.egress: '[::1]:443' is an IP address"),
        format!(
            "{file}:24:5: error: profiles.market.egress: 'https://api.example.com' has a scheme"
        ),
        format!("{file}:25:5: error: profiles.market.egress: 'api.example.com/v2' has a path"),
        format!(
            "{file}:26:5: error: profiles.market.egress: 'user@api.example.com' has a user name"
        ),
        format!(
            "{file}:27:5: error: profiles.market.egress: 'api.example.com:0' has a bad port '0'"
        ),
        format!("{file}:28:5: error: profiles.market.egress: '' is empty"),
        format!(
            "{file}:29:5: error: profiles.market.egress: 'a.*.example.com' has a wildcard other than a leading '*.'"
        ),
        format!(
            "{file}:31:5: error: profiles.market.egress: 'api.example.com:443' repeats port 443 of 'API.Example.com' at line 30, column 5"
        ),
        format!(
            "{file}:32:5: error: profiles.market.egress: 'localhost' is not a valid host name: it has a single label"
        ),
        format!(
            "{file}:34:19: error: profiles.market.egress_private: '10.1.2.3/24' has host bits set (did you mean \"10.1.2.0/24\"?)"
        ),
        format!(
            "{file}:34:34: error: profiles.market.egress_private: '10.1.2.3' is not a CIDR like \"10.1.2.0/24\" (for one address write \"10.1.2.3/32\")"
        ),
        format!("{file}:34:46: error: profiles.market.egress_private: 'lan' is not a CIDR"),
        format!(
            "{file}:35:40: error: profiles.market.egress_resolve.\"api.example.com\" must be an IP address"
        ),
        format!(
            "{file}:35:53: error: profiles.market.egress_resolve: 'bad_name' is not a host name"
        ),
        format!("{file}:36:22: error: profiles.market.egress_connections must be a whole number"),
        format!("{file}:37:16: error: profiles.market.egress_bytes: expected a size"),
    ] {
        assert!(
            stdout.contains(&expected),
            "missing: {expected}\n--- got:\n{stdout}"
        );
    }
    assert_eq!(stdout.lines().count(), 23, "{stdout}");
}

#[test]
fn egress_profiles_inherit_warn_and_change_the_digest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("team.toml");
    let with_egress = format!(
        "{VALID}\n[profiles.market]\nnetwork = \"allowlist\"\negress = [\"api.exchange.test\", \"*.exchange.test:9443\"]\negress_private = [\"10.1.2.0/24\"]\negress_resolve = {{ \"api.exchange.test\" = \"127.0.0.1\", \"unused.example.com\" = \"10.1.2.3\" }}\negress_bytes = \"1M\"\n\n[profiles.market-small]\negress_connections = 4\n"
    )
    .replace("[profiles.tiny]", "[profiles.market-small]\nnetwork = \"allowlist\"\n\n[profiles.tiny]")
    .replace("[profiles.market-small]\negress_connections = 4\n", "");
    fs::write(&path, &with_egress).unwrap();
    let out = run(&["policy", "check", path.to_str().unwrap()], dir.path());
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    // Warnings: a resolve entry no rule uses, an address the proxy refuses,
    // and an allowlist profile with no entries.
    assert!(
        stdout.contains("'unused.example.com', which no egress entry of profiles.market allows"),
        "{stdout}"
    );
    assert!(
        stdout.contains("sends 'api.exchange.test' to 127.0.0.1, which the proxy refuses"),
        "{stdout}"
    );
    assert!(
        stdout.contains("profiles.market-small has network = \"allowlist\" but no egress entries"),
        "{stdout}"
    );
    let (policy, _) = scriptbox::policy::load(&path).unwrap();
    let market = policy.profiles["market"]
        .network
        .egress()
        .expect("an allowlist");
    assert_eq!(market.allow.rules.len(), 2);
    assert_eq!(market.max_bytes, 1 << 20);
    assert_eq!(market.max_connections, 256, "the default cap");
    assert_eq!(
        policy.profiles["market"].memory,
        512 << 20,
        "limits inherited"
    );
    assert!(policy.profiles["default"].network.egress().is_none());
    // The digest covers the egress keys; a policy without them keeps the
    // digest it had before they existed (its lock stays fresh).
    let (plain, _) = scriptbox::policy::load_text(&path, VALID).unwrap();
    assert_ne!(policy.digest(), plain.digest());
    let changed = with_egress.replace("egress_bytes = \"1M\"", "egress_bytes = \"2M\"");
    let (other, _) = scriptbox::policy::load_text(&path, &changed).unwrap();
    assert_ne!(policy.digest(), other.digest());
}
