//! `scriptbox run`: argument parsing, one call to the library's pipeline
//! ([`scriptbox::pipeline::run`]), and printing. The script's output is
//! written through to the terminal as it prints (text format).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use scriptbox::audit::{AuditLog, PolicyRef};
use scriptbox::env::build::BuildProgress;
use scriptbox::pipeline::{Backend, RunObserver, RunRequest, Stage};
use scriptbox::policy::Policy;
use scriptbox::run::Stdin;
use scriptbox::run::cancel::CancelToken;
use scriptbox::run::outcome::{RunOutcome, Status};
use scriptbox::run::output::{OutputSink, Stream};
use scriptbox::validate::ValidateOptions;

use super::progress::SpinnerProgress;
use super::{Format, load_policy};

/// Where a script runs.
#[derive(Clone, Copy, clap::ValueEnum, PartialEq, Eq, Debug)]
pub enum RunBackend {
    /// bubblewrap on the host, in venv layers (the default; no Docker needed).
    Local,
    /// A fresh container per run, from the environment's image.
    Docker,
}

/// `scriptbox run` arguments.
#[derive(clap::Args)]
pub struct RunArgs {
    /// The script.
    script: PathBuf,
    /// Arguments for the script (after `--`).
    #[arg(last = true)]
    args: Vec<String>,
    /// Where to run it.
    #[arg(long, value_enum, default_value_t = RunBackend::Local)]
    backend: RunBackend,
    /// Policy name in policies/, or a path to a policy file.
    #[arg(long, default_value = "default")]
    policy: String,
    /// The policy profile whose limits apply.
    #[arg(long, default_value = "default")]
    profile: String,
    /// A file to give the script as its standard input.
    #[arg(long, value_name = "FILE")]
    stdin: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// The host interpreter venv layers are based on (local backend).
    #[arg(long, default_value = "python3")]
    python: String,
    /// Docker backend: the image to layer the environment on.
    #[arg(long, value_name = "IMAGE")]
    base_image: Option<String>,
    /// Local backend without bubblewrap: no namespaces, only limits. For
    /// machines that cannot run bwrap; never for untrusted scripts.
    #[arg(long)]
    unsandboxed: bool,
}

/// Runs `scriptbox run`.
pub fn run(args: RunArgs) -> ExitCode {
    let observer = Terminal {
        format: args.format,
        unsandboxed: args.unsandboxed,
        progress: SpinnerProgress::default(),
    };
    let audit = AuditLog::from_env("run").map(Arc::new);
    let outcome = execute(&args, &observer, audit.as_ref());
    print(&outcome, args.format);
    ExitCode::from(outcome.status.exit_code())
}

fn execute(args: &RunArgs, observer: &Terminal, audit: Option<&Arc<AuditLog>>) -> RunOutcome {
    let backend = match args.backend {
        RunBackend::Local => Backend::Local,
        RunBackend::Docker => Backend::Docker,
    };
    // The pipeline records every run it is given; one that never gets there
    // (no usable policy, no readable script) is recorded here.
    let error = |message: String, policy: Option<&Policy>, script: Option<&[u8]>| {
        let outcome = RunOutcome::without_execution(Status::Error, backend.as_str(), message);
        if let Some(audit) = audit {
            audit.record_run(
                policy.map(PolicyRef::from).as_ref(),
                script.map(scriptbox::pipeline::script_sha256).as_deref(),
                &outcome,
            );
        }
        outcome
    };
    let policy = match load_policy(&args.policy) {
        Ok(p) => Arc::new(p),
        Err(_) => {
            return error(
                format!("policy '{}' cannot be used (see above)", args.policy),
                None,
                None,
            );
        }
    };
    let script = match read_script(&args.script) {
        Ok(s) => s,
        Err(message) => return error(message, Some(&policy), None),
    };
    let cache_dir = match super::env::cache_dir() {
        Ok(c) => c,
        Err((_, message)) => return error(message, Some(&policy), Some(&script)),
    };
    let request = RunRequest {
        script,
        script_path: args.script.clone(),
        policy,
        profile: args.profile.clone(),
        backend,
        unsandboxed: args.unsandboxed,
        args: args.args.clone(),
        stdin: args.stdin.clone().map_or(Stdin::Empty, Stdin::File),
        cache_dir,
        python: args.python.clone(),
        base_image: args.base_image.clone(),
        audit: audit.cloned(),
    };
    // SIGINT and SIGTERM stop this run's script (and clean up) instead of
    // ending scriptbox at once.
    let cancel = CancelToken::new();
    if let Err(e) = cancel.cancel_on_signals() {
        tracing::warn!("cannot handle SIGINT/SIGTERM: {e}");
    }
    scriptbox::pipeline::run(&request, &cancel, observer)
}

/// The terminal as the run's observer: a spinner while building, and, in
/// text format, the script's output written through as it arrives.
struct Terminal {
    format: Format,
    unsandboxed: bool,
    progress: SpinnerProgress,
}

impl OutputSink for Terminal {
    fn output(&self, stream: Stream, bytes: &[u8]) {
        if self.format != Format::Text {
            return;
        }
        // A closed terminal or pipe is not the script's failure.
        let _ = match stream {
            Stream::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(bytes).and_then(|()| out.flush())
            }
            Stream::Stderr => std::io::stderr().lock().write_all(bytes),
        };
    }
}

impl BuildProgress for Terminal {
    fn begin(&self, what: &str) {
        self.progress.begin(what);
    }

    fn step(&self, line: &str) {
        self.progress.step(line);
    }

    fn end(&self) {
        self.progress.end();
    }
}

impl RunObserver for Terminal {
    fn stage(&self, stage: Stage) {
        if stage == Stage::Run && self.unsandboxed {
            eprintln!(
                "scriptbox: WARNING: --unsandboxed: the script runs on this host with only resource limits; it can read and write what this user can"
            );
        }
    }
}

/// Reads the script once: what runs is exactly what was validated. A FIFO
/// or device is refused without blocking, and the size is bounded.
fn read_script(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let limit = ValidateOptions::default().max_script_bytes;
    let (file, _) = scriptbox::validate::source::open_regular(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{}: cannot read the script: {e}", path.display()))?;
    if bytes.len() as u64 > limit {
        return Err(format!(
            "{}: larger than {limit} bytes (scripts are limited in size)",
            path.display()
        ));
    }
    Ok(bytes)
}

fn print(outcome: &RunOutcome, format: Format) {
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string(outcome).expect("outcome serialises")
        ),
        Format::Text => {
            // The script's output went to the terminal as it arrived.
            if let Some(message) = &outcome.message {
                eprintln!("{message}");
            }
            let mut line = format!(
                "scriptbox: {} in {:.2} s",
                outcome.status.as_str(),
                outcome.durations.run
            );
            if let Some(code) = outcome.exit_code {
                line.push_str(&format!(", exit code {code}"));
            }
            if let Some(sig) = &outcome.signal {
                line.push_str(&format!(", {sig}"));
            }
            if outcome.stdout_truncated || outcome.stderr_truncated {
                line.push_str(", output truncated");
            }
            if let Some(env) = &outcome.env {
                line.push_str(&format!(
                    " ({} {}{})",
                    env.kind,
                    env.key.get(..16).unwrap_or(&env.key),
                    if env.cache_hit { ", cached" } else { ", built" }
                ));
            }
            eprintln!("{line}");
        }
    }
}
