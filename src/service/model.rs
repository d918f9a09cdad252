//! The API's JSON types (v1), each with its OpenAPI schema generated from
//! the code: what clients send, the run record they get back, errors.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::run::outcome::Status;

/// A run's status: `queued`, `running`, one of the nine final statuses of
/// `scriptbox run`, `cancelled` (by its caller) or `lost` (its server
/// stopped while it ran; it is never re-run by itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    /// Waiting for a worker.
    Queued,
    /// Running now.
    Running,
    /// The script exited 0.
    Succeeded,
    /// The script exited non-zero.
    Failed,
    /// scriptbox could not run it (`message`).
    Error,
    /// Validation or the policy refused it; nothing ran.
    Rejected,
    /// Wall-clock limit.
    TimedOut,
    /// CPU-time limit.
    CpuLimit,
    /// Memory limit.
    MemoryLimit,
    /// Output limit.
    OutputLimit,
    /// Ended by a signal.
    Killed,
    /// Cancelled by its caller.
    Cancelled,
    /// Its server stopped while it ran.
    Lost,
}

impl RunStatus {
    /// Every status, in the order of the API's documentation.
    pub const ALL: [RunStatus; 13] = [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Error,
        RunStatus::Rejected,
        RunStatus::TimedOut,
        RunStatus::CpuLimit,
        RunStatus::MemoryLimit,
        RunStatus::OutputLimit,
        RunStatus::Killed,
        RunStatus::Cancelled,
        RunStatus::Lost,
    ];

    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Error => "error",
            RunStatus::Rejected => "rejected",
            RunStatus::TimedOut => "timed-out",
            RunStatus::CpuLimit => "cpu-limit",
            RunStatus::MemoryLimit => "memory-limit",
            RunStatus::OutputLimit => "output-limit",
            RunStatus::Killed => "killed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Lost => "lost",
        }
    }

    /// The status named `s` (an unknown name reads as `error`: the store
    /// only holds names it wrote).
    pub fn parse(s: &str) -> RunStatus {
        Self::from_name(s).unwrap_or(RunStatus::Error)
    }

    /// The status named `s`, if it is one.
    pub fn from_name(s: &str) -> Option<RunStatus> {
        RunStatus::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// True once the run has ended.
    pub fn is_final(self) -> bool {
        !matches!(self, RunStatus::Queued | RunStatus::Running)
    }
}

impl From<Status> for RunStatus {
    fn from(s: Status) -> RunStatus {
        match s {
            Status::Succeeded => RunStatus::Succeeded,
            Status::Failed => RunStatus::Failed,
            Status::Killed => RunStatus::Killed,
            Status::TimedOut => RunStatus::TimedOut,
            Status::CpuLimit => RunStatus::CpuLimit,
            Status::MemoryLimit => RunStatus::MemoryLimit,
            Status::OutputLimit => RunStatus::OutputLimit,
            Status::Rejected => RunStatus::Rejected,
            Status::Error => RunStatus::Error,
            Status::Cancelled => RunStatus::Cancelled,
        }
    }
}

/// Where a run executes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BackendName {
    /// The local sandbox (bubblewrap).
    Local,
    /// A container per run.
    Docker,
}

/// `POST /v1/runs`: a script to run.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitRun {
    /// The script's source text (at most 16 MiB).
    #[schema(max_length = 16777216)]
    pub script: String,
    /// Its file name (default `script.py`); only the name is used.
    #[serde(default)]
    #[schema(max_length = 255)]
    pub filename: Option<String>,
    /// A policy in the server's policy directory (default `default`).
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub policy: Option<String>,
    /// The policy's profile whose limits apply (default `default`).
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub profile: Option<String>,
    /// Where it runs (default `local`).
    #[serde(default)]
    pub backend: Option<BackendName>,
    /// The script's arguments (at most 1,000, each at most 64 KiB, no NUL).
    #[serde(default)]
    #[schema(max_items = 1000)]
    pub args: Vec<String>,
    /// Text for the script's standard input (at most 16 MiB).
    #[serde(default)]
    #[schema(max_length = 16777216)]
    pub stdin: Option<String>,
    /// The caller's labels (filterable with `GET /v1/runs?label=key=value`):
    /// at most 32, keys of 1 to 64 bytes without `=`, values up to 256 bytes.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// A retry with the same key and the same body returns the first run
    /// instead of submitting another; the same key with another body is 409.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 255)]
    pub idempotency_key: Option<String>,
    /// When the run ends, its final record is POSTed here, signed with the
    /// tenant's secret (see the README, "Callbacks"). `http` only (https
    /// is not supported yet); the host must be allowed by the server's `--callback-allow`, and
    /// loopback, private and metadata addresses are refused unless a CIDR
    /// there opens them. The tenant needs a secret (`scriptbox token secret`).
    #[serde(default)]
    #[schema(format = "uri", max_length = 2048)]
    pub callback_url: Option<String>,
    /// When the server or worker running it dies (or a worker loses the
    /// database for longer than its lease), queue it again once instead of
    /// ending it `lost`. Off by default: scripts may have side effects.
    #[serde(default)]
    pub retry_on_lost: bool,
}

/// `POST /v1/validate`: a script to validate without running it.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateScript {
    /// The script's source text (at most 16 MiB).
    #[schema(max_length = 16777216)]
    pub script: String,
    /// Its file name (default `script.py`).
    #[serde(default)]
    #[schema(max_length = 255)]
    pub filename: Option<String>,
    /// The policy to judge it by (default `default`).
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub policy: Option<String>,
}

