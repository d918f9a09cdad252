//! The environment cache as a whole: listing, usage, removal and eviction.
//!
//! The engine and the file system record no "last used", so scriptbox keeps
//! its own: `envs/usage/<key>.json` holds the hit count and last use of each
//! environment, updated on every build or hit. Eviction removes the least
//! recently used first, each under its key's build lock so that nothing is
//! removed while it is being built.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::scratch::make_writable_and_remove;
use super::venv::Manifest;
use crate::cache::{read_json, write_json};
use crate::engine::{Engine, labels};

/// How often an environment was used, and when last.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Builds plus cache hits.
    pub hits: u64,
    /// Seconds since the epoch.
    pub last_used: u64,
}

/// One cached environment, as `env ls` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct EnvEntry {
    /// The full key.
    pub key: String,
    /// `venv` or `image`.
    pub kind: String,
    /// Where it is: the layer's directory, or the image's tag.
    pub location: String,
    /// The key of the venv layer underneath, if any.
    pub base: Option<String>,
    /// Bytes on disk, recorded at build time.
    pub size: u64,
    /// When it was built (seconds since the epoch).
    pub created: u64,
    /// When it was last used (seconds since the epoch).
    pub last_used: u64,
    /// Builds plus cache hits.
    pub hits: u64,
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Records one use of `key` (best effort: usage only guides eviction).
pub fn record_use(envs: &Path, key: &str) {
    let file = envs.join("usage").join(format!("{key}.json"));
    let mut usage: Usage = read_json(&file).unwrap_or_default();
    usage.hits += 1;
    usage.last_used = now();
    write_json(&file, &usage);
}

/// Every published environment (images too, given an engine), least
/// recently used first.
pub fn list(envs: &Path, engine: Option<&Engine>) -> Result<Vec<EnvEntry>, RemoveError> {
    let mut out = list_venvs(envs);
    if let Some(engine) = engine {
        out.extend(list_images(envs, engine)?);
    }
    out.sort_by_key(|e| (e.last_used, e.created));
    Ok(out)
}

fn usage_of(envs: &Path, key: &str) -> Usage {
    read_json(&envs.join("usage").join(format!("{key}.json"))).unwrap_or_default()
}

fn list_images(envs: &Path, engine: &Engine) -> Result<Vec<EnvEntry>, RemoveError> {
    let images = engine
        .images_labelled(&[format!("{}=env", labels::KIND)])
        .map_err(RemoveError::Engine)?;
    Ok(images
        .into_iter()
        .filter_map(|image| {
            let key = image.label(labels::KEY)?.to_string();
            // Labels are inherited by images built FROM ours: only the image
            // that carries our tag for this key is the environment.
            let well_formed = key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit());
            if !well_formed || !image.tags.contains(&super::image::env_tag(&key)) {
                return None;
            }
            let created: u64 = image.label(labels::CREATED)?.parse().ok()?;
            let usage = usage_of(envs, &key);
            Some(EnvEntry {
                location: super::image::env_tag(&key),
                kind: "image".into(),
                base: image.label(labels::BASE).map(str::to_string),
                size: image
                    .label(labels::LAYER_SIZE)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
                created,
                last_used: usage.last_used.max(created),
                hits: usage.hits,
                key,
            })
        })
        .collect())
}

fn list_venvs(envs: &Path) -> Vec<EnvEntry> {
    let Ok(dirs) = fs::read_dir(envs.join("venv")) else {
        return Vec::new();
    };
    dirs.flatten()
        .filter_map(|d| {
            let path = d.path();
            let key = d.file_name().into_string().ok()?;
            if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            let manifest: Manifest = read_json(&path.join("manifest.json"))?;
            let usage = usage_of(envs, &key);
            Some(EnvEntry {
                key,
                kind: "venv".into(),
                location: path.display().to_string(),
                base: manifest.base,
                size: manifest.size,
                created: manifest.created,
                last_used: usage.last_used.max(manifest.created),
                hits: usage.hits,
            })
        })
        .collect()
}

/// Why an environment could not be removed.
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    /// No published environment has that key (or key prefix).
    #[error("no cached environment with key '{0}' (see `scriptbox env ls`)")]
    Unknown(String),
    /// A prefix names several environments.
    #[error("key prefix '{0}' matches {1} environments; give more of the key")]
    Ambiguous(String, usize),
    /// The Docker engine failed.
    #[error(transparent)]
    Engine(crate::engine::EngineError),
    /// The file system refused.
    #[error("cannot remove {}: {reason}", path.display())]
    Io {
        /// The environment.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
}

