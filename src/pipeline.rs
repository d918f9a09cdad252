//! The whole pipeline for one script: validate → plan → ensure → execute,
//! in one library call that every edge uses (the `scriptbox run` command,
//! the service), so there is exactly one way a script gets run.
//!
//! [`run`] takes a [`RunRequest`] and returns the [`RunOutcome`]. It can
//! also be taken in two steps, as the service does: [`check`] validates the
//! script under the policy without touching the cache (a rejection is known
//! at once), and [`execute`] builds or reuses the environment and runs the
//! script. Each run has its own [`CancelToken`], and its output and build
//! progress go to the caller's [`RunObserver`] as they happen.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tracing::info_span;

use crate::audit::{AuditLog, BuildAudit, PolicyRef};
use crate::env::build::{BuildProgress, BuildSite, EnvBackend, ensure, plan};
use crate::policy::Policy;
use crate::run::cancel::CancelToken;
use crate::run::limits::Limits;
use crate::run::outcome::{EnvSummary, RunOutcome, Status};
use crate::run::output::OutputSink;
use crate::run::{ExecRequest, Stdin, sandbox_name};
use crate::validate::target::TargetPython;
use crate::validate::{
    ValidateOptions, ValidationReport, Verdict, missing_message, validate_bytes,
};

/// Where a script runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// bubblewrap on the host, in venv layers (no Docker needed).
    Local,
    /// A fresh container per run, from the environment's image.
    Docker,
}

impl Backend {
    /// `local` or `docker`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Local => "local",
            Backend::Docker => "docker",
        }
    }
}

/// One script to run, and everything that decides how.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The script's bytes: what is validated is exactly what runs.
    pub script: Vec<u8>,
    /// Its name as the user gave it (a path or an upload's file name): used
    /// in messages, and its file name inside the sandbox.
    pub script_path: PathBuf,
    /// The whitelist policy.
    pub policy: Arc<Policy>,
    /// The policy profile whose limits apply.
    pub profile: String,
    /// Where it runs.
    pub backend: Backend,
    /// Local backend only: run without bubblewrap (limits only). Never for
    /// untrusted scripts.
    pub unsandboxed: bool,
    /// The script's arguments.
    pub args: Vec<String>,
    /// What it reads on stdin.
    pub stdin: Stdin,
    /// The cache directory (environments, uid claims).
    pub cache_dir: PathBuf,
    /// The host interpreter venv layers are based on (`python3`).
    pub python: String,
    /// Docker backend: the image to layer the environment on.
    pub base_image: Option<String>,
    /// Where the policy's decisions, the build's installs and the run's
    /// final status are recorded, if anywhere.
    pub audit: Option<Arc<AuditLog>>,
}

/// A stage of the pipeline, as it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Validation under the policy.
    Validate,
    /// Building or finding the environment.
    Build,
    /// The script is about to start.
    Run,
}

/// What a caller sees of a run while it happens: its stages, its build's
/// progress and its output, chunk by chunk (the CLI writes through to the
/// terminal; the service stores and streams).
pub trait RunObserver: OutputSink + BuildProgress {
    /// A stage starts.
    fn stage(&self, _stage: Stage) {}
}

/// An observer that ignores everything (the outcome still has the output).
pub struct Unobserved;

impl OutputSink for Unobserved {
    fn output(&self, _: crate::run::output::Stream, _: &[u8]) {}
}
impl BuildProgress for Unobserved {}
impl RunObserver for Unobserved {}

/// A script that passed validation under its policy: what the build needs.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The full validation report.
    pub report: ValidationReport,
    /// The distributions to build the environment from.
    pub names: Vec<String>,
    /// The profile's limits.
    pub limits: Limits,
    /// Seconds validation took.
    pub validate_seconds: f64,
    /// The profile's egress allowlist, when it has one.
    pub egress: Option<crate::egress::EgressConfig>,
}

