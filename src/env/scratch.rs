//! The parts of the cache every builder shares: one builder per key (a lock
//! file), scratch directories that a killed build leaves behind for the next
//! build to remove, and read-only publication.
//!
//! Layout under `<cache>/envs/`: `locks/<key>.lock` serialises builders of
//! one key across threads and processes; `tmp/<uuid>/` is a build in
//! progress, claimed by a locked `tmp/<uuid>.claim` for as long as its
//! builder lives.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::BuildError;

pub(crate) fn cache_err(path: &Path, e: std::io::Error) -> BuildError {
    BuildError::Cache {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// An exclusive hold on one key: released when dropped (or when the process
/// dies, however it dies).
pub struct KeyLock(#[allow(dead_code)] fs::File);

impl KeyLock {
    /// Waits until no other builder holds `key`.
    pub fn acquire(envs: &Path, key: &str) -> Result<KeyLock, BuildError> {
        let dir = envs.join("locks");
        fs::create_dir_all(&dir).map_err(|e| cache_err(&dir, e))?;
        let path = dir.join(format!("{key}.lock"));
        let file = fs::File::create(&path).map_err(|e| cache_err(&path, e))?;
        file.lock().map_err(|e| cache_err(&path, e))?;
        Ok(KeyLock(file))
    }
}

/// A build directory under `tmp/`, removed when dropped unless published.
pub struct Scratch {
    /// The directory.
    pub path: PathBuf,
    claim: Option<fs::File>,
}

impl Scratch {
    /// Claims a fresh directory, first removing leftovers of dead builds.
    pub fn claim(envs: &Path) -> Result<Scratch, BuildError> {
        let tmp = envs.join("tmp");
        fs::create_dir_all(&tmp).map_err(|e| cache_err(&tmp, e))?;
        clean_leftovers(&tmp);
        loop {
            let path = tmp.join(uuid::Uuid::new_v4().to_string());
            // Claim first, then create: a cleaner never sees an unclaimed
            // build. A cleaner may remove the claim file between its
            // creation and our lock; then the lock holds nothing, so retry.
            let claim_path = path.with_extension("claim");
            let claim = fs::File::create(&claim_path).map_err(|e| cache_err(&claim_path, e))?;
            claim.lock().map_err(|e| cache_err(&claim_path, e))?;
            if !same_file(&claim, &claim_path) {
                continue;
            }
            fs::create_dir_all(&path).map_err(|e| cache_err(&path, e))?;
            return Ok(Scratch {
                path,
                claim: Some(claim),
            });
        }
    }

    /// Makes the build read-only and renames it to `dest` atomically,
    /// replacing a corrupted entry there.
    pub fn publish(mut self, dest: &Path) -> Result<(), BuildError> {
        // The root keeps its write bit until after the rename: moving a
        // directory to another parent rewrites its `..` entry, which needs it.
        set_read_only(&self.path);
        let _ = fs::set_permissions(&self.path, fs::Permissions::from_mode(0o755));
        if dest.exists() {
            make_writable_and_remove(dest).map_err(|e| cache_err(dest, e))?;
        }
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(|e| cache_err(parent, e))?;
        }
        fs::rename(&self.path, dest).map_err(|e| cache_err(&self.path, e))?;
        let _ = fs::set_permissions(dest, fs::Permissions::from_mode(0o555));
        let _ = fs::remove_file(self.path.with_extension("claim"));
        self.claim = None;
        Ok(())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.claim.take().is_some() {
            let _ = make_writable_and_remove(&self.path);
            let _ = fs::remove_file(self.path.with_extension("claim"));
        }
    }
}

/// True when `path` still names the file open as `file`.
fn same_file(file: &fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Removes builds whose process died: their claim is no longer locked.
fn clean_leftovers(tmp: &Path) {
    let Ok(entries) = fs::read_dir(tmp) else {
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
        // Hold the dead build's claim while removing it, so that nothing
        // can claim the same name meanwhile.
        let Ok(claim) = fs::File::open(&claim_path) else {
            if dir.exists() && !is_claim {
                // A directory without a claim file: its builder died
                // between removing the claim and the directory.
                let _ = make_writable_and_remove(&dir);
            }
            continue;
        };
        if claim.try_lock().is_err() {
            continue;
        }
        if dir.exists() {
            tracing::info!("removing leftover build {}", dir.display());
            let _ = make_writable_and_remove(&dir);
        }
        let _ = fs::remove_file(&claim_path);
    }
}

/// Removes write permission everywhere: published environments are shared
/// by every script that needs them and must not change.
pub(crate) fn set_read_only(dir: &Path) {
    for entry in walkdir::WalkDir::new(dir)
        .follow_root_links(false)
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
    if fs::symlink_metadata(dir)?.file_type().is_symlink() {
        return fs::remove_file(dir);
    }
    for entry in walkdir::WalkDir::new(dir)
        .follow_root_links(false)
        .into_iter()
        .flatten()
    {
        if entry.file_type().is_dir() {
            let _ = fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o755));
        }
    }
    fs::remove_dir_all(dir)
}
