//! Venv layers: content-addressed virtual environments on the host.
//!
//! Cache layout under `<cache>/envs/`:
//! - `venv/<key>/`: published environments, read-only, never modified;
//! - `tmp/<uuid>/`: builds in progress; a build is renamed into `venv/`
//!   only when complete, so no half-built entry is ever visible, even after
//!   `kill -9`. Leftovers no live build holds are removed on the next build;
//! - `locks/<key>.lock`: one builder per key across threads and processes.
//!
//! Each environment is made by uv from the policy lock's pins: wheels only,
//! every file checked against the lock's hashes (`--require-hashes`), no
//! dependency resolution (`--no-deps`: the closure is already pinned), and
//! bytecode compiled at build time. uv runs with a cleared environment, as
//! for locking.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::key::{EnvKey, KeyInputs};
use crate::policy::lock::LockedPackage;

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
    /// uv failed; its explanation names the package or the cause.
    #[error("{step} failed:\n{detail}")]
    Step {
        /// What was being done.
        step: String,
        /// uv's explanation.
        detail: String,
    },
}

/// What a venv layer should hold.
#[derive(Debug, Clone)]
pub struct VenvSpec {
    /// The interpreter to base the venv on.
    pub python: PathBuf,
    /// Its full version (part of the key).
    pub python_version: String,
    /// Its platform (part of the key).
    pub platform: String,
    /// The pinned closure to install.
    pub packages: Vec<LockedPackage>,
}

/// A built (or found) environment.
#[derive(Debug, Clone, Serialize)]
pub struct EnvHandle {
    /// Its content address.
    pub key: EnvKey,
    /// Where it is.
    pub path: PathBuf,
    /// True when it already existed.
    pub cache_hit: bool,
    /// Seconds spent (0 for a hit).
    pub build_seconds: f64,
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
}

/// Options that change what a venv build produces (part of the key).
const BUILD_OPTIONS: &[&str] = &[
    "compile-bytecode",
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
    let out = Command::new(uv)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| BuildError::Uv {
            uv: uv.into(),
            reason: e.to_string(),
        })?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if let Some(entry) = &entry {
        crate::cache::write_json(entry, &version);
    }
    Ok(version)
}

/// Returns the environment for `spec`, building it once if needed.
pub fn ensure_venv(spec: &VenvSpec, cache: &Path, uv: &str) -> Result<EnvHandle, BuildError> {
    let uv_version = uv_version(uv, cache)?;
    let inputs = KeyInputs::new(
        "venv",
        &spec.python_version,
        &spec.platform,
        &spec.packages,
        BUILD_OPTIONS,
        &uv_version,
    );
    let key = inputs.key();
    let span = tracing::info_span!("build", env = %key.short(), kind = "venv");
    let _guard = span.enter();
    let root = cache.join("envs");
    let published = root.join("venv").join(key.as_str());
    let hit = |key: EnvKey, path: PathBuf| EnvHandle {
        key,
        path,
        cache_hit: true,
        build_seconds: 0.0,
    };
    if published.join("manifest.json").is_file() {
        super::store::record_use(&root, key.as_str());
        return Ok(hit(key, published));
    }
    let cache_err = |path: &Path, e: std::io::Error| BuildError::Cache {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    for dir in ["venv", "tmp", "locks"] {
        fs::create_dir_all(root.join(dir)).map_err(|e| cache_err(&root.join(dir), e))?;
    }
    // One builder per key: the others wait here, then find it published.
    let lock_path = root.join("locks").join(format!("{key}.lock"));
    let lock = fs::File::create(&lock_path).map_err(|e| cache_err(&lock_path, e))?;
    lock.lock().map_err(|e| cache_err(&lock_path, e))?;
    if published.join("manifest.json").is_file() {
        super::store::record_use(&root, key.as_str());
        return Ok(hit(key, published));
    }
    clean_leftovers(&root);
    let started = Instant::now();
    let work = root.join("tmp").join(uuid::Uuid::new_v4().to_string());
    // Held while building so that clean_leftovers in another process skips it.
    let _claim = claim(&work).map_err(|e| cache_err(&work, e))?;
    let result = build_into(&work, spec, &inputs, uv);
    if let Err(e) = result {
        let _ = make_writable_and_remove(&work);
        return Err(e);
    }
    set_read_only(&work);
    if published.exists() {
        // A corrupted entry (its manifest was missing): replace it.
        make_writable_and_remove(&published).map_err(|e| cache_err(&published, e))?;
    }
    fs::rename(&work, &published).map_err(|e| cache_err(&published, e))?;
    let _ = fs::remove_file(work.with_extension("claim"));
    super::store::record_use(&root, key.as_str());
    Ok(EnvHandle {
        key,
        path: published,
        cache_hit: false,
        build_seconds: started.elapsed().as_secs_f64(),
    })
}

/// Creates the build directory and holds an exclusive lock on a claim file
/// beside it for as long as the returned file lives.
fn claim(work: &Path) -> std::io::Result<fs::File> {
    // Claim first, then create: a cleaner never sees an unclaimed build.
    let claim = fs::File::create(work.with_extension("claim"))?;
    claim.lock()?;
    fs::create_dir_all(work)?;
    Ok(claim)
}

/// Removes builds whose process died: their claim is no longer locked.
fn clean_leftovers(root: &Path) {
    let Ok(entries) = fs::read_dir(root.join("tmp")) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_claim = path.extension().is_some_and(|e| e == "claim");
        let (dir, claim_path) = if is_claim {
            (path.with_extension(""), path.clone())
        } else {
            (path.clone(), path.with_extension("claim"))
        };
        let alive = fs::File::open(&claim_path).is_ok_and(|f| f.try_lock().is_err());
        if alive {
            continue;
        }
        if dir.exists() {
            tracing::info!("removing leftover build {}", dir.display());
            let _ = make_writable_and_remove(&dir);
        }
        let _ = fs::remove_file(&claim_path);
    }
}

