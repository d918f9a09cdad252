//! The audit log, written by the real binary: each decision kind with its
//! fields (validate, env build with real uv, run in the local sandbox),
//! whole lines from 8 processes at once, rotation under concurrent writers,
//! a log that cannot be written, and `scriptbox stats` over what was
//! written.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

mod support;
use support::{BIN, python, repo};

/// A place for one test: its log, its scriptbox cache, its scripts.
struct Place {
    dir: tempfile::TempDir,
}

impl Place {
    fn new() -> Place {
        Place {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("data").join("audit.jsonl")
    }

    fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// The binary with this place's cache and data directory (the log is
    /// found there by default).
    fn scriptbox(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .current_dir(repo())
            .env("SCRIPTBOX_CACHE_DIR", self.cache())
            .env("SCRIPTBOX_DATA_DIR", self.dir.path().join("data"))
            .env_remove("SCRIPTBOX_AUDIT_LOG")
            .env_remove("SCRIPTBOX_AUDIT_MAX_SIZE")
            .env_remove("SCRIPTBOX_AUDIT_KEEP");
        cmd
    }

    fn script(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join("scripts").join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, text).unwrap();
        path
    }

    /// Every line of the log and its rotated files, parsed.
    fn records(&self) -> Vec<serde_json::Value> {
        read_all(&self.log())
    }
}

/// The lines of the log's files, oldest file first; every line must parse.
fn read_all(log: &Path) -> Vec<serde_json::Value> {
    let mut files: Vec<(u32, PathBuf)> = Vec::new();
    let name = log.file_name().unwrap().to_string_lossy().into_owned();
    for entry in fs::read_dir(log.parent().unwrap()).unwrap().flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        if file == name {
            files.push((0, entry.path()));
        } else if let Some(n) = file
            .strip_prefix(&format!("{name}."))
            .and_then(|n| n.parse().ok())
        {
            files.push((n, entry.path()));
        }
    }
    files.sort_by_key(|f| std::cmp::Reverse(f.0));
    let mut records = Vec::new();
    for (_, path) in files {
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{path:?} ends mid-line"
        );
        for line in text.lines() {
            records.push(
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("{path:?}: unparseable line ({e}): {line}")),
            );
        }
    }
    records
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const KEYS: [&str; 13] = [
    "schema",
    "time",
    "event",
    "origin",
    "script_sha256",
    "policy",
    "policy_digest",
    "decision",
    "package",
    "version",
    "reason",
    "status",
    "env_key",
];

/// Every key present, the schema and a UTC RFC 3339 time.
fn assert_well_formed(r: &serde_json::Value) {
    let keys: BTreeSet<&str> = r.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    assert_eq!(keys, KEYS.into_iter().collect(), "{r}");
    assert_eq!(r["schema"], "scriptbox.audit/1");
    let time = r["time"].as_str().unwrap();
    assert!(time.ends_with('Z'), "{time}");
    humantime::parse_rfc3339(time).unwrap();
}

fn find<'a>(
    records: &'a [serde_json::Value],
    decision: &str,
    package: &str,
) -> &'a serde_json::Value {
    records
        .iter()
        .find(|r| r["decision"] == decision && r["package"] == package)
        .unwrap_or_else(|| panic!("no {decision} {package} in {records:#?}"))
}

/// The policy's digest as `policy check` reports it.
fn digest(place: &Place, policy: &str) -> String {
    let out = place
        .scriptbox(&["policy", "check", "--format", "json", policy])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["digest"].as_str().unwrap().to_string()
}

