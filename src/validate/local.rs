//! Modules that sit beside a script, as `sys.path[0]` would find them.
//!
//! Each directory is listed once and shared by every script in it, so bulk
//! validation of a directory with thousands of files does not re-read it per
//! import.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::validate::installed::module_name_of_entry;

/// Importable module names per directory, listed on first use.
#[derive(Debug, Default)]
pub struct SiblingModules {
    listings: Mutex<HashMap<PathBuf, Arc<HashSet<String>>>>,
}

impl SiblingModules {
    /// The module names importable from `dir` (packages, `.py` files,
    /// extension modules). An unreadable directory provides none.
    pub fn in_dir(&self, dir: &Path) -> Arc<HashSet<String>> {
        if let Some(found) = self.lock().get(dir) {
            return Arc::clone(found);
        }
        let listing = Arc::new(list_modules(dir));
        self.lock()
            .entry(dir.to_path_buf())
            .or_insert(listing)
            .clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Arc<HashSet<String>>>> {
        // A panic while holding the lock cannot leave the map inconsistent.
        self.listings.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn list_modules(dir: &Path) -> HashSet<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return HashSet::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            // Follows symlinks, as the import system does.
            let is_dir = e.path().is_dir();
            module_name_of_entry(&name, is_dir).map(str::to_string)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_packages_modules_and_extensions_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("strategies")).unwrap();
        std::fs::write(dir.path().join("helpers.py"), "").unwrap();
        std::fs::write(dir.path().join("fast.cpython-311-x86_64-linux-gnu.so"), "").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "").unwrap();
        let siblings = SiblingModules::default();
        let found = siblings.in_dir(dir.path());
        let mut names: Vec<&str> = found.iter().map(String::as_str).collect();
        names.sort();
        assert_eq!(names, ["fast", "helpers", "strategies"]);
        std::fs::write(dir.path().join("later.py"), "").unwrap();
        assert!(
            !siblings.in_dir(dir.path()).contains("later"),
            "listed once"
        );
    }
}
