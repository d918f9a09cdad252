//! `scriptbox env build` with real uv and real packages from the index:
//! content addressing, cache hits, a build killed midway, and concurrent
//! builds of one key.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::{BIN, ok_json as json, python, repo, scriptbox};

fn build(cache: &Path, args: &[&str]) -> Command {
    let mut cmd = scriptbox(
        cache,
        &["env", "build", "--format", "json", "--python", &python()],
    );
    cmd.args(args);
    cmd
}

/// `env build --policy strict --packages NAME`, which must succeed.
fn build_strict(cache: &Path, package: &str) -> serde_json::Value {
    json(
        &build(cache, &["--policy", "strict", "--packages", package])
            .output()
            .unwrap(),
    )
}

#[test]
fn builds_once_then_hits_the_cache_by_content() {
    let cache = tempfile::tempdir().unwrap();
    let first = build_strict(cache.path(), "numpy");
    assert_eq!(first["cache_hit"], false);
    let path = PathBuf::from(first["path"].as_str().unwrap());
    assert!(path.join("manifest.json").is_file());
    let out = Command::new(path.join("bin/python"))
        .args(["-c", "import numpy; print(numpy.__version__)"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "2.4.6",
        "pinned by policies/strict.lock"
    );
    // Bytecode was compiled at build time.
    assert!(
        fs::read_dir(path.join("lib/python3.11/site-packages/numpy/__pycache__"))
            .unwrap()
            .count()
            > 0
    );
    // Published environments are read-only.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &fs::metadata(path.join("lib")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o222, 0, "no write bits");
    let again = build_strict(cache.path(), "numpy");
    assert_eq!(again["cache_hit"], true);
    assert_eq!(again["key"], first["key"]);
    // pandas is preinstalled too under strict: the same base environment.
    assert_eq!(build_strict(cache.path(), "pandas")["key"], first["key"]);
}

fn build_layered(cache: &Path, package: &str) -> serde_json::Value {
    json(
        &build(
            cache,
            &[
                "--policy",
                "tests/policies/layered.toml",
                "--packages",
                package,
            ],
        )
        .output()
        .unwrap(),
    )
}

#[test]
fn extra_packages_go_in_a_layer_over_the_base() {
    let cache = tempfile::tempdir().unwrap();
    // numpy is the layered policy's preinstalled set: the base alone.
    let base = build_layered(cache.path(), "numpy");
    assert_eq!(base["base"], serde_json::Value::Null);
    let base_dir = PathBuf::from(base["path"].as_str().unwrap());
    // pandas gets a layer holding what the base lacks, and only that.
    let top = build_layered(cache.path(), "pandas");
    assert_eq!(top["base"], base["key"], "{top}");
    assert_eq!(top["cache_hit"], false);
    let layer: Vec<&str> = top["layer_packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(layer.contains(&"pandas==2.3.3"), "{layer:?}");
    assert!(!layer.iter().any(|p| p.starts_with("numpy")), "{layer:?}");
    let top_dir = PathBuf::from(top["path"].as_str().unwrap());
    assert!(
        !top_dir.join("lib/python3.11/site-packages/numpy").exists(),
        "numpy is not copied again"
    );
    // Through the overlay, the layer's interpreter imports both, numpy from
    // the base.
    let out = Command::new(top["python"].as_str().unwrap())
        .args([
            "-c",
            "import numpy, pandas; print(numpy.__file__); print(pandas.__version__)",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with(base_dir.to_str().unwrap()), "{stdout}");
    assert!(stdout.contains("2.3.3"), "{stdout}");
    assert_eq!(top["site_packages"].as_array().unwrap().len(), 2);
    // The base was reused, and a second request is a hit on both.
    assert_eq!(build_layered(cache.path(), "pandas")["cache_hit"], true);
}

/// A two-layer environment in the local sandbox, under both isolations:
/// the script imports from both layers at their neutral paths (pandas
/// from the top layer, `/env/0`; numpy from the base, `/env/1`) and sees
/// no host path of the cache or the interpreter.
#[test]
fn a_layered_environment_runs_in_the_sandbox_at_neutral_paths() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("both.py");
    fs::write(
        &script,
        "import sys, numpy, pandas\n\
         print(pandas.__file__)\n\
         print(numpy.__file__)\n\
         print(sys.executable)\n\
         print(sys.path)\n\
         print(open('/proc/self/mountinfo').read())\n",
    )
    .unwrap();
    let text = fs::read_to_string(repo().join("tests/policies/layered.toml")).unwrap();
    let gvisor = text.replace(
        "[profiles.default]\n",
        "[profiles.default]\nisolation = \"gvisor\"\n",
    );
    assert_ne!(gvisor, text);
    fs::write(dir.path().join("gvisor.toml"), gvisor).unwrap();
    fs::copy(
        repo().join("tests/policies/layered.lock"),
        dir.path().join("gvisor.lock"),
    )
    .unwrap();
    let gvisor = dir.path().join("gvisor.toml").display().to_string();
    let host_prefix = support::python_prefix();
    for policy in ["tests/policies/layered.toml", gvisor.as_str()] {
        let out = scriptbox(
            cache.path(),
            &[
                "run",
                "--format",
                "json",
                "--python",
                &python(),
                "--policy",
                policy,
            ],
        )
        .arg(&script)
        .output()
        .unwrap();
        let r = json(&out);
        assert_eq!(r["status"], "succeeded", "{policy}: {r}");
        let stdout = r["stdout"].as_str().unwrap();
        let lines: Vec<&str> = stdout.lines().collect();
        assert!(
            lines[0].starts_with("/env/0/lib/python3.11/site-packages/pandas/"),
            "{policy}: {stdout}"
        );
        assert!(
            lines[1].starts_with("/env/1/lib/python3.11/site-packages/numpy/"),
            "{policy}: {stdout}"
        );
        assert_eq!(lines[2], "/venv/bin/python", "{policy}: {stdout}");
        let cache_path = cache.path().display().to_string();
        assert!(!stdout.contains(&cache_path), "{policy}: {stdout}");
        if !host_prefix.starts_with("/usr") {
            assert!(!stdout.contains(&host_prefix), "{policy}: {stdout}");
        }
    }
}

#[test]
fn a_script_builds_its_allowed_dependencies() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("bot.py");
    fs::write(&script, "import numpy\nimport os\n").unwrap();
    let by_script = json(
        &build(
            cache.path(),
            &["--policy", "strict", script.to_str().unwrap()],
        )
        .output()
        .unwrap(),
    );
    let by_name = build_strict(cache.path(), "numpy");
    assert_eq!(
        by_script["key"], by_name["key"],
        "keyed by content, never by script"
    );
    fs::write(&script, "import flask\n").unwrap();
    let out = build(
        cache.path(),
        &["--policy", "strict", script.to_str().unwrap()],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("'flask' is not allowed"));
    let out = build(cache.path(), &["--policy", "strict", "--packages", "flask"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not pinned in the policy's lock"));
}

#[test]
fn a_build_killed_midway_leaves_nothing_and_is_cleaned_up() {
    let cache = tempfile::tempdir().unwrap();
    let tmp = cache.path().join("envs/tmp");
    let mut child = build(
        cache.path(),
        &["--policy", "strict", "--packages", "pandas"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    // Kill it as soon as its build directory exists.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !fs::read_dir(&tmp).is_ok_and(|mut d| d.next().is_some()) {
        assert!(Instant::now() < deadline, "the build never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let published = cache.path().join("envs/venv");
    let visible: Vec<_> = fs::read_dir(&published)
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(visible.is_empty(), "no half-built entry is visible");
    assert!(
        fs::read_dir(&tmp).unwrap().count() > 0,
        "the leftover is still there"
    );
    let done = build_strict(cache.path(), "pandas");
    assert_eq!(done["cache_hit"], false);
    assert_eq!(
        fs::read_dir(&tmp).unwrap().count(),
        0,
        "leftovers cleaned on the next build"
    );
}

#[test]
fn concurrent_builds_of_one_key_build_once() {
    let cache = tempfile::tempdir().unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| {
            build(cache.path(), &["--policy", "strict", "--packages", "numpy"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let results: Vec<serde_json::Value> = children
        .into_iter()
        .map(|c| json(&c.wait_with_output().unwrap()))
        .collect();
    assert_eq!(results[0]["path"], results[1]["path"]);
    let built = results.iter().filter(|r| r["cache_hit"] == false).count();
    assert_eq!(built, 1, "exactly one process built it: {results:?}");
    assert_eq!(
        fs::read_dir(cache.path().join("envs/venv"))
            .unwrap()
            .count(),
        1
    );
}

#[test]
fn ls_rm_and_prune_least_recently_used_first() {
    let cache = tempfile::tempdir().unwrap();
    let strict = build_strict(cache.path(), "numpy");
    std::thread::sleep(Duration::from_millis(1100));
    let base = build_layered(cache.path(), "numpy");
    let top = build_layered(cache.path(), "pandas");
    let env = |args: &[&str]| {
        Command::new(BIN)
            .arg("env")
            .args(args)
            .env("SCRIPTBOX_CACHE_DIR", cache.path())
            // Venv layers only: no engine answers here.
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .output()
            .unwrap()
    };
    let ls = || -> Vec<serde_json::Value> {
        String::from_utf8_lossy(&env(&["ls", "--format", "json"]).stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let entries = ls();
    assert_eq!(entries.len(), 3, "{entries:?}");
    assert_eq!(
        entries[0]["key"], strict["key"],
        "least recently used first"
    );
    let size = |key: &serde_json::Value| {
        entries.iter().find(|e| e["key"] == *key).unwrap()["size"]
            .as_u64()
            .unwrap()
    };
    // A size budget that fits the two newer entries evicts only the oldest.
    let budget = size(&base["key"]) + size(&top["key"]) + 1;
    let out = env(&["prune", "--max-size", &budget.to_string()]);
    assert!(out.status.success());
    let left = ls();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(!Path::new(strict["path"].as_str().unwrap()).exists());
    // Removing a base removes the layers built on it too.
    let key = base["key"].as_str().unwrap();
    let out = env(&["rm", &key[..12]]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!Path::new(base["path"].as_str().unwrap()).exists());
    assert!(!Path::new(top["path"].as_str().unwrap()).exists());
    assert!(ls().is_empty());
    let out = env(&["rm", &key[..12]]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no cached environment"));
}

fn store_files(cache: &Path) -> Vec<PathBuf> {
    walkdir_files(&cache.join("bytecode"))
}

fn walkdir_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walkdir_files(&p));
            } else if p.file_name().is_some_and(|n| n != ".lock") {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn bytecode_is_compiled_once_and_shared_between_environments() {
    use std::os::unix::fs::MetadataExt;
    let cache = tempfile::tempdir().unwrap();
    let first = build_strict(cache.path(), "numpy");
    let stored = store_files(cache.path());
    assert!(
        stored.len() > 1000,
        "numpy and pandas sources: {}",
        stored.len()
    );
    // The layer's pyc is the store's file, and an unchecked-hash pyc
    // (flags word 1 after the magic: PEP 552).
    let site = PathBuf::from(first["site_packages"][0].as_str().unwrap());
    let pyc = fs::read_dir(site.join("numpy/__pycache__"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".cpython-311.pyc"))
        .unwrap();
    assert!(fs::metadata(&pyc).unwrap().nlink() >= 2);
    let bytes = fs::read(&pyc).unwrap();
    assert_eq!(u32::from_le_bytes(bytes[4..8].try_into().unwrap()), 1);
    // Removed and rebuilt: nothing is compiled again.
    let env = |args: &[&str]| {
        Command::new(BIN)
            .arg("env")
            .args(args)
            .env("SCRIPTBOX_CACHE_DIR", cache.path())
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .output()
            .unwrap()
    };
    assert!(
        env(&["rm", first["key"].as_str().unwrap()])
            .status
            .success()
    );
    let again = build_strict(cache.path(), "numpy");
    assert_eq!(again["cache_hit"], false);
    assert_eq!(store_files(cache.path()).len(), stored.len());
    // Evicting every environment lets prune sweep the unused bytecode.
    let out = env(&["prune", "--max-size", "0"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("of bytecode no environment uses"));
    assert!(store_files(cache.path()).is_empty());
}

#[test]
fn a_relative_cache_directory_works() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["env", "build", "--format", "json", "--python", &python()])
        .args(["--policy"])
        .arg(repo().join("tests/policies/tiny.toml"))
        .args(["--packages", "six"])
        .current_dir(dir.path())
        .env("SCRIPTBOX_CACHE_DIR", "relative-cache")
        .output()
        .unwrap();
    let env = json(&out);
    let python = PathBuf::from(env["python"].as_str().unwrap());
    assert!(python.is_absolute(), "{env}");
    assert!(
        python.starts_with(dir.path().canonicalize().unwrap()) || python.starts_with(dir.path())
    );
    let out = Command::new(&python)
        .args(["-c", "import six"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