/// The policy a run was judged by.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PolicyRef {
    /// Its name.
    pub name: String,
    /// Its digest when the run was submitted.
    pub digest: String,
}

/// Seconds spent in each stage.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Durations {
    /// Validation.
    pub validate: f64,
    /// Building or finding the environment.
    pub build: f64,
    /// The execution.
    pub run: f64,
}

/// The environment a run used.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EnvRef {
    /// Its key.
    pub key: String,
    /// `venv` or `image`.
    pub kind: String,
    /// True when it already existed.
    pub cache_hit: bool,
}

/// A run record (schema `scriptbox.run-record/1`): who, what, when, and,
/// once it ended, the outcome fields of `scriptbox.run/1`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunRecord {
    /// `scriptbox.run-record/1`.
    pub schema: String,
    /// The run's id.
    pub id: String,
    /// Its tenant.
    pub tenant: String,
    /// Its status.
    pub status: RunStatus,
    /// When it was submitted (RFC 3339, UTC).
    pub created_at: String,
    /// When it started.
    pub started_at: Option<String>,
    /// When it ended.
    pub finished_at: Option<String>,
    /// The script's file name.
    pub filename: String,
    /// sha256 of the script.
    pub script_sha256: String,
    /// The policy it was judged by.
    pub policy: PolicyRef,
    /// The profile whose limits applied.
    pub profile: String,
    /// `local` or `docker`.
    pub backend: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// The caller's labels.
    pub labels: BTreeMap<String, String>,
    /// How many times it was started (0 while queued).
    pub attempts: i64,
    /// The script's exit code, when it exited.
    pub exit_code: Option<i32>,
    /// The signal that ended it.
    pub signal: Option<String>,
    /// Its stdout (UTF-8, invalid bytes replaced); in `GET /v1/runs/{id}`
    /// only, once it ended.
    pub stdout: Option<String>,
    /// Its stderr, likewise.
    pub stderr: Option<String>,
    /// stdout was cut at the output limit.
    pub stdout_truncated: bool,
    /// stderr was cut at the output limit.
    pub stderr_truncated: bool,
    /// Seconds per stage, once it ended.
    pub durations: Option<Durations>,
    /// Peak memory in bytes, where known.
    pub peak_memory_bytes: Option<u64>,
    /// The environment, when one was reached.
    pub env: Option<EnvRef>,
    /// How limits were enforced.
    pub enforcement: Vec<String>,
    /// For `rejected`, `error`, `cancelled` and `lost`: why.
    pub message: Option<String>,
    /// For a rejection over missing packages: the pip command.
    pub pip_command: Option<String>,
    /// The callback, when the run was submitted with a `callback_url`.
    pub callback: Option<CallbackInfo>,
}

/// Where a callback delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CallbackState {
    /// The run has not ended yet.
    Waiting,
    /// Due, being delivered, or waiting to be retried.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Every attempt failed, or the address was refused.
    Failed,
}

/// A run's callback: where it goes and every attempt made.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CallbackInfo {
    /// The URL the final record is POSTed to.
    pub url: String,
    /// Where delivery stands.
    pub state: CallbackState,
    /// Every attempt made, oldest first.
    pub attempts: Vec<CallbackAttempt>,
    /// When the next attempt is due (RFC 3339), while `pending`.
    pub next_attempt_at: Option<String>,
}

/// One delivery attempt of a callback.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CallbackAttempt {
    /// 1 for the first attempt.
    pub attempt: u32,
    /// When it was made (RFC 3339, UTC).
    pub at: String,
    /// The address it connected to (after resolving and checking), if it
    /// got that far.
    pub address: Option<String>,
    /// The receiver's HTTP status, if it answered.
    pub status_code: Option<u16>,
    /// Why it failed (no answer, a refused address, a non-2xx status).
    pub error: Option<String>,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
}

/// One page of `GET /v1/runs`, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunPage {
    /// The runs (without stdout and stderr).
    pub runs: Vec<RunRecord>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// The body of every error: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable machine-readable code (`bad-request`, `unauthorized`,
    /// `not-found`, `idempotency-conflict`, `queue-full`, ...).
    pub code: String,
    /// A one-line explanation for people.
    pub message: String,
}

/// A policy the server holds.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PolicyInfo {
    /// Its name (`policy` in requests).
    pub name: String,
    /// Its digest.
    pub digest: String,
    /// Whether it has a lock (runs need one).
    pub locked: bool,
    /// Its Python, `3.X`.
    pub python: String,
    /// Whether installable packages are installed without asking.
    pub auto_install: bool,
    /// Preinstalled packages.
    pub preinstalled: Vec<String>,
    /// How many packages it allows.
    pub allowed: usize,
    /// Its profiles' names.
    pub profiles: Vec<String>,
}

/// `GET /v1/policies`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PolicyList {
    /// The policies that load; broken files are left out (and logged).
    pub policies: Vec<PolicyInfo>,
}

/// One Server-Sent Event of `GET /v1/runs/{id}/logs`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LogEvent {
    /// The chunk's number (resume after it with `Last-Event-ID`); on
    /// `end`, the number of the last chunk.
    pub id: String,
    /// `stdout`, `stderr` or `end`.
    #[schema(pattern = "^(stdout|stderr|end)$")]
    pub event: String,
    /// For `stdout` and `stderr`, `{"text": "..."}`; for `end`, the run
    /// record, as JSON text.
    pub data: String,
}

/// `GET /v1/health`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`, or `unavailable` when the store does not answer.
    pub status: String,
    /// scriptbox's version.
    pub version: String,
    /// Runs queued.
    pub queued: i64,
    /// Runs running on this server.
    pub running: i64,
}
