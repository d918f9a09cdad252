//! `scriptbox env`: build environments, and list, remove and prune them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Subcommand, ValueEnum};
use pep508_rs::PackageName;

use scriptbox::cache::{default_cache_dir, sha256_hex};
use scriptbox::engine::Engine;
use scriptbox::env::{EnvHandle, EnvLocation, LayerPlan, image, store, venv};
use scriptbox::policy::Policy;
use scriptbox::target::TargetPython;
use scriptbox::validate::{ValidateOptions, Verdict, validate_file};

use super::progress::Spinner;
use crate::{EXIT_USAGE, Format, load_policy};

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
/// installable), or why it cannot have them.
pub fn script_roots(path: &Path, policy: &Arc<Policy>) -> Result<Vec<String>, Failure> {
    let options = ValidateOptions {
        policy: Some(policy.clone()),
        sibling_modules: false,
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
        _ => Ok(report.buildable()),
    }
}

/// The policy's lock, or the failure to report when it has none.
pub fn require_lock(policy: &Policy) -> Result<&scriptbox::policy::lock::Lock, Failure> {
    policy.lock.as_ref().ok_or_else(|| {
        (
            1,
            format!(
                "{} has no lock; run `scriptbox policy lock --policy {}`",
                policy.path.display(),
                policy.name
            ),
        )
    })
}

/// The layer plan for `names` under the policy's lock.
pub fn plan(policy: &Policy, names: &[String]) -> Result<LayerPlan, Failure> {
    let lock = require_lock(policy)?;
    let mut roots = Vec::new();
    for name in names {
        roots.push(
            name.parse::<PackageName>()
                .map_err(|e| (EXIT_USAGE, format!("invalid package name '{name}': {e}")))?,
        );
    }
    LayerPlan::new(lock, &policy.preinstalled, &roots).map_err(|e| (1, e.to_string()))
}

/// The host interpreter for `python`, checked against the policy's version.
pub fn host_python(python: &str, policy: &Policy, cache: &Path) -> Result<TargetPython, Failure> {
    let target = TargetPython::from_interpreter(python, Some(cache))
        .map_err(|e| (EXIT_USAGE, e.to_string()))?;
    if target.minor != policy.python.minor {
        return Err((
            EXIT_USAGE,
            format!(
                "{python} is Python {}, but policy '{}' targets Python 3.{}",
                target.version, policy.name, policy.python.minor
            ),
        ));
    }
    Ok(target)
}

/// Builds (or finds) the environment for `plan` on `backend`.
pub fn ensure(
    backend: Backend,
    policy: &Policy,
    plan: &LayerPlan,
    python: &str,
    base_image: Option<&str>,
    cache: &Path,
) -> Result<EnvHandle, Failure> {
    let uv = scriptbox::uv::program();
    let build_err = |e: scriptbox::env::BuildError| (EXIT_USAGE, e.to_string());
    match backend {
        Backend::Venv => {
            let target = host_python(python, policy, cache)?;
            let spec = venv::VenvSpec {
                python: target
                    .executable
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(python)),
                python_version: target.version.to_string(),
                platform: policy.python.platform.clone(),
                packages: plan.base.clone(),
                index: policy.install.index.clone(),
            };
            let spinner = Spinner::start("building the venv layers with uv");
            let result = venv::ensure_layered(&spec, &plan.extra, cache, &uv).map_err(build_err);
            spinner.finish();
            result
        }
        Backend::Docker => {
            let engine = Engine::connect().map_err(|e| (EXIT_USAGE, e.to_string()))?;
            let base = match base_image {
                Some(b) => b.to_string(),
                None => scriptbox::images::default_base(&engine, policy).map_err(build_err)?,
            };
            // Bytecode for the image is compiled with a host interpreter of
            // the same X.Y when there is one; otherwise the image has none.
            // Asked only when building: a cache hit starts no process.
            let compile_with = || {
                host_python(python, policy, cache)
                    .ok()
                    .and_then(|t| t.executable)
            };
            let mut packages = plan.base.clone();
            packages.extend(plan.extra.iter().cloned());
            let spec = image::ImageSpec {
                base_image: base,
                platform: policy.python.platform.clone(),
                packages,
                lock_digest: lock_digest(policy),
                index: policy.install.index.clone(),
                system: policy
                    .allow
                    .iter()
                    .filter(|a| !a.system.is_empty())
                    .map(|a| (a.name.to_string(), a.system.clone()))
                    .collect(),
            };
            let spinner = Spinner::start("building the image");
            let result =
                image::ensure_image(&engine, &spec, cache, &uv, &compile_with, &mut |line| {
                    spinner.step(line);
                })
                .map_err(build_err);
            spinner.finish();
            result
        }
    }
}

/// sha256 of the policy's lock file.
pub fn lock_digest(policy: &Policy) -> String {
    std::fs::read(policy.lock_path())
        .map(|b| sha256_hex(&b))
        .unwrap_or_default()
}

/// `scriptbox env build`.
pub fn run_build(
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
    let result = (|| {
        let cache = cache_dir()?;
        let names = match &script {
            None => packages.to_vec(),
            Some(path) => script_roots(path, &policy)?,
        };
        let plan = plan(&policy, &names)?;
        let handle = ensure(backend, &policy, &plan, python, base_image, &cache)?;
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

/// `scriptbox env ls|rm|prune`.
pub fn run_store(command: EnvCommand) -> ExitCode {
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
