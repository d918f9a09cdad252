//! `scriptbox doctor` end to end on this machine: real bwrap, the real
//! Docker engine, and the environment changed to take each away.

use std::process::{Command, Output};

use serde_json::Value;

mod support;
use support::{BIN, json, repo, text};

const CHECKS: [&str; 9] = [
    "bwrap",
    "user-namespaces",
    "cgroups",
    "seccomp",
    "runsc",
    "docker-engine",
    "docker-runsc",
    "docker-base-image",
    "kvm",
];

fn doctor(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("doctor").args(args).current_dir(repo());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("scriptbox runs")
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .expect("checks is an array")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report}"))
}

fn fix(check: &Value) -> String {
    check["fix"]
        .as_str()
        .unwrap_or_else(|| panic!("no fix in {check}"))
        .to_string()
}

#[test]
fn json_has_the_schema_and_every_check_in_order() {
    let out = doctor(&["--format", "json"], &[]);
    let report = json(&out);
    assert_eq!(report["schema"], "scriptbox.doctor/1");
    let object = report.as_object().unwrap();
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["backends", "checks", "schema"]);
    let names: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, CHECKS);
    for c in report["checks"].as_array().unwrap() {
        let mut keys: Vec<&str> = c.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["detail", "fix", "name", "status"], "{c}");
        let status = c["status"].as_str().unwrap();
        assert!(["ok", "missing", "degraded"].contains(&status), "{c}");
        assert!(!c["detail"].as_str().unwrap().is_empty(), "{c}");
        // A fix exactly where something is not ok, one line.
        assert_eq!(c["fix"].is_null(), status == "ok", "{c}");
        if let Some(fix) = c["fix"].as_str() {
            assert!(!fix.is_empty() && !fix.contains('\n'), "{c}");
        }
    }
    let backends = &report["backends"];
    let mut keys: Vec<&str> = backends
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(keys, ["docker", "gvisor", "local"]);
    let ok = |name: &str| check(&report, name)["status"] == "ok";
    assert_eq!(
        backends["docker"],
        ok("docker-engine") && ok("docker-base-image")
    );
    assert_eq!(backends["gvisor"], ok("runsc"));
}

#[test]
fn this_machine_runs_the_local_backend_and_has_an_engine() {
    let out = doctor(&["--format", "json"], &[]);
    let report = json(&out);
    let bwrap = check(&report, "bwrap");
    assert_eq!(bwrap["status"], "ok", "{bwrap}");
    assert_eq!(report["backends"]["local"], true);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let engine = check(&report, "docker-engine");
    assert_eq!(engine["status"], "ok", "{engine}");
    assert!(
        engine["detail"].as_str().unwrap().contains("Docker"),
        "{engine}"
    );
    // The kernel this runs on has seccomp (Docker's default profile needs it).
    assert_eq!(check(&report, "seccomp")["status"], "ok");
}

#[test]
fn without_bwrap_on_path_the_local_backend_is_missing_and_exit_is_2() {
    // A PATH holding nothing: scriptbox doctor itself needs no program
    // from it.
    let empty = tempfile::tempdir().unwrap();
    let path = empty.path().to_str().unwrap();
    let out = doctor(&["--format", "json"], &[("PATH", path)]);
    let report = json(&out);
    let bwrap = check(&report, "bwrap");
    assert_eq!(bwrap["status"], "missing", "{bwrap}");
    assert!(fix(bwrap).contains("apt-get install bubblewrap"), "{bwrap}");
    assert_eq!(report["backends"]["local"], false);
    assert_eq!(out.status.code(), Some(2));
    let runsc = check(&report, "runsc");
    assert_eq!(runsc["status"], "missing", "{runsc}");
    assert!(fix(runsc).contains("runsc"), "{runsc}");
    assert_eq!(report["backends"]["gvisor"], false);
}

#[test]
fn an_engine_that_does_not_answer_is_missing_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let socket = format!("unix://{}", dir.path().join("no-docker.sock").display());
    let out = doctor(&["--format", "json"], &[("DOCKER_HOST", &socket)]);
    let report = json(&out);
    let engine = check(&report, "docker-engine");
    assert_eq!(engine["status"], "missing", "{engine}");
    assert!(fix(engine).contains("scripts/docker-up"), "{engine}");
    assert!(
        engine["detail"]
            .as_str()
            .unwrap()
            .contains("no-docker.sock"),
        "{engine}"
    );
    for name in ["docker-runsc", "docker-base-image"] {
        let c = check(&report, name);
        assert_eq!(c["status"], "missing", "{c}");
        assert!(fix(c).contains("scripts/docker-up"), "{c}");
    }
    assert_eq!(report["backends"]["docker"], false);
    // The local backend does not need the engine.
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn cgroups_switched_off_are_degraded_with_the_switch_named() {
    let out = doctor(&["--format", "json"], &[("SCRIPTBOX_CGROUPS", "off")]);
    let report = json(&out);
    let cgroups = check(&report, "cgroups");
    assert_eq!(cgroups["status"], "degraded", "{cgroups}");
    assert!(
        cgroups["detail"]
            .as_str()
            .unwrap()
            .contains("SCRIPTBOX_CGROUPS=off"),
        "{cgroups}"
    );
    assert!(fix(cgroups).contains("SCRIPTBOX_CGROUPS"), "{cgroups}");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn cgroups_report_their_version_and_controllers() {
    let report = json(&doctor(&["--format", "json"], &[]));
    let detail = check(&report, "cgroups")["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        detail.starts_with("cgroup-v1") || detail.starts_with("cgroup-v2"),
        "{detail}"
    );
    assert!(detail.contains("controllers"), "{detail}");
}

#[test]
fn an_unusable_policy_fails_only_the_base_image_check() {
    let dir = tempfile::tempdir().unwrap();
    let policy = support::write(dir.path(), "broken.toml", "[python]\nversion = 3\n");
    let out = doctor(
        &["--format", "json", "--policy", policy.to_str().unwrap()],
        &[],
    );
    let report = json(&out);
    let base = check(&report, "docker-base-image");
    assert_eq!(base["status"], "missing", "{base}");
    assert!(
        base["detail"].as_str().unwrap().contains("broken.toml"),
        "{base}"
    );
    assert!(fix(base).contains("--policy"), "{base}");
    assert_eq!(check(&report, "bwrap")["status"], "ok");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn text_is_a_table_naming_every_check() {
    let out = doctor(&[], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let header = table.lines().next().unwrap();
    assert!(
        header.contains("CHECK") && header.contains("STATUS") && header.contains("DETAIL"),
        "{table}"
    );
    for name in CHECKS {
        assert!(
            table.lines().any(|l| l.starts_with(&format!("{name} "))),
            "no row for {name}:\n{table}"
        );
    }
    assert!(table.contains("backends: local yes"), "{table}");
}

#[test]
fn text_puts_the_fix_under_a_missing_check() {
    let empty = tempfile::tempdir().unwrap();
    let out = doctor(&[], &[("PATH", empty.path().to_str().unwrap())]);
    assert_eq!(out.status.code(), Some(2));
    let table = text(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    let row = lines
        .iter()
        .position(|l| l.starts_with("bwrap "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(lines[row].contains("missing"), "{table}");
    assert!(
        lines[row + 1]
            .trim_start()
            .starts_with("fix: apt-get install bubblewrap"),
        "{table}"
    );
}
