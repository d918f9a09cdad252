//! Helpers shared by the integration tests: where the repository and the
//! binary are, which interpreter to use, running `scriptbox` with a private
//! cache, and reading its output. Each test crate uses a subset.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod postgres;
pub mod server;

/// The `scriptbox` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_scriptbox");

/// The repository (policies, examples and test data are relative to it).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python command the tests target: `$SCRIPTBOX_TEST_PYTHON`, else
/// `python3` (possibly a launcher script such as a pyenv shim).
pub fn python_command() -> String {
    std::env::var("SCRIPTBOX_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// The real interpreter behind [`python_command`] (never a shim), whose
/// minor version the test policies use.
pub fn python() -> String {
    python_says("sys.executable")
}

/// The test interpreter's installation prefix (`sys.base_prefix`), which
/// the local sandboxes mount at a neutral path.
pub fn python_prefix() -> String {
    python_says("sys.base_prefix")
}

/// What the test interpreter prints for `expr` (of module `sys`).
fn python_says(expr: &str) -> String {
    let out = Command::new(python_command())
        .args(["-c", &format!("import sys; print({expr})")])
        .output()
        .expect("python3 runs");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `scriptbox ARGS` run from the repository with `cache` as its cache.
pub fn scriptbox(cache: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(repo())
        .env("SCRIPTBOX_CACHE_DIR", cache);
    cmd
}

/// stdout as one JSON object, or a panic showing both streams.
pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// stdout as one JSON object of a command that must have succeeded.
pub fn ok_json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json(out)
}

/// Bytes that must be UTF-8, as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8 output")
}

/// Writes `content` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, content).unwrap();
    path
}

/// The Python scripts (`*.py`) directly in `dir`, sorted: a suite of
/// scripts, each naming what it expects in its own header lines.
pub fn python_scripts(dir: &Path) -> Vec<PathBuf> {
    let mut scripts: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "py"))
        .collect();
    scripts.sort();
    scripts
}

/// Writes an executable script at `dir/name`. The file is written by a
/// child process (`install`), never through a descriptor of this one: a
/// test binary forks on many threads, and a child forked while this
/// process held the file open for writing would make running it fail
/// with "Text file busy" until that child executes.
pub fn write_executable(dir: &Path, name: &str, content: &str) -> PathBuf {
    let source = dir.join(format!("{name}.source"));
    fs::write(&source, content).unwrap();
    let path = dir.join(name);
    let status = std::process::Command::new("install")
        .args(["-m", "0755"])
        .arg(&source)
        .arg(&path)
        .status()
        .expect("install runs");
    assert!(status.success(), "install {}", path.display());
    path
}

/// Tests that run containers, or count them, take turns within one test
/// crate: a count must not see another test's container.
pub fn engine_turn() -> std::sync::MutexGuard<'static, ()> {
    static ENGINE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ENGINE.lock().unwrap_or_else(|e| e.into_inner())
}
