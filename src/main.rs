//! The `scriptbox` command line: argument parsing, output, exit codes.
//!
//! All real work lives in the library; this file only turns arguments into
//! library calls and results into bytes on stdout/stderr and an exit code.

use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

mod cli;
use cli::env::EnvCommand;
use cli::image::ImageCommand;
use rayon::prelude::*;

use scriptbox::cache::default_cache_dir;
use scriptbox::report;
use scriptbox::stack::PARSE_STACK_BYTES;
use scriptbox::target::TargetPython;
use scriptbox::validate::{ValidateOptions, Verdict, validate_file};

/// Exit code for bad arguments or an unusable environment (same as unusable input).
pub(crate) const EXIT_USAGE: u8 = 2;

#[derive(Parser)]
#[command(
    name = "scriptbox",
    version,
    about = "Validate, build environments for, and sandbox user Python scripts"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Find every dependency of Python scripts without running them.
    ///
    /// Exit status: 0 every required dependency is present, 1 something
    /// required is missing, 2 the input is unusable (unreadable, undecodable,
    /// syntax error, bad inline metadata, bad arguments). With several files,
    /// the highest status wins.
    Validate(ValidateArgs),
    /// Check and explain the administrators' whitelist policies (policies/*.toml).
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Build and inspect cached environments (venv layers and images).
    #[command(subcommand)]
    Env(EnvCommand),
    /// Build the base images in images/ through the Docker engine.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Validate a script, build or reuse its environment, and run it under
    /// the policy profile's limits, in the local sandbox or a container.
    ///
    /// Exit status: 0 succeeded, 1 the script failed (non-zero exit),
    /// 2 scriptbox error or bad arguments, 3 rejected (validation or
    /// policy), 4 timed out, 5 CPU limit, 6 memory limit, 7 output limit,
    /// 8 killed by a signal.
    Run(cli::run::RunArgs),
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Check policy files and report every problem as file:line:column.
    ///
    /// Exit status: 0 no errors (warnings allowed), 2 errors found or a file
    /// unreadable.
    Check {
        /// Policy files, or directories holding `*.toml` policies (default: policies/).
        #[arg(value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Resolve the policy's allowed set with uv into policies/NAME.lock:
    /// pinned versions with hashes, for the policy's Python and platform.
    ///
    /// Exit status: 0 locked, 1 the allowed packages cannot be resolved
    /// together, 2 bad policy, uv missing or index unreachable.
    Lock {
        /// Policy name in policies/, or a path to a policy file.
        #[arg(long, default_value = "default")]
        policy: String,
    },
    /// Say whether a package is allowed, and which rule decides it.
    ///
    /// Exit status: 0 allowed, 1 not allowed or denied, 2 bad policy or name.
    Explain {
        /// The package (distribution) name.
        name: String,
        /// Policy name in policies/, or a path to a policy file.
        #[arg(long, default_value = "default")]
        policy: String,
    },
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum Format {
    /// A report for people, with the exact pip command for what is missing.
    Text,
    /// One JSON object per script (JSON Lines), schema `scriptbox.validate/1`.
    Json,
}

#[derive(clap::Args)]
struct ValidateArgs {
    /// Scripts, or directories searched recursively for `*.py` files.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,

    /// Target environment: an interpreter, a venv directory, or a command on PATH.
    #[arg(
        long,
        value_name = "PYTHON",
        default_value = "python3",
        conflicts_with = "python_version"
    )]
    python: String,

    /// Validate against a bare CPython X.Y with nothing installed, instead of an interpreter.
    #[arg(long, value_name = "X.Y", conflicts_with = "policy")]
    python_version: Option<String>,

    /// Judge dependencies by a whitelist policy (a name in policies/ or a
    /// path): the target becomes the policy's base environment.
    #[arg(long, value_name = "POLICY", conflicts_with = "python")]
    policy: Option<String>,

    /// Validate against what a Docker image holds, from the manifest
    /// scriptbox recorded when it built the image (no container is started).
    #[arg(long, value_name = "IMAGE", conflicts_with_all = ["python_version", "python"])]
    image: Option<String>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,

    /// Largest script accepted, in bytes (suffixes K, M, G allowed).
    #[arg(long, value_name = "SIZE", default_value = "16M", value_parser = scriptbox::units::parse_size)]
    max_size: u64,

    /// Do not treat modules beside a script as local (for scripts that run alone).
    #[arg(long)]
    no_sibling_modules: bool,

    /// Parallel jobs for many scripts (default: number of cores).
    #[arg(long, short = 'j', value_name = "N")]
    jobs: Option<usize>,
}

