//! Venv layers: content-addressed virtual environments on the host.
//!
//! Published environments live in `<cache>/envs/venv/<key>/`, read-only and
//! never modified; they are built in a scratch directory and renamed into
//! place (see [`super::scratch`]), so no half-built entry is ever visible.
//!
//! Environments are layered: the *base* layer holds the policy's
//! preinstalled closure; a script that needs more gets a small layer holding
//! only what the base lacks, whose site-packages carries a `.pth` file naming
//! the base's site-packages. Python appends that directory to `sys.path` at
//! start-up, so one extra package never copies pandas again.
//!
//! Each layer is made by uv from the policy lock's pins ([`super::install`])
//! and gets its bytecode at build time ([`super::bytecode`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::install::{InstallTarget, install, run_step};
use super::key::KeyInputs;
use super::scratch::{KeyLock, Scratch, cache_err};
use super::{BuildError, EnvHandle, EnvLocation};
use crate::policy::lock::LockedPackage;

/// The name of the overlay file in a layer's site-packages.
pub const OVERLAY_PTH: &str = "_scriptbox_base.pth";

/// What a venv layer should hold.
#[derive(Debug, Clone)]
pub struct VenvSpec {
    /// The interpreter to base the venv on.
    pub python: PathBuf,
    /// Its full version (part of the key).
    pub python_version: String,
    /// Its platform (part of the key).
    pub platform: String,
    /// The pinned packages of this layer.
    pub packages: Vec<LockedPackage>,
    /// The simple index to fetch them from (the policy's).
    pub index: String,
}

/// Recorded in each environment at build time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// The key inputs, for `env ls` and audits.
    pub inputs: serde_json::Value,
    /// When it was built (seconds since the epoch).
    pub created: u64,
    /// Bytes on disk, measured at build time.
    #[serde(default)]
    pub size: u64,
    /// The key of the layer underneath, if any.
    #[serde(default)]
    pub base: Option<String>,
}

/// Options that change what a venv build produces (part of the key).
const BUILD_OPTIONS: &[&str] = &[
    "bytecode-unchecked-hash",
    "no-deps",
    "only-binary",
    "require-hashes",
];

/// The installer's version, which is part of every key; cached by the uv
/// binary's identity so that a cache hit does not start uv.
pub fn uv_version(uv: &str, cache: &Path) -> Result<String, BuildError> {
    let entry = crate::cache::file_identity(Path::new(uv))
        .map(|id| cache.join("uv-version").join(format!("{id}.json")));
    if let Some(version) = entry.as_deref().and_then(crate::cache::read_json::<String>) {
        return Ok(version);
    }
    // A launcher script (pyenv's shim): its answer is kept briefly.
    let script_entry = crate::cache::script_identity(Path::new(uv))
        .map(|id| cache.join("uv-version").join(format!("script-{id}.json")));
    if let Some(version) = script_entry
        .as_deref()
        .and_then(|f| crate::cache::read_json_fresh::<String>(f, crate::cache::SCRIPT_ANSWER_TTL))
    {
        return Ok(version);
    }
    let out = Command::new(uv)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| BuildError::Uv {
            uv: uv.into(),
            reason: e.to_string(),
        })?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || !version.starts_with("uv ") {
        return Err(BuildError::Uv {
            uv: uv.into(),
            reason: format!("`{uv} --version` answered {:?} ({})", version, out.status),
        });
    }
    if let Some(entry) = entry.as_ref().or(script_entry.as_ref()) {
        crate::cache::write_json(entry, &version);
    }
    Ok(version)
}

/// The site-packages directory of a venv for Python `version` (X.Y.Z).
pub fn site_packages(venv: &Path, version: &str) -> PathBuf {
    let minor: String = version.split('.').take(2).collect::<Vec<_>>().join(".");
    venv.join("lib")
        .join(format!("python{minor}"))
        .join("site-packages")
}

/// Returns the environment holding `base` plus `extra`: the base layer, and
/// on top of it a layer with `extra` when that is not empty. Each layer is
/// built once.
pub fn ensure_layered(
    base: &VenvSpec,
    extra: &[LockedPackage],
    cache: &Path,
    uv: &str,
) -> Result<EnvHandle, BuildError> {
    let base_handle = ensure_venv(base, None, cache, uv)?;
    if extra.is_empty() {
        return Ok(base_handle);
    }
    let top = VenvSpec {
        packages: extra.to_vec(),
        ..base.clone()
    };
    let mut handle = ensure_venv(&top, Some(&base_handle), cache, uv)?;
    handle.build_seconds += base_handle.build_seconds;
    handle.cache_hit &= base_handle.cache_hit;
    let mut built = base_handle.built;
    built.append(&mut handle.built);
    handle.built = built;
    Ok(handle)
}