fn run_step(mut cmd: Command, step: &str, uv: &str) -> Result<(), BuildError> {
    let out = cmd.output().map_err(|e| BuildError::Uv {
        uv: uv.into(),
        reason: e.to_string(),
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(BuildError::Step {
        step: step.into(),
        detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

fn build_into(
    work: &Path,
    spec: &VenvSpec,
    inputs: &KeyInputs,
    uv: &str,
) -> Result<(), BuildError> {
    let venv = work;
    let mut create = crate::uv::command(uv, work);
    create
        .args(["venv", "--quiet", "--relocatable", "--python"])
        .arg(&spec.python)
        .arg(venv);
    run_step(create, "creating the venv", uv)?;

    if !spec.packages.is_empty() {
        let requirements = work.join("requirements.txt");
        let mut text = String::new();
        for p in &spec.packages {
            text.push_str(&format!("{}=={}", p.name, p.version));
            for h in &p.hashes {
                text.push_str(&format!(" --hash={h}"));
            }
            text.push('\n');
        }
        fs::File::create(&requirements)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| BuildError::Cache {
                path: requirements.clone(),
                reason: e.to_string(),
            })?;
        let mut install = crate::uv::command(uv, work);
        install
            .args(["pip", "install", "--quiet", "--no-config", "--python"])
            .arg(venv.join("bin").join("python"))
            .args([
                "--require-hashes",
                "--no-deps",
                "--only-binary",
                ":all:",
                "--compile-bytecode",
                "-r",
            ])
            .arg(&requirements);
        run_step(install, "installing the pinned packages", uv)?;
        let _ = fs::remove_file(&requirements);
    }
    let manifest = Manifest {
        inputs: serde_json::to_value(inputs).expect("inputs serialise"),
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        size: super::store::disk_size(work),
    };
    let path = work.join("manifest.json");
    fs::write(
        &path,
        serde_json::to_vec_pretty(&manifest).expect("manifest serialises"),
    )
    .map_err(|e| BuildError::Cache {
        path,
        reason: e.to_string(),
    })
}

/// Removes write permission everywhere: published environments are shared
/// by every script that needs them and must not change.
fn set_read_only(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for entry in walkdir::WalkDir::new(dir)
        .contents_first(true)
        .into_iter()
        .flatten()
    {
        if entry.path_is_symlink() {
            continue;
        }
        if let Ok(meta) = entry.metadata() {
            let mode = meta.permissions().mode() & !0o222;
            let _ = fs::set_permissions(entry.path(), fs::Permissions::from_mode(mode));
        }
    }
}

/// Restores write permission (directories need it for their entries to be
/// removed), then removes the tree.
pub(crate) fn make_writable_and_remove(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for entry in walkdir::WalkDir::new(dir).into_iter().flatten() {
        if entry.file_type().is_dir() {
            let _ = fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o755));
        }
    }
    fs::remove_dir_all(dir)
}
