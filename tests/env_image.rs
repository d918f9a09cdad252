//! Docker images with the real engine: a base image from images/, an
//! environment image layered on it, labels and manifest, cache hits,
//! `validate --image`, concurrent builds, a build killed midway, and image
//! removal. Needs the engine and `scriptbox/python:3.11`
//! (scripts/docker-up and scripts/bootstrap-base-image.sh; scripts/test runs
//! both).

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::{BIN, ok_json, python, repo, scriptbox};

const PYTHON_BASE: &str = "scriptbox/python:3.11";

fn build_image(cache: &Path, policy: &str, package: &str, base: Option<&str>) -> Command {
    let mut args = vec![
        "env",
        "build",
        "--backend",
        "docker",
        "--format",
        "json",
        "--python",
        "",
        "--policy",
        policy,
        "--packages",
        package,
    ];
    let py = python();
    args[7] = &py;
    if let Some(b) = base {
        args.extend(["--base-image", b]);
    }
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let mut cmd = Command::new(BIN);
    cmd.args(&args)
        .current_dir(repo())
        .env("SCRIPTBOX_CACHE_DIR", cache);
    cmd
}

/// Test-side inspection through the docker CLI (product code never uses it).
fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().unwrap()
}

fn label(image: &str, name: &str) -> String {
    let out = docker(&[
        "image",
        "inspect",
        "--format",
        &format!("{{{{index .Config.Labels \"{name}\"}}}}"),
        image,
    ]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn in_container(image: &str, code: &str) -> Output {
    docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        image,
        "python3",
        "-c",
        code,
    ])
}

