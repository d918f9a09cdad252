//! The `scriptbox` command line: argument parsing, output, exit codes.
//!
//! All real work lives in the library; this file only turns arguments into
//! library calls and results into bytes on stdout/stderr and an exit code.

use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use rayon::prelude::*;

use scriptbox::cache::default_cache_dir;
use scriptbox::report;
use scriptbox::stack::PARSE_STACK_BYTES;
use scriptbox::target::TargetPython;
use scriptbox::validate::{ValidateOptions, Verdict, validate_file};

/// Exit code for bad arguments or an unusable environment (same as unusable input).
const EXIT_USAGE: u8 = 2;

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
    /// Build and inspect cached environments.
    #[command(subcommand)]
    Env(EnvCommand),
}

#[derive(Subcommand)]
enum EnvCommand {
    /// Build (or find) the venv layer holding a script's allowed packages, or
    /// the given packages, pinned by the policy's lock.
    ///
    /// Exit status: 0 ready, 1 the policy refuses the script or a package is
    /// not in the lock, 2 build failure or bad arguments.
    Build {
        /// A script whose dependencies to install (validated under the policy).
        #[arg(required_unless_present = "packages", conflicts_with = "packages")]
        script: Option<PathBuf>,
        /// Distribution names to install instead of a script's.
        #[arg(long, num_args = 1.., value_name = "NAME")]
        packages: Vec<String>,
        /// Policy name in policies/, or a path to a policy file.
        #[arg(long, default_value = "default")]
        policy: String,
        /// The interpreter to base the venv on (its minor version must be the policy's).
        #[arg(long, default_value = "python3")]
        python: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// List cached environments, least recently used first.
    Ls {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Remove one cached environment by key (or a unique key prefix).
    Rm {
        /// The key, or a prefix of it.
        key: String,
    },
    /// Evict least recently used environments.
    Prune {
        /// Keep the cache at most this large (e.g. 20G).
        #[arg(long, value_parser = scriptbox::units::parse_size)]
        max_size: Option<u64>,
        /// Remove environments unused for longer than this (e.g. 30d).
        #[arg(long, value_parser = scriptbox::units::parse_duration)]
        max_age: Option<std::time::Duration>,
    },
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
enum Format {
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
            python,
            format,
        }) => run_env_build(script, &packages, &policy, &python, format),
        Command::Env(command) => run_env_store(command),
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

fn run_validate(args: ValidateArgs) -> ExitCode {
    let policy = match args.policy.as_deref().map(load_policy).transpose() {
        Ok(p) => p,
        Err(code) => return code,
    };
    let target = match (&policy, &args.python_version) {
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
fn load_policy(spec: &str) -> Result<scriptbox::policy::Policy, ExitCode> {
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

fn run_env_build(
    script: Option<PathBuf>,
    packages: &[String],
    policy: &str,
    python: &str,
    format: Format,
) -> ExitCode {
    use scriptbox::env::{closure, venv};
    use scriptbox::policy::verdict::PolicyStatus;
    let fail = |code: u8, message: String| {
        eprintln!("scriptbox: error: {message}");
        ExitCode::from(code)
    };
    let policy = match load_policy(policy) {
        Ok(p) => std::sync::Arc::new(p),
        Err(code) => return code,
    };
    let Some(lock) = policy.lock.as_ref() else {
        return fail(
            1,
            format!(
                "{} has no lock; run `scriptbox policy lock --policy {}`",
                policy.path.display(),
                policy.name
            ),
        );
    };
    let cache = match default_cache_dir() {
        Some(dir) => dir,
        None => {
            return fail(
                EXIT_USAGE,
                "no cache directory (set SCRIPTBOX_CACHE_DIR)".into(),
            );
        }
    };
    let target = match TargetPython::from_interpreter(python, Some(&cache)) {
        Ok(t) => t,
        Err(e) => return fail(EXIT_USAGE, e.to_string()),
    };
    if target.minor != policy.python.minor {
        return fail(
            EXIT_USAGE,
            format!(
                "{python} is Python {}, but policy '{}' targets Python 3.{}",
                target.version, policy.name, policy.python.minor
            ),
        );
    }
    let names: Vec<String> = match &script {
        None => packages.to_vec(),
        Some(path) => {
            let options = ValidateOptions {
                policy: Some(policy.clone()),
                sibling_modules: false,
                ..ValidateOptions::default()
            };
            let bare = match TargetPython::bare(&format!("3.{}", policy.python.minor)) {
                Ok(t) => t,
                Err(e) => return fail(EXIT_USAGE, e.to_string()),
            };
            let report = match validate_file(path, &bare, &options) {
                Ok(r) => r,
                Err(e) => return fail(EXIT_USAGE, format!("{}: {e}", path.display())),
            };
            match report.verdict() {
                Verdict::Invalid => {
                    return fail(
                        EXIT_USAGE,
                        format!(
                            "{}: the script is unusable; run `scriptbox validate` on it",
                            path.display()
                        ),
                    );
                }
                Verdict::Forbidden => {
                    return fail(
                        1,
                        format!(
                            "{}: refused by policy '{}':\n  {}",
                            path.display(),
                            policy.name,
                            report.forbidden.join("\n  ")
                        ),
                    );
                }
                _ => {}
            }
            report
                .dependencies
                .iter()
                .filter(|d| {
                    d.policy.as_ref().is_some_and(|j| {
                        matches!(
                            j.status,
                            PolicyStatus::Available | PolicyStatus::Installable
                        )
                    })
                })
                .map(|d| d.normalized.clone())
                .collect()
        }
    };
    let mut roots = Vec::new();
    for name in &names {
        match name.parse::<pep508_rs::PackageName>() {
            Ok(n) => roots.push(n),
            Err(e) => return fail(EXIT_USAGE, format!("invalid package name '{name}': {e}")),
        }
    }
    let pinned = match closure(lock, &roots) {
        Ok(p) => p,
        Err(e) => return fail(1, e.to_string()),
    };
    let spec = venv::VenvSpec {
        python: target
            .executable
            .clone()
            .unwrap_or_else(|| PathBuf::from(python)),
        python_version: target.version.to_string(),
        platform: policy.python.platform.clone(),
        packages: pinned,
    };
    match venv::ensure_venv(&spec, &cache, &scriptbox::uv::program()) {
        Ok(handle) => {
            match format {
                Format::Json => println!(
                    "{}",
                    serde_json::json!({
                        "schema": "scriptbox.env-build/1",
                        "key": handle.key,
                        "kind": "venv",
                        "path": handle.path,
                        "cache_hit": handle.cache_hit,
                        "build_seconds": handle.build_seconds,
                        "packages": spec.packages.iter().map(|p| format!("{}=={}", p.name, p.version)).collect::<Vec<_>>(),
                    })
                ),
                Format::Text => println!(
                    "{} venv {} ({} packages) at {}",
                    if handle.cache_hit { "found" } else { "built" },
                    handle.key.short(),
                    spec.packages.len(),
                    handle.path.display()
                ),
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(EXIT_USAGE, e.to_string()),
    }
}

fn run_env_store(command: EnvCommand) -> ExitCode {
    use scriptbox::env::store;
    let Some(envs) = default_cache_dir().map(|d| d.join("envs")) else {
        eprintln!("scriptbox: error: no cache directory (set SCRIPTBOX_CACHE_DIR)");
        return ExitCode::from(EXIT_USAGE);
    };
    let time = |secs: u64| {
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs),
        )
    };
    let show = |e: &store::EnvEntry| {
        format!(
            "{}  {}  {:>8.1} MiB  created {}  last used {}  hits {}",
            &e.key[..16],
            e.kind,
            e.size as f64 / (1024.0 * 1024.0),
            time(e.created),
            time(e.last_used),
            e.hits
        )
    };
    match command {
        EnvCommand::Ls { format } => {
            for entry in store::list(&envs) {
                match format {
                    Format::Json => {
                        println!("{}", serde_json::to_string(&entry).expect("serialises"))
                    }
                    Format::Text => println!("{}", show(&entry)),
                }
            }
            ExitCode::SUCCESS
        }
        EnvCommand::Rm { key } => match store::remove(&envs, &key) {
            Ok(entry) => {
                println!("removed {}", show(&entry));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("scriptbox: error: {e}");
                ExitCode::from(if matches!(e, store::RemoveError::Io { .. }) {
                    EXIT_USAGE
                } else {
                    1
                })
            }
        },
        EnvCommand::Prune { max_size, max_age } => {
            if max_size.is_none() && max_age.is_none() {
                eprintln!(
                    "scriptbox: error: say what to prune: --max-size SIZE and/or --max-age DURATION"
                );
                return ExitCode::from(EXIT_USAGE);
            }
            match store::prune(&envs, max_size, max_age) {
                Ok(removed) => {
                    for entry in &removed {
                        println!("removed {}", show(entry));
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("scriptbox: error: {e}");
                    ExitCode::from(EXIT_USAGE)
                }
            }
        }
        EnvCommand::Build { .. } => unreachable!("handled by run_env_build"),
    }
}