/// The lowercase hex sha256 of the script's bytes (its identity in logs
/// and records; the same as [`crate::validate::script_digest`]).
pub fn script_sha256(script: &[u8]) -> String {
    crate::validate::script_digest(script)
}

/// Validates the script under the policy and profile: `Ok` when it may
/// run, else the outcome to report (`rejected`, or `error` for a profile
/// the policy lacks). Touches no cache and starts nothing. The policy's
/// decisions go to the request's audit log, and so does a refusal, as the
/// run's final status.
pub fn check(request: &RunRequest) -> Result<Checked, Box<RunOutcome>> {
    let checked = judge(request);
    if let Err(outcome) = &checked {
        record_run(request, None, outcome);
    }
    checked
}

fn judge(request: &RunRequest) -> Result<Checked, Box<RunOutcome>> {
    let backend = request.backend.as_str();
    let error = |message: String| {
        Box::new(RunOutcome::without_execution(
            Status::Error,
            backend,
            message,
        ))
    };
    let policy = &request.policy;
    let Some(profile) = policy.profiles.get(&request.profile) else {
        let names: Vec<&str> = policy.profiles.keys().map(String::as_str).collect();
        return Err(error(format!(
            "policy '{}' has no profile '{}' (it has: {})",
            policy.name,
            request.profile,
            names.join(", ")
        )));
    };
    let egress = crate::egress::EgressConfig::from_profile(profile);
    if egress.is_some() && request.unsandboxed {
        return Err(error(crate::run::RunError::EgressUnsandboxed.to_string()));
    }
    let limits = Limits::from(profile);
    let started = Instant::now();
    let options = ValidateOptions {
        policy: Some(policy.clone()),
        sibling_modules: false,
        audit: request.audit.clone(),
        ..ValidateOptions::default()
    };
    let bare = TargetPython::bare(&format!("3.{}", policy.python.minor))
        .map_err(|e| error(e.to_string()))?;
    let path = &request.script_path;
    let report = validate_bytes(path, &request.script, &bare, &options).map_err(|e| {
        Box::new(RunOutcome::without_execution(
            Status::Rejected,
            backend,
            format!("{}: {e}", path.display()),
        ))
    })?;
    let validate_seconds = started.elapsed().as_secs_f64();
    let rejected = |message: String, pip: Option<String>| {
        let mut o = RunOutcome::without_execution(Status::Rejected, backend, message);
        o.pip_command = pip;
        o.durations.validate = validate_seconds;
        Box::new(o)
    };
    match report.verdict() {
        Verdict::Invalid => {
            let first = report
                .syntax_errors
                .first()
                .map(|e| format!("line {}:{}: {}", e.line, e.column, e.message))
                .or_else(|| report.metadata_error.as_ref().map(|e| e.to_string()))
                .unwrap_or_default();
            Err(rejected(
                format!(
                    "{}: the script is not valid Python: {first}",
                    path.display()
                ),
                None,
            ))
        }
        Verdict::Forbidden => Err(rejected(
            format!(
                "refused by policy '{}':\n  {}",
                policy.name,
                report.forbidden.join("\n  ")
            ),
            None,
        )),
        Verdict::Missing => Err(rejected(
            missing_message(&report.missing, &report.missing_requirements),
            report.pip_command(),
        )),
        Verdict::Ok => Ok(Checked {
            names: report.buildable(),
            report,
            limits,
            validate_seconds,
            egress,
        }),
    }
}

/// Builds or reuses the environment of a checked script and runs it. What
/// the build installed and the run's final status go to the request's
/// audit log.
pub fn execute(
    request: &RunRequest,
    checked: &Checked,
    cancel: &CancelToken,
    observer: &dyn RunObserver,
) -> RunOutcome {
    let outcome = build_and_run(request, checked, cancel, observer);
    record_run(request, Some(&checked.report), &outcome);
    outcome
}

