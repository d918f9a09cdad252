//! The policies the service judges scripts by, by name, from its policy
//! directory. Each is a [`PolicyWatch`]: re-read when its file or its lock
//! changes, so an administrator's edit takes effect at the next request
//! without a restart, and a file that fails its check never replaces the
//! good policy held before it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::policy::Policy;
use crate::policy::reload::PolicyWatch;

/// Why a policy cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyLookupError {
    /// The name is not a plain policy name.
    #[error("'{0}' is not a policy name (expected letters, digits, '-' and '_')")]
    BadName(String),
    /// No such policy file.
    #[error("no policy '{0}' on this server")]
    Unknown(String),
    /// The file has errors and no good version was ever loaded.
    #[error("policy '{0}' has errors; an administrator must fix it (`scriptbox policy check`)")]
    Broken(String),
}

/// Policies by name, each following its files.
pub struct PolicyBook {
    dir: PathBuf,
    watches: Mutex<HashMap<String, Arc<PolicyWatch>>>,
}

impl PolicyBook {
    /// Policies from `dir` (`NAME.toml` with `NAME.lock` beside it).
    pub fn new(dir: PathBuf) -> PolicyBook {
        PolicyBook {
            dir,
            watches: Mutex::new(HashMap::new()),
        }
    }

    /// The policy directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The policy `name` in force now.
    pub fn get(&self, name: &str) -> Result<Arc<Policy>, PolicyLookupError> {
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(PolicyLookupError::BadName(name.to_string()));
        }
        let path = self.dir.join(format!("{name}.toml"));
        let existing = self
            .watches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned();
        if let Some(watch) = existing {
            return Ok(watch.current());
        }
        if !path.is_file() {
            return Err(PolicyLookupError::Unknown(name.to_string()));
        }
        // First use: the file must pass its check to be held at all.
        let watch = PolicyWatch::open(&path).map_err(|e| {
            tracing::error!("{e}");
            PolicyLookupError::Broken(name.to_string())
        })?;
        let watch = Arc::new(watch);
        let policy = watch.current();
        self.watches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_string())
            .or_insert(watch);
        Ok(policy)
    }

    /// The names of the policies in the directory, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| {
                        let p = e.path();
                        (p.extension().is_some_and(|x| x == "toml"))
                            .then(|| p.file_stem()?.to_str().map(str::to_string))
                            .flatten()
                    })
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}
