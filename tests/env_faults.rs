//! Faults of the build stage, each provoked for real: a package absent from
//! the index, a package with no wheel, the index unreachable, a full disk, a
//! file removed by hand, the Docker engine not answering. Packages come from
//! a loopback index serving wheels the tests build themselves.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

mod support;
use support::{BIN, python, repo};

/// The loopback index of `tests/support/local_index.py`, killed on drop.
struct Index {
    child: Child,
    url: String,
    hashes: serde_json::Value,
    _dir: tempfile::TempDir,
}

impl Drop for Index {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_index() -> Index {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new("python3")
        .arg(repo().join("tests/support/local_index.py"))
        .arg(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let port = lines.next().unwrap().unwrap();
    let hashes = lines.next().unwrap().unwrap();
    Index {
        child,
        url: format!(
            "http://127.0.0.1:{}/simple",
            port.strip_prefix("PORT ").unwrap()
        ),
        hashes: serde_json::from_str(hashes.strip_prefix("HASHES ").unwrap()).unwrap(),
        _dir: dir,
    }
}

/// A scratch place for one test: a policy directory, a scriptbox cache and
/// a uv cache of its own (so nothing comes from an earlier download).
struct Place {
    dir: tempfile::TempDir,
}

impl Place {
    fn new() -> Place {
        Place {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// Writes `policies/test.toml` allowing `allow` from `index`, and, when
    /// given, a hand-made lock pinning `(name, version, sha256)`.
    fn policy(&self, index: &str, allow: &[&str], lock: &[(&str, &str, &str)]) -> PathBuf {
        let dir = self.dir.path().join("policies");
        fs::create_dir_all(&dir).unwrap();
        let mut text = format!(
            "[python]\nversion = \"3.11\"\n\n[install]\nindex = \"{index}\"\n\n[profiles.default]\nmemory = \"256M\"\ncpus = 1\npids = 64\nwall_time = \"30s\"\noutput = \"1M\"\ntmp = \"16M\"\nnetwork = \"none\"\n"
        );
        for name in allow {
            text.push_str(&format!("\n[[allow]]\nname = \"{name}\"\n"));
        }
        let path = dir.join("test.toml");
        fs::write(&path, text).unwrap();
        if !lock.is_empty() {
            let mut text = String::new();
            for (name, version, hash) in lock {
                text.push_str(&format!(
                    "{name}=={version} \\\n    --hash=sha256:{hash}\n    # via -r allowed.in\n"
                ));
            }
            fs::write(dir.join("test.lock"), text).unwrap();
        }
        path
    }

    fn scriptbox(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .current_dir(repo())
            .env("SCRIPTBOX_CACHE_DIR", self.cache())
            .env("UV_CACHE_DIR", self.dir.path().join("uv-cache"))
            .env("UV_HTTP_RETRIES", "0")
            .output()
            .unwrap()
    }

    fn build(&self, policy: &Path, package: &str) -> Output {
        self.scriptbox(&[
            "env",
            "build",
            "--format",
            "json",
            "--python",
            &python(),
            "--policy",
            policy.to_str().unwrap(),
            "--packages",
            package,
        ])
    }

    /// No build directory left behind, and every published layer complete
    /// (its manifest written last) and free of `dist` (the failed package).
    /// The empty base layer of these policies may well be published.
    fn assert_cache_clean(&self, dist: &str) {
        let envs = self.cache().join("envs");
        let tmp: Vec<_> = fs::read_dir(envs.join("tmp"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(tmp.is_empty(), "tmp/ holds {tmp:?}");
        for layer in fs::read_dir(envs.join("venv"))
            .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
            .unwrap_or_default()
        {
            assert!(
                layer.join("manifest.json").is_file(),
                "{layer:?} is partial"
            );
            let site = layer.join("lib/python3.11/site-packages");
            let names: Vec<String> = fs::read_dir(&site)
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            assert!(
                !names.iter().any(|n| n.starts_with(dist)),
                "{layer:?} holds {dist}: {names:?}"
            );
        }
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn locks_and_builds_offline_from_a_loopback_index() {
    let index = start_index();
    let place = Place::new();
    let policy = place.policy(&index.url, &["sbxtest-pure"], &[]);
    let out = place.scriptbox(&["policy", "lock", "--policy", policy.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = place.build(&policy, "sbxtest-pure");
    assert!(out.status.success(), "{}", stderr(&out));
    let env: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let out = Command::new(env["python"].as_str().unwrap())
        .args(["-c", "import sbxtest_pure; print(sbxtest_pure.VALUE)"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
}

#[test]
fn a_package_absent_from_the_index_is_named() {
    let index = start_index();
    let place = Place::new();
    let zeros = "0".repeat(64);
    let policy = place.policy(
        &index.url,
        &["sbxtest-missing"],
        &[("sbxtest-missing", "1.0", &zeros)],
    );
    let out = place.build(&policy, "sbxtest-missing");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("sbxtest-missing"), "{}", stderr(&out));
    place.assert_cache_clean("sbxtest_missing");
}

#[test]
fn a_package_without_a_wheel_is_refused_and_its_code_never_runs() {
    let index = start_index();
    let place = Place::new();
    let hash = index.hashes["sbxtest-sdist"].as_str().unwrap().to_string();
    // Locking refuses it: there is no wheel to pin.
    let policy = place.policy(&index.url, &["sbxtest-sdist"], &[]);
    let out = place.scriptbox(&["policy", "lock", "--policy", policy.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("sbxtest-sdist"), "{}", stderr(&out));
    // A lock pinning its source archive anyway is refused at build time.
    let policy = place.policy(
        &index.url,
        &["sbxtest-sdist"],
        &[("sbxtest-sdist", "1.0", &hash)],
    );
    let out = place.build(&policy, "sbxtest-sdist");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("sbxtest-sdist"), "{err}");
    assert!(!err.contains("must never run package code"), "{err}");
    place.assert_cache_clean("sbxtest_sdist");
}

#[test]
fn an_unreachable_index_is_reported() {
    // A loopback port nothing listens on: bind one, then close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let place = Place::new();
    let policy = place.policy(
        &format!("http://127.0.0.1:{port}/simple"),
        &["sbxtest-pure"],
        &[("sbxtest-pure", "1.0", &"1".repeat(64))],
    );
    let out = place.build(&policy, "sbxtest-pure");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    place.assert_cache_clean("sbxtest_pure");
}

#[test]
fn a_file_removed_by_hand_is_found_and_the_layer_rebuilt() {
    use std::os::unix::fs::PermissionsExt;
    let index = start_index();
    let place = Place::new();
    let hash = index.hashes["sbxtest-pure"].as_str().unwrap().to_string();
    let policy = place.policy(
        &index.url,
        &["sbxtest-pure"],
        &[("sbxtest-pure", "1.0", &hash)],
    );
    let out = place.build(&policy, "sbxtest-pure");
    assert!(out.status.success(), "{}", stderr(&out));
    let env: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pkg = PathBuf::from(env["site_packages"][0].as_str().unwrap()).join("sbxtest_pure");
    fs::set_permissions(&pkg, fs::Permissions::from_mode(0o755)).unwrap();
    fs::remove_file(pkg.join("__init__.py")).unwrap();
    let out = place.scriptbox(&["env", "verify"]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report.contains("sbxtest_pure-1.0") && report.contains("__init__.py is missing"),
        "{report}"
    );
    // The next build finds the damage and rebuilds the whole layer.
    let out = place.build(&policy, "sbxtest-pure");
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["cache_hit"], false);
    assert_eq!(again["key"], env["key"]);
    assert!(pkg.join("__init__.py").is_file());
    assert_eq!(place.scriptbox(&["env", "verify"]).status.code(), Some(0));
}

#[test]
fn a_full_disk_fails_cleanly() {
    // A 3 MiB file system as the cache: root is needed to mount it.
    if unsafe { libc::geteuid() } != 0 {
        panic!("this test mounts a tmpfs and must run as root (CI does)");
    }
    let index = start_index();
    let place = Place::new();
    let hash = index.hashes["sbxtest-pure"].as_str().unwrap().to_string();
    let policy = place.policy(
        &index.url,
        &["sbxtest-pure"],
        &[("sbxtest-pure", "1.0", &hash)],
    );
    fs::create_dir_all(place.cache()).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
        .arg(place.cache())
        .status()
        .unwrap();
    assert!(mounted.success());
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(place.cache());
    // Fill it, leaving less than a venv needs.
    let filler = place.cache().join("filler");
    let _ = fs::write(&filler, vec![0u8; 3 * 1024 * 1024 - 64 * 1024]);
    let out = place.build(&policy, "sbxtest-pure");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    let _ = fs::remove_file(&filler);
    place.assert_cache_clean("sbxtest_pure");
    // With room again, the same build succeeds.
    let out = place.build(&policy, "sbxtest-pure");
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn an_engine_not_answering_is_a_clear_error() {
    let place = Place::new();
    let run = |host: &str| {
        Command::new(BIN)
            .args([
                "env",
                "build",
                "--backend",
                "docker",
                "--policy",
                "strict",
                "--packages",
                "numpy",
            ])
            .current_dir(repo())
            .env("SCRIPTBOX_CACHE_DIR", place.cache())
            .env("DOCKER_HOST", host)
            .output()
            .unwrap()
    };
    // No socket at all.
    let out = run("unix:///nonexistent/docker.sock");
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("does not answer at unix:///nonexistent/docker.sock"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    // A socket that accepts and never answers.
    let sock = place.dir.path().join("silent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let started = std::time::Instant::now();
    let out = run(&format!("unix://{}", sock.display()));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no answer within"),
        "{}",
        stderr(&out)
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}
