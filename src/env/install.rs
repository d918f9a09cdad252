//! Installing a pinned closure with uv: into a venv, or into a plain
//! directory for another machine's Python (an image's site-packages).
//!
//! Every install is wheels only, hash-checked against the lock
//! (`--require-hashes`), without resolution (`--no-deps`: the closure is
//! already pinned) and without user configuration (`--no-config`), so that
//! no package code runs on the host and the result depends only on the lock.

use std::fs;
use std::path::Path;
use std::process::Command;

use super::BuildError;
use crate::policy::lock::LockedPackage;

/// Where to install.
pub enum InstallTarget<'a> {
    /// Into the venv whose interpreter this is (bytecode is left to
    /// [`super::bytecode`]).
    Venv(&'a Path),
    /// Into a directory for a Python `version` (X.Y) on `platform`;
    /// bytecode is compiled with `compile_with` when given (an interpreter
    /// of the same X.Y, whose bytecode format is the target's).
    Directory {
        /// The directory, created if missing.
        dir: &'a Path,
        /// The target's X.Y.
        version: &'a str,
        /// The target's platform tag, e.g. `x86_64-manylinux_2_28`.
        platform: &'a str,
        /// A host interpreter of the same X.Y, for bytecode.
        compile_with: Option<&'a Path>,
    },
}

/// The lock's pins as a hashed requirements file.
pub fn requirements(packages: &[LockedPackage]) -> String {
    let mut text = String::new();
    for p in packages {
        text.push_str(&format!("{}=={}", p.name, p.version));
        for h in &p.hashes {
            text.push_str(&format!(" --hash={h}"));
        }
        text.push('\n');
    }
    text
}

/// Installs `packages` from the simple index at `index` into `target`;
/// `scratch` holds the requirements file.
pub fn install(
    uv: &str,
    scratch: &Path,
    packages: &[LockedPackage],
    index: &str,
    target: &InstallTarget<'_>,
) -> Result<(), BuildError> {
    if packages.is_empty() {
        return Ok(());
    }
    let file = scratch.join(format!("requirements-{}.txt", uuid::Uuid::new_v4()));
    fs::write(&file, requirements(packages)).map_err(|e| BuildError::Cache {
        path: file.clone(),
        reason: e.to_string(),
    })?;
    let mut cmd = crate::uv::command(uv, scratch);
    cmd.args([
        "pip",
        "install",
        "--quiet",
        "--no-config",
        "--default-index",
        index,
    ]);
    match target {
        InstallTarget::Venv(python) => {
            cmd.arg("--python").arg(python);
        }
        InstallTarget::Directory {
            dir,
            version,
            platform,
            compile_with,
        } => {
            cmd.arg("--target").arg(dir).args([
                "--python-version",
                version,
                "--python-platform",
                platform,
            ]);
            if let Some(python) = compile_with {
                cmd.arg("--python").arg(python).arg("--compile-bytecode");
            }
        }
    }
    cmd.args([
        "--require-hashes",
        "--no-deps",
        "--only-binary",
        ":all:",
        "-r",
    ])
    .arg(&file);
    let result = run_step(cmd, "installing the pinned packages", uv);
    let _ = fs::remove_file(&file);
    result
}

/// Runs one uv step; on failure its explanation (which names the package or
/// the cause) becomes the error.
pub fn run_step(mut cmd: Command, step: &str, uv: &str) -> Result<(), BuildError> {
    let out = cmd.output().map_err(|e| BuildError::Uv {
        uv: uv.into(),
        reason: e.to_string(),
    })?;
    if out.status.success() {
        return Ok(());
    }
    let mut detail = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if detail.is_empty() {
        detail = String::from_utf8_lossy(&out.stdout).trim().to_string();
    }
    if detail.is_empty() {
        detail = format!("{uv} exited with {}", out.status);
    }
    Err(BuildError::Step {
        step: step.into(),
        detail,
    })
}