/// Returns the layer for `spec` on top of `base`, building it once if needed.
pub fn ensure_venv(
    spec: &VenvSpec,
    base: Option<&EnvHandle>,
    cache: &Path,
    uv: &str,
) -> Result<EnvHandle, BuildError> {
    let uv_version = uv_version(uv, cache)?;
    let mut inputs = KeyInputs::new(
        "venv",
        &spec.python_version,
        &spec.platform,
        &spec.packages,
        BUILD_OPTIONS,
        &uv_version,
    );
    inputs.base = base.map(|b| b.key.to_string());
    let key = inputs.key();
    let span = tracing::info_span!("build", env = %key.short(), kind = "venv");
    let _guard = span.enter();
    let envs = cache.join("envs");
    let published = envs.join("venv").join(key.as_str());
    let handle = |cache_hit: bool, build_seconds: f64| EnvHandle {
        key: key.clone(),
        location: EnvLocation::Venv {
            python: published.join("bin").join("python"),
            site_packages: layer_paths(&published, &spec.python_version, base),
            path: published.clone(),
        },
        base: base.map(|b| b.key.clone()),
        layer_packages: super::pins(&spec.packages),
        cache_hit,
        build_seconds,
        built: if cache_hit {
            Vec::new()
        } else {
            vec![super::BuiltLayer {
                key: key.clone(),
                packages: super::pins(&spec.packages),
            }]
        },
    };
    if is_published(&published) && intact(&published) {
        super::store::record_use(&envs, key.as_str());
        return Ok(handle(true, 0.0));
    }
    // One builder per key: the others wait here, then find it published.
    let _lock = KeyLock::acquire(&envs, key.as_str())?;
    if is_published(&published) && intact(&published) {
        super::store::record_use(&envs, key.as_str());
        return Ok(handle(true, 0.0));
    }
    let started = Instant::now();
    let in_layer = |e: BuildError| e.in_layer(&spec.packages);
    let scratch = Scratch::claim(&envs).map_err(in_layer)?;
    build_into(
        &scratch.path,
        spec,
        &inputs,
        base,
        uv,
        &cache.join("bytecode"),
    )
    .map_err(in_layer)?;
    scratch.publish(&published).map_err(in_layer)?;
    super::store::record_use(&envs, key.as_str());
    Ok(handle(false, started.elapsed().as_secs_f64()))
}

/// True when `dir` holds a complete environment (its manifest is written
/// last) whose interpreter link still resolves.
fn is_published(dir: &Path) -> bool {
    dir.join("manifest.json").is_file() && dir.join("bin").join("python").exists()
}

/// Checks a published layer against its seal; a corrupted one is rebuilt
/// in full (the rename replaces it), never patched.
fn intact(published: &Path) -> bool {
    match super::verify::check_seal(published) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(
                "rebuilding corrupted environment {}: {e}",
                published.display()
            );
            false
        }
    }
}

/// The site-packages of this layer and of every layer underneath, top first.
fn layer_paths(venv: &Path, version: &str, base: Option<&EnvHandle>) -> Vec<PathBuf> {
    let mut paths = vec![site_packages(venv, version)];
    if let Some(EnvHandle {
        location: EnvLocation::Venv { site_packages, .. },
        ..
    }) = base
    {
        paths.extend(site_packages.iter().cloned());
    }
    paths
}

fn build_into(
    work: &Path,
    spec: &VenvSpec,
    inputs: &KeyInputs,
    base: Option<&EnvHandle>,
    uv: &str,
    bytecode_store: &Path,
) -> Result<(), BuildError> {
    let mut create = crate::uv::command(uv, work);
    create
        .args(["venv", "--quiet", "--relocatable", "--python"])
        .arg(&spec.python)
        .arg(work);
    run_step(create, "creating the venv", uv)?;
    if let Some(EnvHandle {
        location: EnvLocation::Venv { site_packages, .. },
        ..
    }) = base
    {
        // The overlay: every lower layer's site-packages, in order.
        let mut text = String::new();
        for dir in site_packages {
            text.push_str(&dir.to_string_lossy());
            text.push('\n');
        }
        let pth = self::site_packages(work, &spec.python_version).join(OVERLAY_PTH);
        fs::write(&pth, text).map_err(|e| cache_err(&pth, e))?;
    }
    let python = work.join("bin").join("python");
    install(
        uv,
        work,
        &spec.packages,
        &spec.index,
        &InstallTarget::Venv(&python),
    )?;
    let stats = super::bytecode::compile_layer(
        &site_packages(work, &spec.python_version),
        &python,
        &spec.python_version,
        bytecode_store,
    )?;
    tracing::info!(
        "bytecode for {} sources, {} compiled now",
        stats.sources,
        stats.compiled
    );
    let manifest = Manifest {
        inputs: serde_json::to_value(inputs).expect("inputs serialise"),
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        size: super::store::disk_size(work),
        base: base.map(|b| b.key.to_string()),
    };
    let seal = work.join(super::verify::SEAL_FILE);
    fs::write(
        &seal,
        serde_json::to_vec(&super::verify::seal(work)).expect("seal serialises"),
    )
    .map_err(|e| cache_err(&seal, e))?;
    let path = work.join("manifest.json");
    fs::write(
        &path,
        serde_json::to_vec_pretty(&manifest).expect("manifest serialises"),
    )
    .map_err(|e| cache_err(&path, e))
}
