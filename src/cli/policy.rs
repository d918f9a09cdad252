//! `scriptbox policy check|lock|explain`: the administrators' whitelist
//! policies.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::{EXIT_USAGE, Format, POLICIES_DIR, load_policy};

#[derive(Subcommand)]
/// `scriptbox policy ...`
pub enum PolicyCommand {
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

/// Runs `scriptbox policy ...`.
pub fn run(command: PolicyCommand) -> ExitCode {
    match command {
        PolicyCommand::Check { paths, format } => run_check(paths, format),
        PolicyCommand::Explain { name, policy } => run_explain(&name, &policy),
        PolicyCommand::Lock { policy } => run_lock(&policy),
    }
}

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

fn run_check(paths: Vec<PathBuf>, format: Format) -> ExitCode {
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

fn run_explain(name: &str, policy: &str) -> ExitCode {
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

fn run_lock(policy: &str) -> ExitCode {
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
