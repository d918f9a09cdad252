//! The build stage's entry points: from a script's dependency set to an
//! environment handle, the same for every edge (`scriptbox env build`,
//! `scriptbox run`, the service).
//!
//! [`plan`] pins the dependency set from the policy's lock and splits it
//! into the policy's base layer and what goes on top; [`ensure`] builds or
//! finds that environment as venv layers or a Docker image.

use std::path::{Path, PathBuf};

use pep508_rs::PackageName;

use super::{BuildError, EnvHandle, LayerPlan, NotInLock, image, venv};
use crate::audit::{BuildAudit, PolicyRef};
use crate::cache::sha256_hex;
use crate::engine::Engine;
use crate::policy::Policy;
use crate::policy::lock::Lock;
use crate::validate::target::{TargetError, TargetPython};

/// Where an environment is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvBackend {
    /// Venv layers on the host, for the local sandbox.
    Venv,
    /// A Docker image, for containers.
    Docker,
}

/// Why an environment cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum EnsureError {
    /// The policy has not been locked.
    #[error("{} has no lock; run `scriptbox policy lock --policy {policy}`", path.display())]
    NoLock {
        /// The policy file.
        path: PathBuf,
        /// The policy's name.
        policy: String,
    },
    /// A package name is not a valid distribution name.
    #[error("invalid package name '{name}': {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A package is not pinned in the lock (not allowed, or the lock is stale).
    #[error(transparent)]
    NotInLock(#[from] NotInLock),
    /// The host interpreter is not the policy's Python version.
    #[error("{python} is Python {found}, but policy '{policy}' targets Python 3.{minor}")]
    WrongPython {
        /// The interpreter as given.
        python: String,
        /// Its full version.
        found: String,
        /// The policy's name.
        policy: String,
        /// The policy's minor version.
        minor: u8,
    },
    /// The host interpreter could not be asked.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// Building failed (uv, the engine, the cache).
    #[error(transparent)]
    Build(#[from] BuildError),
}

impl EnsureError {
    /// True when the policy refuses (no lock, a package not in it), as
    /// opposed to a failure of the machine or the arguments.
    pub fn is_refusal(&self) -> bool {
        matches!(self, EnsureError::NoLock { .. } | EnsureError::NotInLock(_))
    }
}

/// What a build reports while it works (a spinner on a terminal; nothing
/// for the service).
pub trait BuildProgress {
    /// A build of `what` starts.
    fn begin(&self, _what: &str) {}
    /// One line of the build's progress.
    fn step(&self, _line: &str) {}
    /// The build ended.
    fn end(&self) {}
}

/// Progress reported nowhere.
pub struct Quiet;

impl BuildProgress for Quiet {}

/// The policy's lock, or why there is none.
pub fn require_lock(policy: &Policy) -> Result<&Lock, EnsureError> {
    policy.lock.as_ref().ok_or_else(|| EnsureError::NoLock {
        path: policy.path.clone(),
        policy: policy.name.clone(),
    })
}

/// sha256 of the policy's lock file (empty when it cannot be read).
pub fn lock_digest(policy: &Policy) -> String {
    std::fs::read(policy.lock_path())
        .map(|b| sha256_hex(&b))
        .unwrap_or_default()
}

/// The layer plan for distributions `names` under the policy's lock.
pub fn plan(policy: &Policy, names: &[String]) -> Result<LayerPlan, EnsureError> {
    let lock = require_lock(policy)?;
    let mut roots = Vec::new();
    for name in names {
        roots.push(
            name.parse::<PackageName>()
                .map_err(|e| EnsureError::InvalidName {
                    name: name.clone(),
                    reason: e.to_string(),
                })?,
        );
    }
    Ok(LayerPlan::new(lock, &policy.preinstalled, &roots)?)
}

/// The host interpreter `python`, checked against the policy's version.
pub fn host_python(
    python: &str,
    policy: &Policy,
    cache: &Path,
) -> Result<TargetPython, EnsureError> {
    let target = TargetPython::from_interpreter(python, Some(cache))?;
    if target.minor != policy.python.minor {
        return Err(EnsureError::WrongPython {
            python: python.to_string(),
            found: target.version.to_string(),
            policy: policy.name.clone(),
            minor: policy.python.minor,
        });
    }
    Ok(target)
}

/// Where and how to build: the same for every edge.
#[derive(Debug, Clone)]
pub struct BuildSite<'a> {
    /// Venv layers or an image.
    pub backend: EnvBackend,
    /// The host interpreter venv layers are based on (and image bytecode
    /// is compiled with).
    pub python: &'a str,
    /// Docker: the image to layer on (default: the policy's image, else
    /// `scriptbox/python:3.X`).
    pub base_image: Option<&'a str>,
    /// The cache directory.
    pub cache: &'a Path,
    /// Where to record what the build installed (or failed to), if
    /// anywhere.
    pub audit: Option<BuildAudit<'a>>,
}

/// Builds (or finds) the environment for `plan`, and records in the site's
/// audit log the packages of every layer it built, or of the layer whose
/// build failed (a cache hit records nothing).
pub fn ensure(
    site: &BuildSite,
    policy: &Policy,
    plan: &LayerPlan,
    progress: &dyn BuildProgress,
) -> Result<EnvHandle, EnsureError> {
    let result = build(site, policy, plan, progress);
    if let Some(audit) = &site.audit {
        let built = match &result {
            Ok(handle) => Some(Ok(handle)),
            Err(EnsureError::Build(e)) => Some(Err(e)),
            // Refusals and bad arguments: no build was attempted.
            Err(_) => None,
        };
        if let Some(built) = built {
            audit
                .log
                .record_build(&PolicyRef::from(policy), audit.script_sha256, built);
        }
    }
    result
}

fn build(
    site: &BuildSite,
    policy: &Policy,
    plan: &LayerPlan,
    progress: &dyn BuildProgress,
) -> Result<EnvHandle, EnsureError> {
    let uv = crate::uv::program();
    match site.backend {
        EnvBackend::Venv => {
            let target = host_python(site.python, policy, site.cache)?;
            let spec = venv::VenvSpec {
                python: target
                    .executable
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(site.python)),
                python_version: target.version.to_string(),
                platform: policy.python.platform.clone(),
                packages: plan.base.clone(),
                index: policy.install.index.clone(),
            };
            progress.begin("building the venv layers with uv");
            let result = venv::ensure_layered(&spec, &plan.extra, site.cache, &uv);
            progress.end();
            Ok(result?)
        }
        EnvBackend::Docker => {
            let engine = Engine::connect().map_err(BuildError::from)?;
            let base = match site.base_image {
                Some(b) => b.to_string(),
                None => crate::images::default_base(&engine, policy)?,
            };
            // Bytecode for the image is compiled with a host interpreter of
            // the same X.Y when there is one; otherwise the image has none.
            // Asked only when building: a cache hit starts no process.
            let compile_with = || {
                host_python(site.python, policy, site.cache)
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
            progress.begin("building the image");
            let result = image::ensure_image(
                &engine,
                &spec,
                site.cache,
                &uv,
                &compile_with,
                &mut |line| progress.step(line),
            );
            progress.end();
            Ok(result?)
        }
    }
}
