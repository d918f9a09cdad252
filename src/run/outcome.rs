//! What a run produced: exactly one [`Status`], and everything the backend
//! needs to tell its user what happened (schema `scriptbox.run/1`).

use serde::Serialize;

/// How a run ended. Exactly one applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// The script exited 0.
    Succeeded,
    /// The script exited non-zero.
    Failed,
    /// A signal ended it (named in `signal`), not one of our limits.
    Killed,
    /// It ran past the wall-clock limit.
    TimedOut,
    /// It used up its CPU time.
    CpuLimit,
    /// It ran out of memory under the limit.
    MemoryLimit,
    /// It wrote more output than the limit.
    OutputLimit,
    /// Validation or the policy refused it; nothing ran.
    Rejected,
    /// scriptbox itself failed (the cause is in `message`).
    Error,
    /// Its caller cancelled it through the library's cancel token (the
    /// service's cancel); the CLI reports a signal to it as `killed`.
    Cancelled,
}

impl Status {
    /// The exit code of `scriptbox run` for this status (README: exit codes).
    pub fn exit_code(self) -> u8 {
        match self {
            Status::Succeeded => 0,
            Status::Failed => 1,
            Status::Error => 2,
            Status::Rejected => 3,
            Status::TimedOut => 4,
            Status::CpuLimit => 5,
            Status::MemoryLimit => 6,
            Status::OutputLimit => 7,
            Status::Killed | Status::Cancelled => 8,
        }
    }

    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Killed => "killed",
            Status::TimedOut => "timed-out",
            Status::CpuLimit => "cpu-limit",
            Status::MemoryLimit => "memory-limit",
            Status::OutputLimit => "output-limit",
            Status::Rejected => "rejected",
            Status::Error => "error",
            Status::Cancelled => "cancelled",
        }
    }
}

/// What a backend observed of one execution.
#[derive(Debug, Clone, Default)]
pub struct Execution {
    /// The status, when the backend could decide it (else from the exit).
    pub status: Option<Status>,
    /// The exit code, when the script exited.
    pub exit_code: Option<i32>,
    /// The signal that ended it, by name (`SIGKILL`).
    pub signal: Option<String>,
    /// Captured stdout (at most the output limit).
    pub stdout: Vec<u8>,
    /// Captured stderr.
    pub stderr: Vec<u8>,
    /// True when stdout was cut at the limit.
    pub stdout_truncated: bool,
    /// True when stderr was cut at the limit.
    pub stderr_truncated: bool,
    /// Wall-clock seconds of the execution.
    pub seconds: f64,
    /// Peak memory in bytes, where the backend can measure it.
    pub peak_memory: Option<u64>,
    /// How the limits were enforced (`cgroup`, `rlimit`, `engine`).
    pub enforcement: Vec<String>,
    /// What the egress proxy saw, for a `network = "allowlist"` profile.
    pub egress: Option<crate::egress::EgressReport>,
}

impl Execution {
    /// Records that the run was stopped because it was cancelled: by a
    /// signal to scriptbox, `killed` naming that signal (not the SIGKILL
    /// the backend sent); by a caller, `cancelled`.
    pub fn cancelled(&mut self, reason: crate::run::cancel::CancelReason) {
        use crate::run::cancel::CancelReason;
        self.exit_code = None;
        (self.status, self.signal) = match reason {
            CancelReason::Signal(sig) => (Some(Status::Killed), Some(signal_name(sig))),
            CancelReason::Requested => (Some(Status::Cancelled), None),
        };
    }

    /// The status: the backend's, else from how the process ended.
    pub fn status(&self) -> Status {
        if let Some(s) = self.status {
            return s;
        }
        match (self.exit_code, &self.signal) {
            (Some(0), _) => Status::Succeeded,
            (Some(_), _) => Status::Failed,
            (None, Some(_)) => Status::Killed,
            (None, None) => Status::Error,
        }
    }
}

/// Seconds spent in each stage.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Durations {
    /// Validation.
    pub validate: f64,
    /// Building or finding the environment.
    pub build: f64,
    /// The execution itself.
    pub run: f64,
}

/// The environment a run used.
#[derive(Debug, Clone, Serialize)]
pub struct EnvSummary {
    /// Its key.
    pub key: String,
    /// `venv` or `image`.
    pub kind: String,
    /// True when it already existed.
    pub cache_hit: bool,
}

/// The outcome of `scriptbox run`, schema `scriptbox.run/1`.
#[derive(Debug, Clone, Serialize)]
pub struct RunOutcome {
    /// `scriptbox.run/1`.
    pub schema: &'static str,
    /// The status.
    pub status: Status,
    /// The script's exit code, when it exited.
    pub exit_code: Option<i32>,
    /// The signal that ended it, by name.
    pub signal: Option<String>,
    /// stdout (UTF-8, invalid bytes replaced).
    pub stdout: String,
    /// stderr (UTF-8, invalid bytes replaced).
    pub stderr: String,
    /// stdout was cut at the output limit.
    pub stdout_truncated: bool,
    /// stderr was cut at the output limit.
    pub stderr_truncated: bool,
    /// Seconds per stage.
    pub durations: Durations,
    /// Peak memory in bytes, where known.
    pub peak_memory_bytes: Option<u64>,
    /// The environment, when one was reached.
    pub env: Option<EnvSummary>,
    /// `docker` or `local`.
    pub backend: String,
    /// How limits were enforced.
    pub enforcement: Vec<String>,
    /// For `rejected` and `error`: why.
    pub message: Option<String>,
    /// For `rejected` because of missing packages: the pip command.
    pub pip_command: Option<String>,
    /// For a `network = "allowlist"` profile: every connection the script
    /// opened through the egress proxy, allowed or refused and why, and
    /// the bytes each way (absent when the profile has no network).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress: Option<crate::egress::EgressReport>,
}

impl RunOutcome {
    /// An outcome where nothing ran.
    pub fn without_execution(status: Status, backend: &str, message: String) -> RunOutcome {
        RunOutcome {
            schema: "scriptbox.run/1",
            status,
            exit_code: None,
            signal: None,
            stdout: String::new(),
            stderr: String::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            durations: Durations::default(),
            peak_memory_bytes: None,
            env: None,
            backend: backend.into(),
            enforcement: Vec::new(),
            message: Some(message),
            pip_command: None,
            egress: None,
        }
    }

    /// The outcome of an execution.
    pub fn from_execution(exec: Execution, backend: &str) -> RunOutcome {
        RunOutcome {
            schema: "scriptbox.run/1",
            status: exec.status(),
            exit_code: exec.exit_code,
            signal: exec.signal.clone(),
            stdout: String::from_utf8_lossy(&exec.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&exec.stderr).into_owned(),
            stdout_truncated: exec.stdout_truncated,
            stderr_truncated: exec.stderr_truncated,
            durations: Durations {
                run: exec.seconds,
                ..Durations::default()
            },
            peak_memory_bytes: exec.peak_memory,
            env: None,
            backend: backend.into(),
            enforcement: exec.enforcement,
            message: None,
            pip_command: None,
            egress: exec.egress,
        }
    }
}

/// The name of signal `sig` (`SIGKILL`), or its number.
pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        _ => return format!("signal {sig}"),
    };
    name.to_string()
}