fn main() -> ExitCode {
    init_tracing();
    // One line, like every other error, instead of the default report.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("scriptbox: internal error: {info}");
    }));
    let cli = Cli::parse();
    match cli.command {
        Command::Validate(args) => run_validate(args),
        Command::Policy(PolicyCommand::Check { paths, format }) => run_policy_check(paths, format),
        Command::Policy(PolicyCommand::Explain { name, policy }) => {
            run_policy_explain(&name, &policy)
        }
        Command::Policy(PolicyCommand::Lock { policy }) => run_policy_lock(&policy),
        Command::Env(EnvCommand::Build {
            script,
            packages,
            policy,
            backend,
            python,
            base_image,
            format,
        }) => cli::env::run_build(
            script,
            &packages,
            &policy,
            backend,
            &python,
            base_image.as_deref(),
            format,
        ),
        Command::Env(command) => cli::env::run_store(command),
        Command::Image(command) => cli::image::run(command),
        Command::Run(args) => cli::run::run(args),
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("SCRIPTBOX_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// A script to validate, or a path that could not even be listed.
enum Input {
    Script(PathBuf),
    Unlistable(PathBuf, String),
}

fn collect_inputs(paths: &[PathBuf]) -> Vec<Input> {
    let mut inputs = Vec::new();
    for path in paths {
        if !path.is_dir() {
            // Files, and paths that do not exist (reported when read).
            inputs.push(Input::Script(path.clone()));
            continue;
        }
        let before = inputs.len();
        let walker = walkdir::WalkDir::new(path)
            .follow_links(false)
            .sort_by_file_name();
        for entry in walker {
            match entry {
                Ok(e) => {
                    // Symlinked scripts are read through the link (a broken
                    // link is reported as unreadable, not skipped).
                    let kind = e.file_type();
                    let is_py = e.path().extension().is_some_and(|x| x == "py");
                    if is_py && (kind.is_file() || kind.is_symlink()) {
                        inputs.push(Input::Script(e.into_path()));
                    }
                }
                Err(err) => {
                    let at = err.path().unwrap_or(path).to_path_buf();
                    let reason = err
                        .io_error()
                        .map_or_else(|| err.to_string(), |io| io.to_string());
                    inputs.push(Input::Unlistable(
                        at,
                        format!("cannot list directory: {reason}"),
                    ));
                }
            }
        }
        if inputs.len() == before {
            inputs.push(Input::Unlistable(
                path.clone(),
                "directory holds no *.py files (expected Python scripts)".into(),
            ));
        }
    }
    inputs
}

/// What one input produced: the bytes for stdout, an optional stderr line, a verdict.
struct Rendered {
    stdout: String,
    stderr: Option<String>,
    verdict: Verdict,
}

fn render(
    input: &Input,
    target: &TargetPython,
    options: &ValidateOptions,
    format: Format,
) -> Rendered {
    let failure = |path: &Path, message: String| Rendered {
        stdout: match format {
            Format::Json => report::error_to_json(path, &message) + "\n",
            Format::Text => String::new(),
        },
        stderr: Some(format!("scriptbox: error: {}: {message}", path.display())),
        verdict: Verdict::Invalid,
    };
    match input {
        Input::Unlistable(path, message) => failure(path, message.clone()),
        Input::Script(path) => match catch_unwind(AssertUnwindSafe(|| {
            validate_file(path, target, options)
        })) {
            // A bug of ours on one file must not take the other files down.
            Err(_) => failure(
                path,
                "internal error while validating (a scriptbox bug; please report it with this file)"
                    .into(),
            ),
            Ok(result) => match result {
            Ok(report) => Rendered {
                stdout: match format {
                    Format::Json => report::to_json(&report) + "\n",
                    Format::Text => report::to_text(&report),
                },
                stderr: None,
                verdict: report.verdict(),
            },
            Err(e) => failure(path, e.to_string()),
            },
        },
    }
}

/// The Python of `image`, from the manifest scriptbox recorded on it.
fn image_target(image: &str) -> Result<TargetPython, String> {
    use scriptbox::engine::{Engine, EngineError, labels};
    use scriptbox::env::image::ImageManifest;
    let engine = Engine::connect().map_err(|e| e.to_string())?;
    let info = engine
        .image(image)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| EngineError::NoSuchImage(image.into()).to_string())?;
    let (version, installed) = match ImageManifest::of(&info) {
        Some(m) => (m.python, m.installed),
        None => match info.label(labels::PYTHON) {
            // A base image with nothing installed records only its Python.
            Some(v) if info.label(labels::MANIFEST).is_none() => {
                (v.to_string(), Default::default())
            }
            _ => {
                return Err(format!(
                    "image '{image}' has no scriptbox manifest (build it with `scriptbox env build --backend docker` or `scriptbox image build`)"
                ));
            }
        },
    };
    TargetPython::from_manifest(&version, installed).map_err(|e| e.to_string())
}

fn run_validate(args: ValidateArgs) -> ExitCode {
    let policy = match args.policy.as_deref().map(load_policy).transpose() {
        Ok(p) => p,
        Err(code) => return code,
    };
    let target = match (&policy, &args.python_version) {
        _ if args.image.is_some() => {
            match image_target(args.image.as_deref().unwrap_or_default()) {
                Ok(t) => Ok(t),
                Err(message) => {
                    eprintln!("scriptbox: error: {message}");
                    return ExitCode::from(EXIT_USAGE);
                }
            }
        }
        (Some(p), _) => TargetPython::bare(&format!("3.{}", p.python.minor)),
        (None, Some(version)) => TargetPython::bare(version),
        (None, None) => {
            TargetPython::from_interpreter(&args.python, default_cache_dir().as_deref())
        }
    };
    let target = match target {
        Ok(t) => t,
        Err(e) => {
            eprintln!("scriptbox: error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if !scriptbox::stdlib::has_table(target.minor) {
        tracing::warn!(
            "no standard-library table for Python 3.{}; using the nearest one",
            target.minor
        );
    }
    let options = ValidateOptions {
        max_script_bytes: args.max_size,
        sibling_modules: !args.no_sibling_modules,
        policy: policy.map(std::sync::Arc::new),
        ..ValidateOptions::default()
    };
    let inputs = collect_inputs(&args.paths);

    let mut worst = Verdict::Ok;
    let stdout = std::io::stdout();
    let mut emit = |r: Rendered| {
        let mut out = stdout.lock();
        // A closed pipe (e.g. `| head`) is not an error worth reporting.
        let _ = out.write_all(r.stdout.as_bytes());
        if let Some(line) = r.stderr {
            let _ = out.flush();
            eprintln!("{line}");
        }
        worst = worst.max(r.verdict);
    };
    if inputs.len() == 1 {
        emit(render(&inputs[0], &target, &options, args.format));
    } else {
        let mut pool = rayon::ThreadPoolBuilder::new()
            .stack_size(PARSE_STACK_BYTES)
            .start_handler(|_| scriptbox::stack::mark_current_thread_large());
        if let Some(jobs) = args.jobs {
            pool = pool.num_threads(jobs);
        }
        let pool = match pool.build() {
            Ok(p) => p,
            Err(e) => {
                eprintln!("scriptbox: error: cannot start worker threads: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        };
        // Rendered in parallel, written in input order, so output is reproducible.
        let rendered: Vec<Rendered> = pool.install(|| {
            inputs
                .par_iter()
                .map(|input| render(input, &target, &options, args.format))
                .collect()
        });
        let many_text = args.format == Format::Text;
        for (i, r) in rendered.into_iter().enumerate() {
            if many_text && i > 0 && !r.stdout.is_empty() {
                let _ = stdout.lock().write_all(b"\n");
            }
            emit(r);
        }
    }
    ExitCode::from(worst.exit_code() as u8)
}

// The parser allocates an AST node per expression; mimalloc measured
// faster than the system allocator for that pattern (see scripts/bench-validate).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Directory holding policies by name.
const POLICIES_DIR: &str = "policies";

fn policy_files(paths: Vec<PathBuf>) -> Vec<PathBuf> {
    let paths = if paths.is_empty() {
        vec![PathBuf::from(POLICIES_DIR)]
    } else {
        paths
    };
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(&path)
                .map(|entries| {
                    entries
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                        .collect()
                })
                .unwrap_or_default();
            found.sort();
            if found.is_empty() {
                // Reported by the loader as unreadable, naming the directory.
                files.push(path);
            } else {
                files.extend(found);
            }
        } else {
            files.push(path);
        }
    }
    files
}

fn run_policy_check(paths: Vec<PathBuf>, format: Format) -> ExitCode {
    use scriptbox::policy::{PolicyLoadError, Severity, load};
    let mut failed = false;
    for file in policy_files(paths) {
        let (policy, diagnostics, error) = match load(&file) {
            Ok((policy, warnings)) => (Some(policy), warnings, None),
            Err(PolicyLoadError::Invalid { diagnostics, .. }) => (None, diagnostics, None),
            Err(e) => (None, Vec::new(), Some(e.to_string())),
        };
        failed |= error.is_some() || diagnostics.iter().any(|d| d.severity == Severity::Error);
        match format {
            Format::Text => {
                for d in &diagnostics {
                    println!("{d}");
                }
                if let Some(e) = &error {
                    eprintln!("scriptbox: error: {e}");
                }
            }
            Format::Json => {
                let line = serde_json::json!({
                    "schema": "scriptbox.policy-check/1",
                    "path": file.display().to_string(),
                    "ok": error.is_none() && !diagnostics.iter().any(|d| d.severity == Severity::Error),
                    "policy": policy.as_ref().map(|p| p.name.clone()),
                    "digest": policy.as_ref().map(|p| p.digest()),
                    "diagnostics": diagnostics,
                    "error": error,
                });
                println!("{line}");
            }
        }
    }
    ExitCode::from(if failed { EXIT_USAGE } else { 0 })
}

/// Loads a policy by name or path; on failure prints its diagnostics and
/// returns the exit code to use.
pub(crate) fn load_policy(spec: &str) -> Result<scriptbox::policy::Policy, ExitCode> {
    use scriptbox::policy::{PolicyLoadError, load, resolve_policy_path};
    let path = resolve_policy_path(spec, Path::new(POLICIES_DIR));
    match load(&path) {
        Ok((policy, _)) => Ok(policy),
        Err(PolicyLoadError::Invalid { path, diagnostics }) => {
            for d in &diagnostics {
                eprintln!("{d}");
            }
            eprintln!(
                "scriptbox: error: {} has errors; run `scriptbox policy check {}`",
                path.display(),
                path.display()
            );
            Err(ExitCode::from(EXIT_USAGE))
        }
        Err(e) => {
            eprintln!("scriptbox: error: {e}");
            Err(ExitCode::from(EXIT_USAGE))
        }
    }
}

fn run_policy_explain(name: &str, policy: &str) -> ExitCode {
    use scriptbox::policy::explain;
    let package = match name.parse::<pep508_rs::PackageName>() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("scriptbox: error: invalid package name '{name}': {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let policy = match load_policy(policy) {
        Ok(p) => p,
        Err(code) => return code,
    };
    println!("{}", explain::explain(&policy, &package));
    match explain::decide(&policy, &package) {
        explain::Decision::Allowed { .. } | explain::Decision::Dependency { .. } => {
            ExitCode::SUCCESS
        }
        _ => ExitCode::from(1),
    }
}

fn run_policy_lock(policy: &str) -> ExitCode {
    use scriptbox::policy::lock::{LockError, lock_policy};
    let policy = match load_policy(policy) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let span = tracing::info_span!("lock", policy = %policy.name);
    let _guard = span.enter();
    match lock_policy(&policy, &scriptbox::uv::program()) {
        Ok((path, count)) => {
            println!(
                "locked {} ({count} packages, python 3.{} {}) into {}",
                policy.path.display(),
                policy.python.minor,
                policy.python.platform,
                path.display()
            );
            ExitCode::SUCCESS
        }
        Err(e @ LockError::Unresolvable { .. }) => {
            eprintln!("scriptbox: error: {e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("scriptbox: error: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}
