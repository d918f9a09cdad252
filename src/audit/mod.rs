//! The audit log: every install decision and every run's final status, one
//! JSON line each (schema `scriptbox.audit/1`, see [`record`]).
//!
//! Administrators read it to see which packages scripts ask for and are
//! refused (`scriptbox stats`, [`stats`]). Records are data, not cache: the
//! log lives in the data directory ([`crate::dirs::data_dir`]) unless
//! `SCRIPTBOX_AUDIT_LOG` names a file. Many processes append to it at once
//! and it is rotated by size ([`mod@file`]).
//!
//! Auditing never fails the work it records: a log that cannot be written
//! costs one warning on stderr per process, and the validation, build or run
//! goes on.
//!
//! The library records at the points every edge goes through: validation
//! under a policy records its decisions when [`ValidateOptions::audit`] is
//! set ([`crate::validate::validate_file`]), [`crate::env::build::ensure`]
//! records what it installed when its site has a [`BuildAudit`], and
//! [`crate::pipeline`] records each run's final status when its request has
//! a log.
//!
//! [`ValidateOptions::audit`]: crate::validate::ValidateOptions::audit

pub mod file;
pub mod record;
pub mod stats;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

pub use file::Rotation;
pub use record::{Decision, Event, Record, SCHEMA};

use crate::env::{BuildError, EnvHandle};
use crate::policy::Policy;
use crate::policy::verdict::PolicyStatus;
use crate::run::outcome::RunOutcome;
use crate::validate::ValidationReport;

/// The file name of the log in the data directory.
pub const LOG_FILE: &str = "audit.jsonl";

/// Environment variable naming the log file.
pub const ENV_LOG: &str = "SCRIPTBOX_AUDIT_LOG";
/// Environment variable: size at which the log is rotated.
pub const ENV_MAX_SIZE: &str = "SCRIPTBOX_AUDIT_MAX_SIZE";
/// Environment variable: how many rotated files are kept.
pub const ENV_KEEP: &str = "SCRIPTBOX_AUDIT_KEEP";

/// Most rotated files that may be kept.
pub const MAX_KEEP: u32 = 1000;

/// Why the audit log could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Neither `SCRIPTBOX_AUDIT_LOG` nor a data directory is known.
    #[error(
        "no place for the audit log (set SCRIPTBOX_AUDIT_LOG, SCRIPTBOX_DATA_DIR, XDG_DATA_HOME or HOME)"
    )]
    NoLocation,
    /// The file could not be opened, written or rotated.
    #[error("audit log {}: {source}", path.display())]
    Io {
        /// The log file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The policy a record is about: its name and semantic digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRef {
    /// The policy's name (its file stem).
    pub name: String,
    /// [`Policy::digest`].
    pub digest: String,
}

impl From<&Policy> for PolicyRef {
    fn from(policy: &Policy) -> Self {
        PolicyRef {
            name: policy.name.clone(),
            digest: policy.digest(),
        }
    }
}

/// Where a build's records go, and the script it is for (if any).
#[derive(Debug, Clone, Copy)]
pub struct BuildAudit<'a> {
    /// The log.
    pub log: &'a AuditLog,
    /// sha256 of the script the environment is for; `None` for packages
    /// named directly.
    pub script_sha256: Option<&'a str>,
}

/// Whether this process has already warned about an unwritable log.
static WARNED: AtomicBool = AtomicBool::new(false);

/// Prints `message` as a warning on stderr, the first time only.
fn warn_once(message: &str) {
    if !WARNED.swap(true, Ordering::Relaxed) {
        eprintln!("scriptbox: warning: {message} (audit records are not being kept)");
    }
}

/// An audit log to append records to, shared by every thread of a process.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    rotation: Rotation,
    origin: String,
    file: Mutex<Option<file::LogFile>>,
}

impl AuditLog {
    /// A log at `path`, written by the edge named `origin` (`validate`,
    /// `env-build`, `run`, ...). Nothing is opened until the first record.
    pub fn new(path: impl Into<PathBuf>, rotation: Rotation, origin: &str) -> AuditLog {
        AuditLog {
            path: path.into(),
            rotation,
            origin: origin.to_string(),
            file: Mutex::new(None),
        }
    }