/// Removes the environment whose key starts with `prefix`.
pub fn remove(
    envs: &Path,
    engine: Option<&Engine>,
    prefix: &str,
) -> Result<Vec<EnvEntry>, RemoveError> {
    let all = list(envs, engine)?;
    let matches: Vec<&EnvEntry> = all.iter().filter(|e| e.key.starts_with(prefix)).collect();
    match matches.len() {
        0 => Err(RemoveError::Unknown(prefix.into())),
        1 => {
            let entry = matches[0].clone();
            let mut removed = Vec::new();
            remove_with_dependents(envs, engine, &all, &entry, &mut removed)?;
            Ok(removed)
        }
        n => Err(RemoveError::Ambiguous(prefix.into(), n)),
    }
}

/// Removes `entry` and, first, every venv layer built on it (a layer
/// without its base would be broken).
fn remove_with_dependents(
    envs: &Path,
    engine: Option<&Engine>,
    all: &[EnvEntry],
    entry: &EnvEntry,
    removed: &mut Vec<EnvEntry>,
) -> Result<(), RemoveError> {
    for upper in all
        .iter()
        .filter(|e| e.kind == "venv" && e.base.as_deref() == Some(entry.key.as_str()))
    {
        remove_with_dependents(envs, engine, all, upper, removed)?;
    }
    if !removed.iter().any(|r| r.key == entry.key) {
        remove_entry(envs, engine, entry)?;
        removed.push(entry.clone());
    }
    Ok(())
}

fn remove_entry(envs: &Path, engine: Option<&Engine>, entry: &EnvEntry) -> Result<(), RemoveError> {
    let io = |e: std::io::Error| RemoveError::Io {
        path: PathBuf::from(&entry.location),
        reason: e.to_string(),
    };
    // Under the key's build lock: never remove what is being (re)built.
    let lock_path = envs.join("locks").join(format!("{}.lock", entry.key));
    let lock = fs::File::create(&lock_path).map_err(io)?;
    lock.lock().map_err(io)?;
    if entry.kind == "image" {
        if let Some(engine) = engine {
            engine
                .remove_image(&entry.location)
                .map_err(RemoveError::Engine)?;
        }
    } else {
        make_writable_and_remove(Path::new(&entry.location)).map_err(io)?;
    }
    let _ = fs::remove_file(envs.join("usage").join(format!("{}.json", entry.key)));
    Ok(())
}

/// Evicts least recently used environments until the total size is at most
/// `max_size` and none is unused for longer than `max_age`.
pub fn prune(
    envs: &Path,
    engine: Option<&Engine>,
    max_size: Option<u64>,
    max_age: Option<Duration>,
) -> Result<Vec<EnvEntry>, RemoveError> {
    let entries = list(envs, engine)?;
    let mut total: u64 = entries.iter().map(|e| e.size).sum();
    let cutoff = max_age.map(|age| now().saturating_sub(age.as_secs()));
    let mut removed: Vec<EnvEntry> = Vec::new();
    for entry in &entries {
        let too_old = cutoff.is_some_and(|c| entry.last_used < c);
        let too_big = max_size.is_some_and(|m| total > m);
        if !(too_old || too_big) || removed.iter().any(|r| r.key == entry.key) {
            continue;
        }
        let before = removed.len();
        remove_with_dependents(envs, engine, &entries, entry, &mut removed)?;
        for gone in &removed[before..] {
            total = total.saturating_sub(gone.size);
        }
    }
    Ok(removed)
}

/// Removes compiled files of the bytecode store that no environment links
/// any more (a hard-link count of one: only the store holds them), and
/// returns the bytes freed. Run after evictions.
pub fn sweep_bytecode(cache: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let store = cache.join("bytecode");
    let Ok(lock) = super::bytecode::store_lock(&store) else {
        return 0;
    };
    if lock.lock().is_err() {
        return 0;
    }
    let mut freed = 0;
    for entry in walkdir::WalkDir::new(cache.join("bytecode"))
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file() && e.file_name() != ".lock")
    {
        if let Ok(meta) = entry.metadata()
            && meta.nlink() == 1
            && fs::remove_file(entry.path()).is_ok()
        {
            freed += meta.len();
        }
    }
    freed
}

/// Bytes used by the files under `dir` (not following symlinks).
pub fn disk_size(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}