#[test]
fn validate_records_installable_forbidden_and_unknown() {
    let place = Place::new();
    let script = place.script(
        "bot.py",
        "# /// script\n# dependencies = [\"python-dateutil>=2.8\"]\n# ///\nimport six\nimport numpy\nimport AlgorithmImports\nimport dateutil\nimport os\n",
    );
    let out = place
        .scriptbox(&[
            "validate",
            "--policy",
            "tests/policies/tiny.toml",
            script.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    let records = place.records();
    assert_eq!(records.len(), 4, "{records:#?}");
    let digest = digest(&place, "tests/policies/tiny.toml");
    for r in &records {
        assert_well_formed(r);
        assert_eq!(r["event"], "decision");
        assert_eq!(r["origin"], "validate");
        assert_eq!(r["script_sha256"], sha256(&script));
        assert_eq!(r["policy"], "tiny");
        assert_eq!(r["policy_digest"], digest.as_str());
        assert!(!r["reason"].as_str().unwrap().is_empty());
        assert_eq!(r["status"], serde_json::Value::Null);
        assert_eq!(r["env_key"], serde_json::Value::Null);
    }
    let six = find(&records, "installable", "six");
    assert_eq!(six["version"], serde_json::Value::Null);
    assert!(
        six["reason"].as_str().unwrap().contains("tiny.toml:"),
        "{six}"
    );
    let dateutil = find(&records, "installable", "python-dateutil");
    assert_eq!(dateutil["version"], ">=2.8");
    let numpy = find(&records, "forbidden", "numpy");
    assert!(
        numpy["reason"].as_str().unwrap().contains("is not allowed"),
        "{numpy}"
    );
    let unknown = find(&records, "unknown", "AlgorithmImports");
    assert!(
        unknown["reason"]
            .as_str()
            .unwrap()
            .contains("no known distribution provides it"),
        "{unknown}"
    );

    // Preinstalled packages (available) are not install decisions; and a
    // validation without a policy decides nothing.
    let out = place
        .scriptbox(&["validate", "--policy", "strict", script.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let records = place.records();
    let strict: Vec<_> = records.iter().filter(|r| r["policy"] == "strict").collect();
    assert!(
        !strict.iter().any(|r| r["package"] == "numpy"),
        "{strict:#?}"
    );
    assert!(strict.iter().any(|r| r["package"] == "six"), "{strict:#?}");
    let before = records.len();
    let out = place
        .scriptbox(&[
            "validate",
            "--python-version",
            "3.11",
            script.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(place.records().len(), before);
}

#[test]
fn env_build_records_what_it_installed_and_nothing_for_a_cache_hit() {
    let place = Place::new();
    let script = place.script("needs_six.py", "import six\nprint(six.PY3)\n");
    let build = |args: &[&str]| {
        let mut full = vec!["env", "build", "--format", "json", "--python"];
        let py = python();
        full.push(&py);
        full.extend_from_slice(&["--policy", "tests/policies/tiny.toml"]);
        full.extend_from_slice(args);
        let out = place.scriptbox(&full).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let env = build(&[script.to_str().unwrap()]);
    assert_eq!(env["cache_hit"], false);
    let records = place.records();
    for r in &records {
        assert_well_formed(r);
        assert_eq!(r["origin"], "env-build");
        assert_eq!(r["script_sha256"], sha256(&script));
        assert_eq!(r["policy"], "tiny");
    }
    // The validation's decision, then the build's.
    assert_eq!(records[0]["decision"], "installable");
    let six = find(&records, "installed", "six");
    assert_eq!(
        six["version"], "1.17.0",
        "pinned by tests/policies/tiny.lock"
    );
    assert_eq!(six["env_key"], env["key"]);
    assert_eq!(six["reason"], serde_json::Value::Null);
    assert_eq!(
        records
            .iter()
            .filter(|r| r["decision"] == "installed")
            .count(),
        1,
        "tiny's base layer is empty: {records:#?}"
    );
    // A cache hit installs nothing, and --packages names no script.
    let count = records.len();
    let again = build(&["--packages", "six"]);
    assert_eq!(again["cache_hit"], true);
    assert_eq!(again["key"], env["key"]);
    assert_eq!(place.records().len(), count);
}

#[test]
fn a_failed_build_records_install_failed_with_the_reason() {
    let place = Place::new();
    // An index on a loopback port nothing listens on: bind one, then close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let policies = place.dir.path().join("policies");
    fs::create_dir_all(&policies).unwrap();
    let policy = policies.join("offline.toml");
    fs::write(
        &policy,
        format!(
            "[python]\nversion = \"3.11\"\n\n[install]\nindex = \"http://127.0.0.1:{port}/simple\"\n\n[[allow]]\nname = \"sbxtest-pure\"\n\n[profiles.default]\nmemory = \"256M\"\ncpus = 1\npids = 64\nwall_time = \"30s\"\noutput = \"1M\"\ntmp = \"16M\"\nnetwork = \"none\"\n"
        ),
    )
    .unwrap();
    fs::write(
        policies.join("offline.lock"),
        format!(
            "sbxtest-pure==1.0 \\\n    --hash=sha256:{}\n    # via -r allowed.in\n",
            "1".repeat(64)
        ),
    )
    .unwrap();
    let out = place
        .scriptbox(&[
            "env",
            "build",
            "--python",
            &python(),
            "--policy",
            policy.to_str().unwrap(),
            "--packages",
            "sbxtest-pure",
        ])
        .env("UV_CACHE_DIR", place.dir.path().join("uv-cache"))
        .env("UV_HTTP_RETRIES", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let records = place.records();
    assert_eq!(records.len(), 1, "{records:#?}");
    let failed = find(&records, "install-failed", "sbxtest-pure");
    assert_well_formed(failed);
    assert_eq!(failed["version"], "1.0");
    assert_eq!(failed["policy"], "offline");
    assert_eq!(failed["script_sha256"], serde_json::Value::Null);
    assert_eq!(failed["env_key"], serde_json::Value::Null);
    let reason = failed["reason"].as_str().unwrap();
    assert!(reason.contains(&format!("127.0.0.1:{port}")), "{reason}");
}

#[test]
fn run_records_its_decisions_and_one_line_with_its_status() {
    let place = Place::new();
    let script = place.script("hello_six.py", "import six\nprint('hello', six.PY3)\n");
    let run = |script: &Path| {
        let out = place
            .scriptbox(&[
                "run",
                "--python",
                &python(),
                "--policy",
                "tests/policies/tiny.toml",
                "--format",
                "json",
                script.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", stderr(&out)))
    };
    let outcome = run(&script);
    assert_eq!(outcome["status"], "succeeded", "{outcome}");
    let records = place.records();
    for r in &records {
        assert_well_formed(r);
        assert_eq!(r["origin"], "run");
        assert_eq!(r["script_sha256"], sha256(&script));
        assert_eq!(r["policy"], "tiny");
    }
    find(&records, "installable", "six");
    find(&records, "installed", "six");
    let runs: Vec<_> = records.iter().filter(|r| r["event"] == "run").collect();
    assert_eq!(runs.len(), 1, "{records:#?}");
    assert_eq!(runs[0]["status"], "succeeded");
    assert_eq!(runs[0]["env_key"], outcome["env"]["key"]);
    assert_eq!(runs[0]["decision"], serde_json::Value::Null);
    assert_eq!(
        records.last().unwrap()["event"],
        "run",
        "the run's line is last"
    );

    // Refused by the policy: its decision and a rejected run, no environment.
    let refused = place.script("numpy.py", "import numpy\n");
    let outcome = run(&refused);
    assert_eq!(outcome["status"], "rejected", "{outcome}");
    let records = place.records();
    let last = records.last().unwrap();
    assert_well_formed(last);
    assert_eq!(last["event"], "run");
    assert_eq!(last["status"], "rejected");
    assert_eq!(last["env_key"], serde_json::Value::Null);
    assert_eq!(last["script_sha256"], sha256(&refused));
    assert!(last["reason"].as_str().unwrap().contains("numpy"), "{last}");
    let forbidden = find(&records, "forbidden", "numpy");
    assert_eq!(forbidden["script_sha256"], sha256(&refused));

    // A run that never started (no such script) is recorded too.
    let outcome = run(&place.dir.path().join("absent.py"));
    assert_eq!(outcome["status"], "error", "{outcome}");
    let records = place.records();
    let last = records.last().unwrap();
    assert_well_formed(last);
    assert_eq!(last["status"], "error");
    assert_eq!(last["policy"], "tiny");
    assert_eq!(last["script_sha256"], serde_json::Value::Null);
    assert!(
        last["reason"].as_str().unwrap().contains("absent.py"),
        "{last}"
    );
}

/// `n` scripts in `dir`, each importing one package no policy allows,
/// named after `tag` and its number.
fn forbidden_scripts(dir: &Path, tag: &str, n: usize) {
    fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        fs::write(
            dir.join(format!("s{i:04}.py")),
            format!("import {tag}_{i}\n"),
        )
        .unwrap();
    }
}

/// Runs `validate --policy tiny` on each directory in its own process, all
/// at once, with `env` set; waits for all.
fn validate_concurrently(place: &Place, dirs: &[PathBuf], env: &[(&str, &str)]) {
    let children: Vec<_> = dirs
        .iter()
        .map(|dir| {
            let mut cmd = place.scriptbox(&[
                "validate",
                "--format",
                "json",
                "--policy",
                "tests/policies/tiny.toml",
                "-j",
                "2",
                dir.to_str().unwrap(),
            ]);
            for (k, v) in env {
                cmd.env(k, v);
            }
            cmd.stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    }
}

/// The forbidden packages in `records`, with how often each appears.
fn forbidden_counts(records: &[serde_json::Value]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in records {
        assert_eq!(r["decision"], "forbidden", "{r}");
        *counts
            .entry(r["package"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    counts
}

#[test]
fn eight_processes_append_4000_whole_lines_and_lose_none() {
    const PROCESSES: usize = 8;
    const EACH: usize = 500;
    let place = Place::new();
    let dirs: Vec<PathBuf> = (0..PROCESSES)
        .map(|p| {
            let dir = place.dir.path().join(format!("proc{p}"));
            forbidden_scripts(&dir, &format!("p{p}"), EACH);
            dir
        })
        .collect();
    validate_concurrently(&place, &dirs, &[]);
    let records = place.records();
    assert_eq!(records.len(), PROCESSES * EACH);
    let counts = forbidden_counts(&records);
    let expected: BTreeSet<String> = (0..PROCESSES)
        .flat_map(|p| (0..EACH).map(move |i| format!("p{p}-{i}")))
        .collect();
    assert_eq!(counts.keys().cloned().collect::<BTreeSet<_>>(), expected);
    assert!(counts.values().all(|&c| c == 1), "a line written twice");
    for r in &records {
        assert_well_formed(r);
    }
    println!(
        "{} processes x {} decisions: {} lines, all whole, none lost",
        PROCESSES,
        EACH,
        records.len()
    );
}

#[test]
fn rotation_under_concurrent_writers_loses_no_line() {
    const PROCESSES: usize = 4;
    const EACH: usize = 300;
    let place = Place::new();
    let dirs: Vec<PathBuf> = (0..PROCESSES)
        .map(|p| {
            let dir = place.dir.path().join(format!("proc{p}"));
            forbidden_scripts(&dir, &format!("r{p}"), EACH);
            dir
        })
        .collect();
    // About 20 lines a file: dozens of rotations while all four write.
    validate_concurrently(
        &place,
        &dirs,
        &[
            ("SCRIPTBOX_AUDIT_MAX_SIZE", "8K"),
            ("SCRIPTBOX_AUDIT_KEEP", "1000"),
        ],
    );
    let rotated = fs::read_dir(place.log().parent().unwrap())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_prefix("audit.jsonl.")
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .count();
    assert!(rotated >= 10, "only {rotated} rotations");
    let records = place.records();
    assert_eq!(records.len(), PROCESSES * EACH, "lines lost or doubled");
    let counts = forbidden_counts(&records);
    assert_eq!(counts.len(), PROCESSES * EACH);
    // Each process's lines stay in order across the files it wrote to.
    for p in 0..PROCESSES {
        let mine: Vec<usize> = records
            .iter()
            .filter_map(|r| {
                r["package"]
                    .as_str()
                    .unwrap()
                    .strip_prefix(&format!("r{p}-"))
                    .map(|i| i.parse().unwrap())
            })
            .collect();
        assert_eq!(mine.len(), EACH);
    }
    // stats reads every file, oldest first, and counts every line.
    let out = place
        .scriptbox(&["stats", "--format", "json", "--top", "5"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["schema"], "scriptbox.stats/1");
    assert_eq!(stats["lines"], (PROCESSES * EACH) as u64);
    // The current file is absent when the last append rotated it.
    let current = usize::from(place.log().exists());
    assert_eq!(stats["files"].as_array().unwrap().len(), rotated + current);
    assert_eq!(stats["forbidden"].as_array().unwrap().len(), 5);
}

#[test]
fn rotation_keeps_the_configured_number_of_files() {
    let place = Place::new();
    let dir = place.dir.path().join("many");
    forbidden_scripts(&dir, "k", 200);
    validate_concurrently(
        &place,
        &[dir.clone(), dir],
        &[
            ("SCRIPTBOX_AUDIT_MAX_SIZE", "4K"),
            ("SCRIPTBOX_AUDIT_KEEP", "3"),
        ],
    );
    let mut names: Vec<String> = fs::read_dir(place.log().parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    // The current file is absent when the last append rotated it.
    names.retain(|n| n != "audit.jsonl");
    assert_eq!(
        names,
        [
            "audit.jsonl.1",
            "audit.jsonl.2",
            "audit.jsonl.3",
            "audit.jsonl.lock"
        ]
    );
    // What is kept is whole lines, and the newest ones.
    let records = place.records();
    assert!(records.len() >= 3 * 8, "{}", records.len());
    for r in &records {
        assert_well_formed(r);
    }
}

#[test]
fn a_log_that_cannot_be_written_is_one_warning_and_validation_goes_on() {
    let place = Place::new();
    let dir = place.dir.path().join("some");
    forbidden_scripts(&dir, "w", 20);
    // A path under a regular file: no directory can be made there.
    let blocker = place.dir.path().join("not-a-directory");
    fs::write(&blocker, "").unwrap();
    let out = place
        .scriptbox(&[
            "validate",
            "--policy",
            "tests/policies/tiny.toml",
            dir.to_str().unwrap(),
        ])
        .env("SCRIPTBOX_AUDIT_LOG", blocker.join("audit.jsonl"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "the verdict, not a failure");
    assert!(String::from_utf8_lossy(&out.stdout).contains("w_19"));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("scriptbox: warning: audit log ")
            && err.contains("not-a-directory/audit.jsonl"),
        "{err}"
    );
}

#[test]
fn bad_rotation_knobs_are_one_line_warnings_and_the_defaults() {
    let place = Place::new();
    let script = place.script("one.py", "import numpy\n");
    let out = place
        .scriptbox(&[
            "validate",
            "--policy",
            "tests/policies/tiny.toml",
            script.to_str().unwrap(),
        ])
        .env("SCRIPTBOX_AUDIT_MAX_SIZE", "huge")
        .env("SCRIPTBOX_AUDIT_KEEP", "-1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(lines[0].contains("SCRIPTBOX_AUDIT_MAX_SIZE") && lines[0].contains("using 64M"));
    assert!(lines[1].contains("SCRIPTBOX_AUDIT_KEEP") && lines[1].contains("using 5"));
    assert_eq!(place.records().len(), 1);
}

#[test]
fn stats_summarises_the_log_and_reports_bad_lines_and_arguments() {
    let place = Place::new();
    let a = place.script("a.py", "import numpy\nimport six\n");
    let b = place.script("b.py", "import numpy\nimport AlgorithmImports\n");
    for script in [&a, &a, &b] {
        place
            .scriptbox(&[
                "validate",
                "--policy",
                "tests/policies/tiny.toml",
                script.to_str().unwrap(),
            ])
            .output()
            .unwrap();
    }
    // One under another policy, and a line that is no record.
    place
        .scriptbox(&["validate", "--policy", "strict", b.to_str().unwrap()])
        .output()
        .unwrap();
    let mut log = fs::OpenOptions::new()
        .append(true)
        .open(place.log())
        .unwrap();
    std::io::Write::write_all(&mut log, b"this is not JSON\n").unwrap();

    let stats = |args: &[&str]| {
        let mut full = vec!["stats"];
        full.extend_from_slice(args);
        place.scriptbox(&full).output().unwrap()
    };
    let out = stats(&["--format", "json", "--policy", "tests/policies/tiny.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["unreadable"], 1);
    assert_eq!(s["policy"], "tiny");
    assert_eq!(s["forbidden"][0]["package"], "numpy");
    assert_eq!(s["forbidden"][0]["refusals"], 3);
    assert_eq!(s["forbidden"][0]["scripts"], 2, "two distinct scripts");
    let missing = s["missing"].as_array().unwrap();
    assert_eq!(missing[0]["package"], "six");
    assert_eq!(missing[0]["decision"], "installable");
    assert_eq!(missing[0]["requests"], 2);
    assert_eq!(missing[0]["scripts"], 1);
    assert_eq!(missing[1]["package"], "AlgorithmImports");
    assert_eq!(missing[1]["decision"], "unknown");

    // Without the filter the strict validation counts too.
    let all: serde_json::Value =
        serde_json::from_slice(&stats(&["--format", "json"]).stdout).unwrap();
    assert_eq!(
        all["counted"].as_u64().unwrap(),
        s["counted"].as_u64().unwrap() + 1
    );

    // The text table.
    let out = stats(&["--since", "1h"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Most often forbidden packages"), "{text}");
    assert!(text.contains("1 unreadable"), "{text}");
    // Nothing since tomorrow.
    let out = stats(&["--format", "json", "--since", "2999-01-01"]);
    let later: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(later["counted"], 0);

    let out = stats(&["--since", "last tuesday"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--since 'last tuesday': expected"), "{err}");
}

#[test]
fn the_library_pipeline_records_a_refusal_without_the_cli() {
    use scriptbox::audit::{AuditLog, Rotation};
    use scriptbox::pipeline::{Backend, RunRequest, check};
    use scriptbox::run::Stdin;
    let place = Place::new();
    let (policy, _) = scriptbox::policy::load(&repo().join("tests/policies/tiny.toml")).unwrap();
    let log = Arc::new(AuditLog::new(place.log(), Rotation::default(), "service"));
    let script = b"import requests\n".to_vec();
    let request = RunRequest {
        script: script.clone(),
        script_path: "upload.py".into(),
        policy: Arc::new(policy),
        profile: "default".into(),
        backend: Backend::Local,
        unsandboxed: false,
        args: Vec::new(),
        stdin: Stdin::Empty,
        cache_dir: place.cache(),
        python: python(),
        base_image: None,
        audit: Some(log),
    };
    let refused = check(&request).expect_err("requests is not allowed by tiny");
    assert_eq!(refused.status.as_str(), "rejected");
    let records = place.records();
    assert_eq!(records.len(), 2, "{records:#?}");
    let digest = scriptbox::pipeline::script_sha256(&script);
    for r in &records {
        assert_well_formed(r);
        assert_eq!(r["origin"], "service");
        assert_eq!(r["script_sha256"], digest.as_str());
    }
    assert_eq!(records[0]["decision"], "forbidden");
    assert_eq!(records[0]["package"], "requests");
    assert_eq!(records[1]["event"], "run");
    assert_eq!(records[1]["status"], "rejected");
}