    /// The log configured by the environment: `$SCRIPTBOX_AUDIT_LOG`, else
    /// `audit.jsonl` in the data directory, rotated per
    /// `SCRIPTBOX_AUDIT_MAX_SIZE` (default 64M) and `SCRIPTBOX_AUDIT_KEEP`
    /// (default 5). A bad knob is a one-line warning and its default. `None`
    /// (after a warning) when there is no place for the log.
    pub fn from_env(origin: &str) -> Option<AuditLog> {
        let Some(path) = default_path() else {
            warn_once(&AuditError::NoLocation.to_string());
            return None;
        };
        Some(AuditLog::new(path, rotation_from_env(), origin))
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The edge this log's records name as their origin.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Appends `records` as whole lines, in one write; then rotates if the
    /// file has reached its limit.
    pub fn append(&self, records: &[Record<'_>]) -> Result<(), AuditError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut lines = Vec::with_capacity(records.len() * 400);
        for record in records {
            record.write_line(&mut lines);
        }
        let io = |source| AuditError::Io {
            path: self.path.clone(),
            source,
        };
        // A writer that panicked mid-append left nothing half-done that
        // matters here: the next append re-checks everything.
        let mut guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(file::LogFile::open(&self.path).map_err(io)?);
        }
        let log = guard.as_mut().expect("opened above");
        log.append(&lines, self.rotation).map_err(io)
    }

    /// [`append`](Self::append), turning a failure into the process's one
    /// warning: what is being recorded never fails because of the log.
    pub fn record(&self, records: &[Record<'_>]) {
        if let Err(e) = self.append(records) {
            warn_once(&e.to_string());
        }
    }

    /// Records the policy decisions of a validation: each third-party
    /// dependency judged `installable`, `forbidden` or `unknown`, and each
    /// required import no distribution is known for (`unknown`, named by its
    /// module). `available` (preinstalled) dependencies are not recorded:
    /// nothing needs installing or deciding for them. Nothing is recorded
    /// for a validation without a policy.
    pub fn record_decisions(&self, report: &ValidationReport) {
        let Some(policy) = &report.policy else {
            return;
        };
        let time = record::now();
        let specifiers: Vec<Option<String>> = report
            .dependencies
            .iter()
            .map(|d| d.requested.as_ref().map(ToString::to_string))
            .collect();
        let base = |decision: Decision| {
            let mut r = Record::new(&time, Event::Decision, &self.origin);
            r.script_sha256 = report.script_sha256.as_deref();
            r.policy = Some(&policy.name);
            r.policy_digest = Some(&policy.digest);
            r.decision = Some(decision);
            r
        };
        let mut records = Vec::new();
        for (dep, specifier) in report.dependencies.iter().zip(&specifiers) {
            let Some(judgement) = &dep.policy else {
                continue;
            };
            let decision = match judgement.status {
                PolicyStatus::Available => continue,
                PolicyStatus::Installable => Decision::Installable,
                PolicyStatus::Forbidden => Decision::Forbidden,
                PolicyStatus::Unknown => Decision::Unknown,
            };
            let mut r = base(decision);
            r.package = Some(&dep.normalized);
            r.version = specifier.as_deref();
            r.reason = Some(&judgement.reason);
            records.push(r);
        }
        let reasons: Vec<String> = report
            .unresolved
            .iter()
            .map(|module| {
                let note = report
                    .imports
                    .iter()
                    .find(|i| &i.site.module == module)
                    .and_then(|i| i.note.as_deref());
                note.map_or_else(
                    || format!("no known distribution provides the module '{module}'"),
                    str::to_string,
                )
            })
            .collect();
        for (module, reason) in report.unresolved.iter().zip(&reasons) {
            let mut r = base(Decision::Unknown);
            r.package = Some(module);
            r.reason = Some(reason);
            records.push(r);
        }
        self.record(&records);
    }

    /// Records a build's outcome: `installed` for each package of each layer
    /// the build made (cache hits record nothing), or `install-failed` for
    /// each package of the layer that failed, with the error as the reason
    /// (one line with no package when the failure was no layer's own, such
    /// as uv missing). `script_sha256` names the script it was built for,
    /// if any.
    pub fn record_build(
        &self,
        policy: &PolicyRef,
        script_sha256: Option<&str>,
        result: Result<&EnvHandle, &BuildError>,
    ) {
        let time = record::now();
        let base = |decision: Decision| {
            let mut r = Record::new(&time, Event::Decision, &self.origin);
            r.script_sha256 = script_sha256;
            r.policy = Some(&policy.name);
            r.policy_digest = Some(&policy.digest);
            r.decision = Some(decision);
            r
        };
        let mut records = Vec::new();
        match result {
            Ok(handle) => {
                for layer in &handle.built {
                    for pin in &layer.packages {
                        let (name, version) = split_pin(pin);
                        let mut r = base(Decision::Installed);
                        r.package = Some(name);
                        r.version = version;
                        r.env_key = Some(layer.key.as_str());
                        records.push(r);
                    }
                }
                self.record(&records);
            }
            Err(error) => {
                let reason = error.to_string();
                for pin in error.layer_packages() {
                    let (name, version) = split_pin(pin);
                    let mut r = base(Decision::InstallFailed);
                    r.package = Some(name);
                    r.version = version;
                    r.reason = Some(&reason);
                    records.push(r);
                }
                if records.is_empty() {
                    let mut r = base(Decision::InstallFailed);
                    r.reason = Some(&reason);
                    records.push(r);
                }
                self.record(&records);
            }
        }
    }

    /// Records a run's final status, with the environment it used (if it
    /// got one) and its message (why it was rejected or failed to start).
    pub fn record_run(
        &self,
        policy: Option<&PolicyRef>,
        script_sha256: Option<&str>,
        outcome: &RunOutcome,
    ) {
        self.record_run_status(
            policy,
            script_sha256,
            outcome.status.as_str(),
            outcome.env.as_ref().map(|e| e.key.as_str()),
            outcome.message.as_deref(),
        );
    }

    /// Records a run's final status given by name: also the statuses only
    /// the service decides (`lost`, or `cancelled` before it started).
    pub fn record_run_status(
        &self,
        policy: Option<&PolicyRef>,
        script_sha256: Option<&str>,
        status: &str,
        env_key: Option<&str>,
        reason: Option<&str>,
    ) {
        let time = record::now();
        let mut r = Record::new(&time, Event::Run, &self.origin);
        r.script_sha256 = script_sha256;
        r.policy = policy.map(|p| p.name.as_str());
        r.policy_digest = policy.map(|p| p.digest.as_str());
        r.status = Some(status);
        r.env_key = env_key;
        r.reason = reason;
        self.record(&[r]);
    }
}

/// `name==version` split in two (a bare name has no version).
fn split_pin(pin: &str) -> (&str, Option<&str>) {
    match pin.split_once("==") {
        Some((name, version)) => (name, Some(version)),
        None => (pin, None),
    }
}

/// `$SCRIPTBOX_AUDIT_LOG`, else `audit.jsonl` in the data directory.
pub fn default_path() -> Option<PathBuf> {
    match std::env::var_os(ENV_LOG).filter(|v| !v.is_empty()) {
        Some(path) => std::path::absolute(PathBuf::from(path)).ok(),
        None => crate::dirs::data_dir().map(|d| d.join(LOG_FILE)),
    }
}

/// The rotation knobs from the environment; a bad value is a warning on
/// stderr and the default.
pub fn rotation_from_env() -> Rotation {
    let default = Rotation::default();
    let max_size = match std::env::var(ENV_MAX_SIZE) {
        Err(_) => default.max_size,
        Ok(text) => match crate::units::parse_size(&text) {
            Ok(n) if n > 0 => n,
            Ok(_) => {
                eprintln!(
                    "scriptbox: warning: {ENV_MAX_SIZE}: expected a size above 0, got '{text}'; using 64M"
                );
                default.max_size
            }
            Err(e) => {
                eprintln!("scriptbox: warning: {ENV_MAX_SIZE}: {e}; using 64M");
                default.max_size
            }
        },
    };
    let keep = match std::env::var(ENV_KEEP) {
        Err(_) => default.keep,
        Ok(text) => match text.trim().parse::<u32>() {
            Ok(n) if n <= MAX_KEEP => n,
            _ => {
                eprintln!(
                    "scriptbox: warning: {ENV_KEEP}: expected a whole number from 0 to {MAX_KEEP}, got '{text}'; using {}",
                    default.keep
                );
                default.keep
            }
        },
    };
    Rotation { max_size, keep }
}
