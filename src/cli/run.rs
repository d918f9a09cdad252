//! `scriptbox run`: validate, build or reuse the environment, and execute
//! the script under the policy profile's limits, in one command.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use scriptbox::run::outcome::{EnvSummary, RunOutcome, Status};
use scriptbox::run::{RunRequest, limits::Limits, sandbox_name};
use scriptbox::target::TargetPython;
use scriptbox::validate::{ValidateOptions, Verdict, missing_message, validate_bytes};

use super::env::{Backend, cache_dir, ensure, plan};
use crate::{Format, load_policy};

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

fn backend_name(b: RunBackend) -> &'static str {
    match b {
        RunBackend::Local => "local",
        RunBackend::Docker => "docker",
    }
}

/// Runs `scriptbox run`.
pub fn run(args: RunArgs) -> ExitCode {
    let outcome = execute(&args);
    print(&outcome, args.format);
    ExitCode::from(outcome.status.exit_code())
}

fn execute(args: &RunArgs) -> RunOutcome {
    let backend = backend_name(args.backend);
    let error = |message: String| RunOutcome::without_execution(Status::Error, backend, message);
    let policy = match load_policy(&args.policy) {
        Ok(p) => Arc::new(p),
        Err(_) => {
            return error(format!(
                "policy '{}' cannot be used (see above)",
                args.policy
            ));
        }
    };
    let Some(profile) = policy.profiles.get(&args.profile) else {
        let names: Vec<&String> = policy.profiles.keys().collect();
        return error(format!(
            "policy '{}' has no profile '{}' (it has: {})",
            policy.name,
            args.profile,
            names
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    let limits = Limits::from(profile);
    let script = match read_script(&args.script) {
        Ok(s) => s,
        Err(message) => return error(message),
    };

    // Validate.
    let started = Instant::now();
    let options = ValidateOptions {
        policy: Some(policy.clone()),
        sibling_modules: false,
        ..ValidateOptions::default()
    };
    let bare = match TargetPython::bare(&format!("3.{}", policy.python.minor)) {
        Ok(t) => t,
        Err(e) => return error(e.to_string()),
    };
    let report = match validate_bytes(&args.script, &script, &bare, &options) {
        Ok(r) => r,
        Err(e) => {
            return RunOutcome::without_execution(
                Status::Rejected,
                backend,
                format!("{}: {e}", args.script.display()),
            );
        }
    };
    let validate_seconds = started.elapsed().as_secs_f64();
    let rejected = |message: String, pip: Option<String>| {
        let mut o = RunOutcome::without_execution(Status::Rejected, backend, message);
        o.pip_command = pip;
        o.durations.validate = validate_seconds;
        o
    };
    match report.verdict() {
        Verdict::Invalid => {
            let first = report
                .syntax_errors
                .first()
                .map(|e| format!("line {}:{}: {}", e.line, e.column, e.message))
                .or_else(|| report.metadata_error.as_ref().map(|e| e.to_string()))
                .unwrap_or_default();
            return rejected(
                format!(
                    "{}: the script is not valid Python: {first}",
                    args.script.display()
                ),
                None,
            );
        }
        Verdict::Forbidden => {
            return rejected(
                format!(
                    "refused by policy '{}':\n  {}",
                    policy.name,
                    report.forbidden.join("\n  ")
                ),
                None,
            );
        }
        Verdict::Missing => {
            return rejected(
                missing_message(&report.missing, &report.missing_requirements),
                report.pip_command(),
            );
        }
        Verdict::Ok => {}
    }
    let names = report.buildable();

    // Build or reuse the environment.
    let cache = match cache_dir() {
        Ok(c) => c,
        Err((_, message)) => return error(message),
    };
    let started = Instant::now();
    let env = (|| {
        let plan = plan(&policy, &names)?;
        let env_backend = match args.backend {
            RunBackend::Local => Backend::Venv,
            RunBackend::Docker => Backend::Docker,
        };
        ensure(
            env_backend,
            &policy,
            &plan,
            &args.python,
            args.base_image.as_deref(),
            &cache,
        )
    })();
    let env = match env {
        Ok(e) => e,
        Err((_, message)) => {
            let mut o = error(message);
            o.durations.validate = validate_seconds;
            return o;
        }
    };
    let build_seconds = started.elapsed().as_secs_f64();
    let summary = EnvSummary {
        key: env.key.to_string(),
        kind: env.kind().into(),
        cache_hit: env.cache_hit,
    };

    // Execute.
    let request = RunRequest {
        script,
        script_name: sandbox_name(&args.script),
        args: args.args.clone(),
        stdin: args.stdin.clone(),
        limits,
        env,
        state_dir: cache_dir()
            .map(|d| d.join("runs"))
            .unwrap_or_else(|_| std::env::temp_dir()),
    };
    let span = tracing::info_span!("run", env = %summary.key.get(..16).unwrap_or(""), backend);
    let _guard = span.enter();
    scriptbox::run::cancel::install();
    let result = match args.backend {
        RunBackend::Local if args.unsandboxed => {
            eprintln!(
                "scriptbox: WARNING: --unsandboxed: the script runs on this host with only resource limits; it can read and write what this user can"
            );
            scriptbox::run::local::run_unsandboxed(&request)
        }
        RunBackend::Local => scriptbox::run::local::run(&request),
        RunBackend::Docker => scriptbox::run::docker::run(&request),
    };
    let mut outcome = match result {
        Ok(exec) => RunOutcome::from_execution(exec, backend),
        Err(e) => error(e.to_string()),
    };
    outcome.durations.validate = validate_seconds;
    outcome.durations.build = build_seconds;
    outcome.env = Some(summary);
    outcome
}

/// Reads the script once: what runs is exactly what was validated. A FIFO
/// or device is refused without blocking, and the size is bounded.
fn read_script(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let limit = ValidateOptions::default().max_script_bytes;
    let (file, _) =
        scriptbox::source::open_regular(path).map_err(|e| format!("{}: {e}", path.display()))?;
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
    use std::io::Write;
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string(outcome).expect("outcome serialises")
        ),
        Format::Text => {
            let _ = std::io::stdout().write_all(outcome.stdout.as_bytes());
            let _ = std::io::stdout().flush();
            eprint!("{}", outcome.stderr);
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
