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

use super::venv::{Manifest, make_writable_and_remove};
use crate::cache::{read_json, write_json};

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
    /// `venv` (Docker images come with the image backend).
    pub kind: String,
    /// Where it is.
    pub path: PathBuf,
    /// Bytes on disk, recorded at build time.
    pub size: u64,
    /// When it was built (seconds since the epoch).
    pub created: u64,
    /// When it was last used (seconds since the epoch).
    pub last_used: u64,
    /// Builds plus cache hits.
    pub hits: u64,
}

fn now() -> u64 {
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

/// Every published environment, least recently used first.
pub fn list(envs: &Path) -> Vec<EnvEntry> {
    let Ok(dirs) = fs::read_dir(envs.join("venv")) else {
        return Vec::new();
    };
    let mut out: Vec<EnvEntry> = dirs
        .flatten()
        .filter_map(|d| {
            let path = d.path();
            let key = d.file_name().into_string().ok()?;
            let manifest: Manifest = read_json(&path.join("manifest.json"))?;
            let usage: Usage =
                read_json(&envs.join("usage").join(format!("{key}.json"))).unwrap_or_default();
            Some(EnvEntry {
                key,
                kind: "venv".into(),
                path,
                size: manifest.size,
                created: manifest.created,
                last_used: usage.last_used.max(manifest.created),
                hits: usage.hits,
            })
        })
        .collect();
    out.sort_by_key(|e| (e.last_used, e.created));
    out
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
pub fn remove(envs: &Path, prefix: &str) -> Result<EnvEntry, RemoveError> {
    let matches: Vec<EnvEntry> = list(envs)
        .into_iter()
        .filter(|e| e.key.starts_with(prefix))
        .collect();
    match matches.len() {
        0 => Err(RemoveError::Unknown(prefix.into())),
        1 => {
            let entry = matches.into_iter().next().expect("one match");
            remove_entry(envs, &entry)?;
            Ok(entry)
        }
        n => Err(RemoveError::Ambiguous(prefix.into(), n)),
    }
}

fn remove_entry(envs: &Path, entry: &EnvEntry) -> Result<(), RemoveError> {
    let io = |e: std::io::Error| RemoveError::Io {
        path: entry.path.clone(),
        reason: e.to_string(),
    };
    // Under the key's build lock: never remove what is being (re)built.
    let lock_path = envs.join("locks").join(format!("{}.lock", entry.key));
    let lock = fs::File::create(&lock_path).map_err(io)?;
    lock.lock().map_err(io)?;
    make_writable_and_remove(&entry.path).map_err(io)?;
    let _ = fs::remove_file(envs.join("usage").join(format!("{}.json", entry.key)));
    Ok(())
}

/// Evicts least recently used environments until the total size is at most
/// `max_size` and none is unused for longer than `max_age`.
pub fn prune(
    envs: &Path,
    max_size: Option<u64>,
    max_age: Option<Duration>,
) -> Result<Vec<EnvEntry>, RemoveError> {
    let entries = list(envs);
    let mut total: u64 = entries.iter().map(|e| e.size).sum();
    let cutoff = max_age.map(|age| now().saturating_sub(age.as_secs()));
    let mut removed = Vec::new();
    for entry in entries {
        let too_old = cutoff.is_some_and(|c| entry.last_used < c);
        let too_big = max_size.is_some_and(|m| total > m);
        if !(too_old || too_big) {
            continue;
        }
        remove_entry(envs, &entry)?;
        total -= entry.size;
        removed.push(entry);
    }
    Ok(removed)
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
