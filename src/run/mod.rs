//! The run stage: execute a script in its environment, in a container or
//! the local sandbox, under hard limits, and report exactly what happened.
//!
//! An [`ExecRequest`] (the script's bytes, its environment handle from the
//! build stage, the limits from the policy's profile) goes to a backend —
//! [`local`] (bubblewrap on the host, under the [`seccomp`] filter) or [`docker`] (a container per run) —
//! with the run's [`cancel::CancelToken`] and the caller's
//! [`output::OutputSink`], and the backend returns an
//! [`outcome::Execution`]; [`outcome::RunOutcome`] is what a run reports.
//! The whole pipeline (validate, build, execute) is [`crate::pipeline`].

pub mod cancel;
pub mod capture;
pub mod cgroup;
pub mod docker;
pub mod gvisor;
pub mod init;
pub mod limits;
pub mod local;
pub mod outcome;
pub mod output;
pub mod seccomp;
pub mod view;

use std::path::PathBuf;

use crate::env::EnvHandle;
use limits::Limits;

/// What a script reads on its standard input.
#[derive(Debug, Clone, Default)]
pub enum Stdin {
    /// Nothing (end of file at once).
    #[default]
    Empty,
    /// These bytes.
    Bytes(Vec<u8>),
    /// This file's contents.
    File(PathBuf),
}

impl Stdin {
    /// The bytes to feed, read whole (the docker backend writes them to
    /// the container), or `None` for no input.
    pub fn read(&self) -> Result<Option<Vec<u8>>, RunError> {
        match self {
            Stdin::Empty => Ok(None),
            Stdin::Bytes(b) => Ok(Some(b.clone())),
            Stdin::File(path) => std::fs::read(path)
                .map(Some)
                .map_err(|e| RunError::Io(format!("{}: {e}", path.display()))),
        }
    }

    /// A file to connect to the script's stdin, or `None` for no input:
    /// the file itself, or an unlinked temporary file holding the bytes
    /// (a file, not a pipe, so no writer thread can block).
    pub fn as_file(&self) -> Result<Option<std::fs::File>, RunError> {
        use std::io::{Seek, Write};
        match self {
            Stdin::Empty => Ok(None),
            Stdin::File(path) => std::fs::File::open(path)
                .map(Some)
                .map_err(|e| RunError::Io(format!("{}: {e}", path.display()))),
            Stdin::Bytes(bytes) => {
                let mut file = tempfile::tempfile()
                    .map_err(|e| RunError::Io(format!("a file for stdin: {e}")))?;
                file.write_all(bytes)
                    .and_then(|()| file.rewind())
                    .map_err(|e| RunError::Io(format!("writing stdin: {e}")))?;
                Ok(Some(file))
            }
        }
    }
}

/// Everything a backend needs for one run.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    /// The script's bytes (read once by scriptbox; the sandbox gets a copy).
    pub script: Vec<u8>,
    /// Its file name inside the sandbox (e.g. `bot.py`).
    pub script_name: String,
    /// Arguments after the script.
    pub args: Vec<String>,
    /// What the script reads on stdin.
    pub stdin: Stdin,
    /// The limits.
    pub limits: Limits,
    /// The environment from the build stage.
    pub env: EnvHandle,
    /// Where runs keep machine-wide state (`<cache>/runs`: uid claims).
    pub state_dir: PathBuf,
    /// The profile's egress allowlist (`network = "allowlist"`); `None`
    /// leaves the sandbox without any network.
    pub egress: Option<crate::egress::EgressConfig>,
}

/// Why a run could not happen (the `error` status).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// bubblewrap is missing.
    #[error(
        "bubblewrap (bwrap) is not installed, so the local sandbox cannot start: install it (`apt-get install bubblewrap`), use --backend docker, or pass --unsandboxed to run without a sandbox"
    )]
    NoBwrap,
    /// The profile asks for gVisor and `runsc` is missing.
    #[error(
        "the profile has isolation = \"gvisor\", but runsc (gVisor) is not installed: install it (`apt-get install runsc`, or scripts/setup), or use a profile with isolation = \"namespaces\""
    )]
    NoRunsc,
    /// gVisor on the local backend needs root.
    #[error(
        "the profile has isolation = \"gvisor\", and runsc on the local backend needs root (it sets up the sandbox's namespaces and cgroup): run scriptbox as root, use --backend docker (the engine's runsc runtime), or use a profile with isolation = \"namespaces\""
    )]
    GvisorNeedsRoot,
    /// The environment is not usable by this backend.
    #[error("environment: {0}")]
    Environment(String),
    /// The Docker engine failed.
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    /// An egress allowlist needs a sandbox to enforce it: without one the
    /// script would reach every address the host can.
    #[error(
        "--unsandboxed cannot enforce an egress allowlist (the profile has network = \"allowlist\"): run it sandboxed, or use a profile with network = \"none\""
    )]
    EgressUnsandboxed,
    /// The run's egress proxy could not start.
    #[error(transparent)]
    Egress(#[from] crate::egress::EgressError),
    /// The local sandbox's seccomp filter cannot be applied (the run
    /// never starts without it).
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    /// A local operation failed.
    #[error("{0}")]
    Io(String),
}

