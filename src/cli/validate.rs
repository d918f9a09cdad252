//! `scriptbox validate`: find every dependency of Python scripts without
//! running them, many files in parallel, in input order.

use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use rayon::prelude::*;

use scriptbox::audit::AuditLog;
use scriptbox::cache::default_cache_dir;
use scriptbox::validate::report;
use scriptbox::validate::stack::PARSE_STACK_BYTES;
use scriptbox::validate::target::TargetPython;
use scriptbox::validate::{ValidateOptions, Verdict, validate_file};

use super::{EXIT_USAGE, Format, load_policy};

#[derive(clap::Args)]
pub struct ValidateArgs {
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

/// Runs `scriptbox validate`.
pub fn run(args: ValidateArgs) -> ExitCode {
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
    if !scriptbox::validate::stdlib::has_table(target.minor) {
        tracing::warn!(
            "no standard-library table for Python 3.{}; using the nearest one",
            target.minor
        );
    }
    // Decisions are a policy's: only validations under one are recorded.
    let audit = policy
        .as_ref()
        .and_then(|_| AuditLog::from_env("validate"))
        .map(std::sync::Arc::new);
    let options = ValidateOptions {
        max_script_bytes: args.max_size,
        sibling_modules: !args.no_sibling_modules,
        policy: policy.map(std::sync::Arc::new),
        audit,
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
            .start_handler(|_| scriptbox::validate::stack::mark_current_thread_large());
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