/// Records a run's final status in the request's audit log, if it has one.
fn record_run(request: &RunRequest, report: Option<&ValidationReport>, outcome: &RunOutcome) {
    let Some(log) = &request.audit else {
        return;
    };
    let digest = report
        .and_then(|r| r.script_sha256.clone())
        .unwrap_or_else(|| script_sha256(&request.script));
    log.record_run(
        Some(&PolicyRef::from(request.policy.as_ref())),
        Some(&digest),
        outcome,
    );
}

fn build_and_run(
    request: &RunRequest,
    checked: &Checked,
    cancel: &CancelToken,
    observer: &dyn RunObserver,
) -> RunOutcome {
    let backend = request.backend.as_str();
    let policy = &request.policy;
    let with_validate = |mut o: RunOutcome| {
        o.durations.validate = checked.validate_seconds;
        o
    };

    // Build or reuse the environment.
    observer.stage(Stage::Build);
    let started = Instant::now();
    let digest = request.audit.as_ref().map(|_| {
        checked
            .report
            .script_sha256
            .clone()
            .unwrap_or_else(|| script_sha256(&request.script))
    });
    let site = BuildSite {
        backend: match request.backend {
            Backend::Local => EnvBackend::Venv,
            Backend::Docker => EnvBackend::Docker,
        },
        python: &request.python,
        base_image: request.base_image.as_deref(),
        cache: &request.cache_dir,
        audit: request.audit.as_deref().map(|log| BuildAudit {
            log,
            script_sha256: digest.as_deref(),
        }),
    };
    let env = {
        let span = info_span!("build", policy = %policy.name, backend);
        let _guard = span.enter();
        plan(policy, &checked.names).and_then(|plan| ensure(&site, policy, &plan, observer))
    };
    let env = match env {
        Ok(e) => e,
        Err(e) => {
            return with_validate(RunOutcome::without_execution(
                Status::Error,
                backend,
                e.to_string(),
            ));
        }
    };
    let build_seconds = started.elapsed().as_secs_f64();
    let summary = EnvSummary {
        key: env.key.to_string(),
        kind: env.kind().into(),
        cache_hit: env.cache_hit,
    };

    // Execute.
    let exec_request = ExecRequest {
        script: request.script.clone(),
        script_name: sandbox_name(&request.script_path),
        args: request.args.clone(),
        stdin: request.stdin.clone(),
        limits: checked.limits.clone(),
        env,
        state_dir: runs_dir(&request.cache_dir),
        egress: checked.egress.clone(),
    };
    let span = info_span!("run", env = %summary.key.get(..16).unwrap_or(""), backend);
    let _guard = span.enter();
    observer.stage(Stage::Run);
    let sink: &dyn OutputSink = observer;
    let result = match request.backend {
        Backend::Local if request.unsandboxed => {
            crate::run::local::run_unsandboxed(&exec_request, cancel, sink)
        }
        Backend::Local => crate::run::local::run(&exec_request, cancel, sink),
        Backend::Docker => crate::run::docker::run(&exec_request, cancel, sink),
    };
    let mut outcome = match result {
        Ok(exec) => RunOutcome::from_execution(exec, backend),
        Err(e) => RunOutcome::without_execution(Status::Error, backend, e.to_string()),
    };
    outcome.durations.build = build_seconds;
    outcome.env = Some(summary);
    with_validate(outcome)
}

/// Runs one script: validates it under the policy (a refused script never
/// runs), builds or reuses its environment, and executes it under the
/// profile's limits. Exactly one status comes back; nothing is printed.
pub fn run(request: &RunRequest, cancel: &CancelToken, observer: &dyn RunObserver) -> RunOutcome {
    let digest = script_sha256(&request.script);
    let span = info_span!(
        "pipeline",
        script = %digest.get(..16).unwrap_or(""),
        policy = %request.policy.name,
    );
    let _guard = span.enter();
    observer.stage(Stage::Validate);
    match check(request) {
        Ok(checked) => execute(request, &checked, cancel, observer),
        Err(outcome) => *outcome,
    }
}

/// Where runs keep machine-wide state (sandbox uid claims).
fn runs_dir(cache: &Path) -> PathBuf {
    cache.join("runs")
}
