//! The environment builder: cached, content-addressed environments holding
//! exactly a script's allowed packages.
//!
//! The validation stage yields a dependency set; [`build::plan`] turns it
//! into the pinned packages of the policy's lock ([`closure`]), split into
//! layers, and [`build::ensure`] turns those into an [`EnvHandle`] the
//! runner can use: venv layers ([`venv`]) or a Docker image ([`image`]).
//! Environments are keyed by what they contain ([`key::EnvKey`]), never by
//! script.

pub mod build;
pub mod bytecode;
pub mod image;
pub mod install;
pub mod key;
pub mod scratch;
pub mod store;
pub mod system_packages;
pub mod venv;
pub mod verify;

use std::path::PathBuf;

use pep508_rs::PackageName;
use serde::Serialize;

use key::EnvKey;

use crate::policy::lock::{Lock, LockedPackage};

/// Why an environment could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A cache directory could not be prepared.
    #[error("cache {}: {reason}", path.display())]
    Cache {
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// uv could not be started.
    #[error(
        "cannot run uv ('{uv}'): {reason} (install it with `python3 -m pip install uv`, or set SCRIPTBOX_UV)"
    )]
    Uv {
        /// The uv command.
        uv: String,
        /// The OS error.
        reason: String,
    },
    /// The Docker engine failed.
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    /// uv failed; its explanation names the package or the cause.
    #[error("{step} failed:\n{detail}")]
    Step {
        /// What was being done.
        step: String,
        /// uv's explanation.
        detail: String,
    },
    /// Building one layer failed: the error, with the packages that layer
    /// was to hold (so the audit log can name them).
    #[error("{source}")]
    Layer {
        /// `name==version` of the layer's packages.
        packages: Vec<String>,
        /// What went wrong.
        source: Box<BuildError>,
    },
}

impl BuildError {
    /// Marks the error as the failure of the layer holding `packages`.
    pub fn in_layer(self, packages: &[LockedPackage]) -> BuildError {
        match self {
            BuildError::Layer { .. } => self,
            other => BuildError::Layer {
                packages: pins(packages),
                source: Box::new(other),
            },
        }
    }

    /// `name==version` of the packages of the layer whose build failed;
    /// empty when the failure was not one layer's (uv missing, say).
    pub fn layer_packages(&self) -> &[String] {
        match self {
            BuildError::Layer { packages, .. } => packages,
            _ => &[],
        }
    }
}

/// Where a built environment is.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum EnvLocation {
    /// A venv layer on the host.
    Venv {
        /// The layer's directory.
        path: PathBuf,
        /// Its interpreter.
        python: PathBuf,
        /// The site-packages of this layer and every layer underneath, top
        /// first (what the sandbox must make readable).
        site_packages: Vec<PathBuf>,
    },
    /// A Docker image.
    Image {
        /// The image id.
        id: String,
        /// Its tag, `scriptbox-env:<key>`.
        tag: String,
    },
}

/// A built (or found) environment: what the run stage needs.
#[derive(Debug, Clone, Serialize)]
pub struct EnvHandle {
    /// Its content address.
    pub key: EnvKey,
    /// Where it is.
    pub location: EnvLocation,
    /// The layer it is built on, if any.
    pub base: Option<EnvKey>,
    /// `name==version` of the packages in its own (top) layer.
    pub layer_packages: Vec<String>,
    /// True when nothing had to be built.
    pub cache_hit: bool,
    /// Seconds spent building (0 for a hit).
    pub build_seconds: f64,
    /// The layers this call built (not found in the cache), bottom first:
    /// what the audit log records as installed.
    pub built: Vec<BuiltLayer>,
}

/// A layer built by one `ensure` call.
#[derive(Debug, Clone, Serialize)]
pub struct BuiltLayer {
    /// The layer's key.
    pub key: EnvKey,
    /// `name==version` of the packages installed in it.
    pub packages: Vec<String>,
}

impl EnvHandle {
    /// `venv` or `image`.
    pub fn kind(&self) -> &'static str {
        match self.location {
            EnvLocation::Venv { .. } => "venv",
            EnvLocation::Image { .. } => "image",
        }
    }
}

/// `name==version` of each package.
pub fn pins(packages: &[LockedPackage]) -> Vec<String> {
    packages
        .iter()
        .map(|p| format!("{}=={}", p.name, p.version))
        .collect()
}

/// A script's packages split into layers: what the policy's base layer
/// holds (its preinstalled closure) and what must be added on top.
#[derive(Debug, Clone, Default)]
pub struct LayerPlan {
    /// The base layer's pinned packages.
    pub base: Vec<LockedPackage>,
    /// The pinned packages the base lacks.
    pub extra: Vec<LockedPackage>,
}

impl LayerPlan {
    /// Plans the layers for `roots` under a lock whose base holds the
    /// closure of `preinstalled`.
    pub fn new(
        lock: &Lock,
        preinstalled: &[PackageName],
        roots: &[PackageName],
    ) -> Result<LayerPlan, NotInLock> {
        let base = closure(lock, preinstalled)?;
        let extra = closure(lock, roots)?
            .into_iter()
            .filter(|p| !base.iter().any(|b| b.name == p.name))
            .collect();
        Ok(LayerPlan { base, extra })
    }
}

/// Why a package set cannot be taken from a lock.
#[derive(Debug, thiserror::Error)]
#[error("'{0}' is not pinned in the policy's lock (is it allowed? run `scriptbox policy lock`)")]
pub struct NotInLock(pub String);

/// The pinned closure of `roots` in `lock`: the roots and, transitively,
/// everything the lock says they need.
pub fn closure(lock: &Lock, roots: &[PackageName]) -> Result<Vec<LockedPackage>, NotInLock> {
    for root in roots {
        if !lock.packages.contains_key(root) {
            return Err(NotInLock(root.to_string()));
        }
    }
    let chosen = lock.closure_of(roots.iter().map(ToString::to_string));
    Ok(lock
        .packages
        .values()
        .filter(|p| chosen.contains(p.name.as_ref()))
        .cloned()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closure_follows_the_lock() {
        let lock = Lock::parse(
            "pandas==2 \\\n    --hash=sha256:a\n    # via -r allowed.in\nnumpy==2 \\\n    --hash=sha256:b\n    # via\n    #   -r allowed.in\n    #   pandas\nsix==1 \\\n    --hash=sha256:c\n    # via python-dateutil\npython-dateutil==2 \\\n    --hash=sha256:d\n    # via pandas\nrequests==2 \\\n    --hash=sha256:e\n    # via -r allowed.in\n",
        );
        let names = |roots: &[&str]| -> Vec<String> {
            let roots: Vec<PackageName> = roots.iter().map(|r| r.parse().unwrap()).collect();
            closure(&lock, &roots)
                .unwrap()
                .iter()
                .map(|p| p.name.to_string())
                .collect()
        };
        assert_eq!(
            names(&["pandas"]),
            ["numpy", "pandas", "python-dateutil", "six"]
        );
        assert_eq!(names(&["requests"]), ["requests"]);
        assert!(closure(&lock, &["flask".parse().unwrap()]).is_err());
    }
}
