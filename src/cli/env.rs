//! `scriptbox env`: build environments, and list, remove and prune them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Subcommand, ValueEnum};

use scriptbox::audit::{AuditLog, BuildAudit};
use scriptbox::cache::default_cache_dir;
use scriptbox::engine::Engine;
use scriptbox::env::EnvLocation;
use scriptbox::env::build::{BuildSite, EnsureError, EnvBackend, ensure, plan};
use scriptbox::env::store;
use scriptbox::policy::Policy;
use scriptbox::validate::target::TargetPython;
use scriptbox::validate::{ValidateOptions, Verdict, validate_file};

use super::progress::SpinnerProgress;
use super::{EXIT_USAGE, Format, load_policy};

/// Where an environment is built.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum Backend {
    /// Venv layers on the host, for the local sandbox.
    Venv,
    /// A Docker image, for containers.
    Docker,
}

/// `scriptbox env ...`
#[derive(Subcommand)]
pub enum EnvCommand {
    /// Build (or find) the environment holding a script's allowed packages,
    /// or the given packages, pinned by the policy's lock.
    ///
    /// Exit status: 0 ready, 1 the policy refuses the script or a package is
    /// not in the lock, 2 build failure, engine not answering or bad
    /// arguments.
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
        /// Venv layers on the host, or a Docker image.
        #[arg(long, value_enum, default_value_t = Backend::Venv)]
        backend: Backend,
        /// The interpreter to base venvs on, and to compile image bytecode
        /// with (its minor version must be the policy's).
        #[arg(long, default_value = "python3")]
        python: String,
        /// Docker backend: the image to build on (default: the policy's
        /// image from `scriptbox image build trading`, else scriptbox/python:3.X).
        #[arg(long, value_name = "IMAGE")]
        base_image: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// List cached environments (venv layers and images), least recently used first.
    Ls {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Remove one cached environment by key (or a unique key prefix), and
    /// the venv layers built on it.
    Rm {
        /// The key, or a prefix of it.
        key: String,
    },
    /// Check venv layers for files removed, added or truncated by hand,
    /// naming the package each damaged file belongs to.
    ///
    /// Exit status: 0 all intact, 1 damage found (the next `env build`
    /// rebuilds a damaged layer), 2 bad arguments.
    Verify {
        /// Keys or key prefixes (default: every venv layer).
        keys: Vec<String>,
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

/// A failure: exit code and one message.
pub type Failure = (u8, String);

fn fail(code: u8, message: String) -> ExitCode {
    eprintln!("scriptbox: error: {message}");
    ExitCode::from(code)
}

/// The cache directory, or the failure to report.
pub fn cache_dir() -> Result<PathBuf, Failure> {
    default_cache_dir().ok_or((
        EXIT_USAGE,
        "no cache directory (set SCRIPTBOX_CACHE_DIR)".into(),
    ))
}

/// The distributions a script needs under `policy` (available or
/// installable) and the script's digest, or why it cannot have them. The
/// policy's decisions go to `audit`.
pub fn script_roots(
    path: &Path,
    policy: &Arc<Policy>,
    audit: Option<&Arc<AuditLog>>,
) -> Result<(Vec<String>, Option<String>), Failure> {
    let options = ValidateOptions {
        policy: Some(policy.clone()),
        sibling_modules: false,
        audit: audit.cloned(),
        ..ValidateOptions::default()
    };
    let bare = TargetPython::bare(&format!("3.{}", policy.python.minor))
        .map_err(|e| (EXIT_USAGE, e.to_string()))?;
    let report = validate_file(path, &bare, &options)
        .map_err(|e| (EXIT_USAGE, format!("{}: {e}", path.display())))?;
    match report.verdict() {
        Verdict::Invalid => Err((
            EXIT_USAGE,
            format!(
                "{}: the script is unusable; run `scriptbox validate` on it",
                path.display()
            ),
        )),
        Verdict::Forbidden => Err((
            1,
            format!(
                "{}: refused by policy '{}':\n  {}",
                path.display(),
                policy.name,
                report.forbidden.join("\n  ")
            ),
        )),
        _ => Ok((report.buildable(), report.script_sha256.clone())),
    }
}

/// The failure to report for an environment that cannot be had: exit 1
/// when the policy refuses, 2 otherwise.
pub fn env_failure(e: EnsureError) -> Failure {
    (if e.is_refusal() { 1 } else { EXIT_USAGE }, e.to_string())
}

/// Runs `scriptbox env ...`.
pub fn run(command: EnvCommand) -> ExitCode {
    match command {
        EnvCommand::Build {
            script,
            packages,
            policy,
            backend,
            python,
            base_image,
            format,
        } => run_build(
            script,
            &packages,
            &policy,
            backend,
            &python,
            base_image.as_deref(),
            format,
        ),
        command => run_store(command),
    }
}

/// `scriptbox env build`.
fn run_build(
    script: Option<PathBuf>,
    packages: &[String],
    policy: &str,
    backend: Backend,
    python: &str,
    base_image: Option<&str>,
    format: Format,
) -> ExitCode {
    let policy = match load_policy(policy) {
        Ok(p) => Arc::new(p),
        Err(code) => return code,
    };
    let audit = AuditLog::from_env("env-build").map(Arc::new);
    let result = (|| {
        let cache = cache_dir()?;
        let (names, script_sha256) = match &script {
            None => (packages.to_vec(), None),
            Some(path) => script_roots(path, &policy, audit.as_ref())?,
        };
        let plan = plan(&policy, &names).map_err(env_failure)?;
        let site = BuildSite {
            backend: match backend {
                Backend::Venv => EnvBackend::Venv,
                Backend::Docker => EnvBackend::Docker,
            },
            python,
            base_image,
            cache: &cache,
            audit: audit.as_deref().map(|log| BuildAudit {
                log,
                script_sha256: script_sha256.as_deref(),
            }),
        };
        let handle =
            ensure(&site, &policy, &plan, &SpinnerProgress::default()).map_err(env_failure)?;
        Ok::<_, Failure>((plan, handle))
    })();
    let (plan, handle) = match result {
        Ok(r) => r,
        Err((code, message)) => return fail(code, message),
    };
    let pins = |list: &[scriptbox::policy::lock::LockedPackage]| -> Vec<String> {
        list.iter()
            .map(|p| format!("{}=={}", p.name, p.version))
            .collect()
    };
    let mut all = pins(&plan.base);
    all.extend(pins(&plan.extra));
    all.sort();
    match format {
        Format::Json => {
            let mut out = serde_json::json!({
                "schema": "scriptbox.env-build/1",
                "key": handle.key,
                "kind": handle.kind(),
                "base": handle.base,
                "cache_hit": handle.cache_hit,
                "build_seconds": handle.build_seconds,
                "packages": all,
                "layer_packages": handle.layer_packages,
            });
            match &handle.location {
                EnvLocation::Venv {
                    path,
                    python,
                    site_packages,
                } => {
                    out["path"] = serde_json::json!(path);
                    out["python"] = serde_json::json!(python);
                    out["site_packages"] = serde_json::json!(site_packages);
                }
                EnvLocation::Image { id, tag } => {
                    out["image"] = serde_json::json!(tag);
                    out["image_id"] = serde_json::json!(id);
                }
            }
            println!("{out}");
        }
        Format::Text => {
            let where_ = match &handle.location {
                EnvLocation::Venv { path, .. } => path.display().to_string(),
                EnvLocation::Image { tag, .. } => tag.clone(),
            };
            println!(
                "{} {} {} ({} packages, {} in its own layer) at {}",
                if handle.cache_hit { "found" } else { "built" },
                handle.kind(),
                handle.key.short(),
                all.len(),
                handle.layer_packages.len(),
                where_
            );
        }
    }
    ExitCode::SUCCESS
}

/// `scriptbox env ls|rm|prune|verify`.
fn run_store(command: EnvCommand) -> ExitCode {
    let envs = match cache_dir() {
        Ok(d) => d.join("envs"),
        Err((code, message)) => return fail(code, message),
    };
    // Images are listed when an engine answers; venv layers always are.
    let engine = match Engine::connect() {
        Ok(e) => Some(e),
        Err(e) => {
            tracing::info!("images not included: {e}");
            None
        }
    };
    let engine = engine.as_ref();
    let time = |secs: u64| {
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs),
        )
    };
    let show = |e: &store::EnvEntry| {
        format!(
            "{}  {:<5}  {:>8.1} MiB  created {}  last used {}  hits {}",
            e.key.get(..16).unwrap_or(&e.key),
            e.kind,
            e.size as f64 / (1024.0 * 1024.0),
            time(e.created),
            time(e.last_used),
            e.hits
        )
    };
    let code = |e: &store::RemoveError| match e {
        store::RemoveError::Unknown(_) | store::RemoveError::Ambiguous(..) => 1,
        _ => EXIT_USAGE,
    };
    match command {
        EnvCommand::Ls { format } => match store::list(&envs, engine) {
            Ok(entries) => {
                for entry in entries {
                    match format {
                        Format::Json => {
                            println!("{}", serde_json::to_string(&entry).expect("serialises"))
                        }
                        Format::Text => println!("{}", show(&entry)),
                    }
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(code(&e), e.to_string()),
        },
        EnvCommand::Rm { key } => match store::remove(&envs, engine, &key) {
            Ok(removed) => {
                for entry in removed {
                    println!("removed {}", show(&entry));
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(code(&e), e.to_string()),
        },
        EnvCommand::Prune { max_size, max_age } => {
            if max_size.is_none() && max_age.is_none() {
                return fail(
                    EXIT_USAGE,
                    "say what to prune: --max-size SIZE and/or --max-age DURATION".into(),
                );
            }
            match store::prune(&envs, engine, max_size, max_age) {
                Ok(removed) => {
                    for entry in &removed {
                        println!("removed {}", show(entry));
                    }
                    if let Some(cache) = envs.parent() {
                        let freed = store::sweep_bytecode(cache);
                        if freed > 0 {
                            println!(
                                "removed {:.1} MiB of bytecode no environment uses",
                                freed as f64 / (1024.0 * 1024.0)
                            );
                        }
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(EXIT_USAGE, e.to_string()),
            }
        }
        EnvCommand::Verify { keys } => {
            let entries = match store::list(&envs, None) {
                Ok(e) => e,
                Err(e) => return fail(code(&e), e.to_string()),
            };
            let mut damaged = 0;
            let mut checked = 0;
            for entry in entries
                .iter()
                .filter(|e| keys.is_empty() || keys.iter().any(|k| e.key.starts_with(k)))
            {
                checked += 1;
                let dir = Path::new(&entry.location);
                let site = std::fs::read_dir(dir.join("lib"))
                    .ok()
                    .and_then(|mut d| d.next())
                    .and_then(|d| d.ok())
                    .map(|d| d.path().join("site-packages"))
                    .unwrap_or_else(|| dir.join("lib"));
                let result = scriptbox::env::verify::verify_layer(dir, &site)
                    .and_then(|()| scriptbox::env::verify::check_seal(dir));
                match result {
                    Ok(()) => println!("{}  intact", entry.key.get(..16).unwrap_or(&entry.key)),
                    Err(e) => {
                        damaged += 1;
                        println!(
                            "{}  damaged: {e}",
                            entry.key.get(..16).unwrap_or(&entry.key)
                        );
                    }
                }
            }
            if checked == 0 && !keys.is_empty() {
                return fail(
                    1,
                    format!("no cached venv layer matches {}", keys.join(", ")),
                );
            }
            if damaged > 0 {
                eprintln!(
                    "scriptbox: {damaged} damaged environment(s); the next `scriptbox env build` that needs one rebuilds it"
                );
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        EnvCommand::Build { .. } => unreachable!("handled by run_build"),
    }
}