/// A private directory holding only the script, read-only (0444 in a
/// 0755 directory, so the sandbox's unprivileged uid can read it): what
/// both backends mount at `/sandbox`. Removed when dropped.
pub fn script_dir(req: &ExecRequest) -> Result<tempfile::TempDir, RunError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = crate::dirs::temp_dir_with_mode("scriptbox-run-", 0o755)
        .map_err(|e| RunError::Io(format!("creating the run directory: {e}")))?;
    let script = dir.path().join(&req.script_name);
    std::fs::write(&script, &req.script)
        .and_then(|()| std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o444)))
        .map_err(|e| RunError::Io(format!("writing the script: {e}")))?;
    Ok(dir)
}

/// The words that drop a root process to `uid` (its gid too, no groups,
/// no capabilities in any set, no new privileges) and then execute the
/// command after them: for a sandbox whose first command runs as root
/// (the egress relay needs root's port 53, then the script must have
/// nothing).
pub fn drop_to_words(uid: u32) -> Vec<String> {
    let id = uid.to_string();
    [
        "/usr/bin/setpriv",
        "--reuid",
        &id,
        "--regid",
        &id,
        "--clear-groups",
        "--no-new-privs",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--",
    ]
    .iter()
    .map(ToString::to_string)
    .collect()
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

/// The `scriptbox` binary that sandboxes start for their own helpers (the
/// egress relay, the init): `SCRIPTBOX_SELF_BIN` when set, else this
/// process's executable when it is `scriptbox`, else a `scriptbox` beside
/// it or one directory up (a test binary in `target/<profile>/deps/`).
pub fn sandbox_binary() -> Result<PathBuf, RunError> {
    if let Some(path) = std::env::var_os("SCRIPTBOX_SELF_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()
        .map_err(|e| RunError::Io(format!("finding the scriptbox binary: {e}")))?;
    if exe.file_name().is_some_and(|n| n == "scriptbox") {
        return Ok(exe);
    }
    let beside = exe.parent().map(|dir| dir.join("scriptbox"));
    let above = exe
        .parent()
        .and_then(|dir| dir.parent())
        .map(|dir| dir.join("scriptbox"));
    [beside, above]
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .ok_or_else(|| {
            RunError::Io(format!(
                "no scriptbox binary beside {} for the sandbox's helpers: set SCRIPTBOX_SELF_BIN to one",
                exe.display()
            ))
        })
}

/// Refusal lines (one per target and reason) added to a run's stderr at
/// most; the rest are counted.
const MAX_REFUSAL_LINES: usize = 20;

/// Ends a run's egress: stops its proxy, puts the report in `exec`, and
/// adds a line per refused target and reason to the script's stderr (and
/// the sink), so a refusal is never silent.
pub fn finish_egress(
    session: Option<crate::egress::EgressSession>,
    exec: &mut outcome::Execution,
    sink: &dyn output::OutputSink,
) {
    let Some(session) = session else {
        return;
    };
    let report = session.finish();
    let lines = report.refusal_lines();
    let mut text = String::new();
    if !lines.is_empty() && !exec.stderr.is_empty() && !exec.stderr.ends_with(b"\n") {
        text.push('\n');
    }
    for line in lines.iter().take(MAX_REFUSAL_LINES) {
        text.push_str(line);
        text.push('\n');
    }
    if lines.len() > MAX_REFUSAL_LINES {
        text.push_str(&format!(
            "scriptbox: egress refused {} more targets (see the outcome's egress list)\n",
            lines.len() - MAX_REFUSAL_LINES
        ));
    }
    if !text.is_empty() {
        sink.output(output::Stream::Stderr, text.as_bytes());
        exec.stderr.extend_from_slice(text.as_bytes());
    }
    exec.egress = Some(report);
}