#[test]
fn env_image_layers_only_what_the_base_lacks() {
    let cache = tempfile::tempdir().unwrap();
    let base_tag = "scriptbox-test/trading-layered:3.11";
    // The trading image of the layered policy: numpy, from images/trading.
    let out = scriptbox(
        cache.path(),
        &[
            "image",
            "build",
            "trading",
            "--policy",
            "tests/policies/layered.toml",
            "--python",
            &python(),
            "--tag",
            base_tag,
            "--format",
            "json",
        ],
    )
    .output()
    .unwrap();
    let built = ok_json(&out);
    assert_eq!(built["packages"], 1, "numpy only: {built}");
    let base_id = built["id"].as_str().unwrap().to_string();
    // With no --base-image, the policy's own trading image is the base.
    let env = ok_json(
        &build_image(cache.path(), "tests/policies/layered.toml", "pandas", None)
            .output()
            .unwrap(),
    );
    let tag = env["image"].as_str().unwrap().to_string();
    assert!(tag.starts_with("scriptbox-env:"), "{env}");
    assert_eq!(label(&tag, "io.scriptbox.base"), base_id);
    assert_eq!(
        label(&tag, "io.scriptbox.key"),
        env["key"].as_str().unwrap()
    );
    assert_eq!(label(&tag, "io.scriptbox.lock-digest").len(), 64);
    let layer: Vec<&str> = env["layer_packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(layer.contains(&"pandas==2.3.3"), "{layer:?}");
    assert!(!layer.iter().any(|p| p.starts_with("numpy")), "{layer:?}");
    // The container imports both, as the unprivileged user, and cannot
    // change the installed packages.
    let out = in_container(
        &tag,
        "import os, numpy, pandas; print(os.getuid(), numpy.__version__, pandas.__version__)\n\
         try:\n    open(os.path.dirname(pandas.__file__) + '/x', 'w')\nexcept PermissionError:\n    print('read-only')",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.split_whitespace().collect::<Vec<_>>(),
        ["10001", "2.4.6", "2.3.3", "read-only"],
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A second request is a cache hit, answered from the engine.
    let again = ok_json(
        &build_image(cache.path(), "tests/policies/layered.toml", "pandas", None)
            .output()
            .unwrap(),
    );
    assert_eq!(again["cache_hit"], true);
    assert_eq!(again["image_id"], env["image_id"]);
    // validate --image reads the manifest recorded at build time.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("bot.py");
    fs::write(&script, "import pandas\nimport numpy\nimport dateutil\n").unwrap();
    let out = scriptbox(
        cache.path(),
        &[
            "validate",
            "--image",
            &tag,
            "--format",
            "json",
            script.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    let report = ok_json(&out);
    assert_eq!(report["verdict"], "ok", "{report}");
    fs::write(&script, "import pandas\nimport requests\n").unwrap();
    let out = scriptbox(
        cache.path(),
        &["validate", "--image", &tag, script.to_str().unwrap()],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("pip install requests"));
    // env ls lists the image; env rm removes it from the engine.
    let out = scriptbox(cache.path(), &["env", "ls", "--format", "json"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed
            .lines()
            .any(|l| l.contains(&tag) && l.contains("\"kind\":\"image\"")),
        "{listed}"
    );
    let out = scriptbox(cache.path(), &["env", "rm", env["key"].as_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!docker(&["image", "inspect", &tag]).status.success());
    let _ = docker(&["rmi", "-f", base_tag]);
}

#[test]
fn concurrent_image_builds_of_one_key_build_once() {
    let cache = tempfile::tempdir().unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| {
            build_image(
                cache.path(),
                "tests/policies/tiny.toml",
                "six",
                Some(PYTHON_BASE),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    let results: Vec<serde_json::Value> = children
        .into_iter()
        .map(|c| ok_json(&c.wait_with_output().unwrap()))
        .collect();
    assert_eq!(results[0]["image_id"], results[1]["image_id"]);
    let built = results.iter().filter(|r| r["cache_hit"] == false).count();
    assert_eq!(built, 1, "exactly one process built it: {results:?}");
    let tag = results[0]["image"].as_str().unwrap();
    let out = in_container(tag, "import six; print(six.__version__)");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1.17.0");
    let _ = docker(&["rmi", "-f", tag]);
}

#[test]
fn an_image_build_killed_midway_leaves_no_image() {
    let cache = tempfile::tempdir().unwrap();
    let tmp = cache.path().join("envs/tmp");
    let mut child = build_image(
        cache.path(),
        "tests/policies/tiny.toml",
        "python-dateutil",
        Some(PYTHON_BASE),
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !fs::read_dir(&tmp).is_ok_and(|mut d| d.next().is_some()) {
        assert!(Instant::now() < deadline, "the build never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // No environment image of that policy's lock exists.
    let digest = {
        use sha2::Digest;
        let lock = fs::read(repo().join("tests/policies/tiny.lock")).unwrap();
        format!("{:x}", sha2::Sha256::digest(&lock))
    };
    let out = docker(&[
        "images",
        "-q",
        "--filter",
        &format!("label=io.scriptbox.lock-digest={digest}"),
        "--filter",
        "label=io.scriptbox.kind=env",
    ]);
    let ids = String::from_utf8_lossy(&out.stdout).trim().to_string();
    // (An image from another test of the same lock would be six only.)
    for id in ids.lines() {
        let layer = label(id, "io.scriptbox.manifest");
        assert!(!layer.contains("python-dateutil"), "{id} survived the kill");
    }
    // The next build cleans the leftover and succeeds.
    let env = ok_json(
        &build_image(
            cache.path(),
            "tests/policies/tiny.toml",
            "python-dateutil",
            Some(PYTHON_BASE),
        )
        .output()
        .unwrap(),
    );
    assert_eq!(env["cache_hit"], false);
    assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
    let _ = docker(&["rmi", "-f", env["image"].as_str().unwrap()]);
}

#[test]
fn system_packages_named_by_the_policy_get_their_own_layer() {
    let cache = tempfile::tempdir().unwrap();
    let env = ok_json(
        &build_image(
            cache.path(),
            "tests/policies/system.toml",
            "six",
            Some(PYTHON_BASE),
        )
        .output()
        .unwrap(),
    );
    let tag = env["image"].as_str().unwrap();
    // jq came in as a .deb fetched on the host; the build had no network.
    let out = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        tag,
        "sh",
        "-c",
        "jq --version; id -u",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["jq-1.6", "10001"],
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = docker(&["rmi", "-f", tag]);
}
