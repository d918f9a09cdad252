//! The run stage: execute a script in its environment, in a container or
//! the local sandbox, under hard limits, and report exactly what happened.
//!
//! A [`RunRequest`] (the script's bytes, its environment handle from the
//! build stage, the limits from the policy's profile) goes to a backend —
//! [`local`] (bubblewrap on the host) or [`docker`] (a container per run) —
//! which returns an [`outcome::Execution`]; [`outcome::RunOutcome`] is what
//! `scriptbox run` reports.

pub mod cancel;
pub mod capture;
pub mod cgroup;
pub mod docker;
pub mod limits;
pub mod local;
pub mod outcome;

use std::path::PathBuf;

use crate::env::EnvHandle;
use limits::Limits;

/// Everything a backend needs for one run.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The script's bytes (read once by scriptbox; the sandbox gets a copy).
    pub script: Vec<u8>,
    /// Its file name inside the sandbox (e.g. `bot.py`).
    pub script_name: String,
    /// Arguments after the script.
    pub args: Vec<String>,
    /// A file to connect to the script's stdin (else it reads nothing).
    pub stdin: Option<PathBuf>,
    /// The limits.
    pub limits: Limits,
    /// The environment from the build stage.
    pub env: EnvHandle,
    /// Where runs keep machine-wide state (`<cache>/runs`: uid claims).
    pub state_dir: PathBuf,
}

/// Why a run could not happen (the `error` status).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// bubblewrap is missing.
    #[error(
        "bubblewrap (bwrap) is not installed, so the local sandbox cannot start: install it (`apt-get install bubblewrap`), use --backend docker, or pass --unsandboxed to run without a sandbox"
    )]
    NoBwrap,
    /// The environment is not usable by this backend.
    #[error("environment: {0}")]
    Environment(String),
    /// The Docker engine failed.
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    /// A local operation failed.
    #[error("{0}")]
    Io(String),
}

/// A private directory holding only the script, read-only (0444 in a
/// 0755 directory, so the sandbox's unprivileged uid can read it): what
/// both backends mount at `/sandbox`. Removed when dropped.
pub fn script_dir(req: &RunRequest) -> Result<tempfile::TempDir, RunError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("scriptbox-run-")
        .tempdir()
        .map_err(|e| RunError::Io(format!("creating the run directory: {e}")))?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .map_err(|e| RunError::Io(e.to_string()))?;
    let script = dir.path().join(&req.script_name);
    std::fs::write(&script, &req.script)
        .and_then(|()| std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o444)))
        .map_err(|e| RunError::Io(format!("writing the script: {e}")))?;
    Ok(dir)
}

/// A file name safe to use inside the sandbox for a script at `path`.
pub fn sandbox_name(path: &std::path::Path) -> String {
    let name: String = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name.starts_with('.') {
        "script.py".into()
    } else {
        name
    }
}
