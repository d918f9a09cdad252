//! Checking a published venv layer for changes made by hand.
//!
//! Two checks, cheap and thorough:
//! - the *seal*, taken at publication: the modification time of every
//!   directory below the layer's root. Removing, adding or renaming any file
//!   changes its directory's time, so comparing the seal (one `stat` per
//!   directory, not per file) catches it on every cache hit;
//! - [`verify_layer`], for `scriptbox env verify`: every distribution's
//!   `RECORD` lists its files with their sizes, so a missing or truncated
//!   file is named with the package it belongs to.
//!
//! Published layers are read-only, so only someone with the cache owner's
//! rights can make such changes.

use std::fs;
use std::path::{Path, PathBuf};

/// What is wrong with a layer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Corruption {
    /// A file a distribution installed is missing or has another size.
    #[error("{dist}: {} {problem}", file.display())]
    File {
        /// The distribution (`name-version`).
        dist: String,
        /// The file.
        file: PathBuf,
        /// `is missing`, or the size difference.
        problem: String,
    },
    /// A file scriptbox writes is missing (`manifest.json`, `bin/python`).
    #[error("{} is missing", .0.display())]
    Layer(PathBuf),
    /// Something in a directory changed after publication.
    #[error("{} changed after the environment was built (a file removed, added or renamed by hand)", .0.display())]
    Changed(PathBuf),
}

/// The file in a layer's root holding its seal.
pub const SEAL_FILE: &str = "seal.json";

/// Directory modification times below a layer's root (the root itself
/// excluded: publishing writes files there).
pub type Seal = Vec<(String, i64, i64)>;

/// Takes the seal of the layer at `venv`.
pub fn seal(venv: &Path) -> Seal {
    use std::os::unix::fs::MetadataExt;
    let mut out = Seal::new();
    for entry in walkdir::WalkDir::new(venv)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        .flatten()
    {
        if !entry.file_type().is_dir() {
            continue;
        }
        if let (Ok(meta), Ok(rel)) = (entry.metadata(), entry.path().strip_prefix(venv)) {
            out.push((
                rel.to_string_lossy().into_owned(),
                meta.mtime(),
                meta.mtime_nsec(),
            ));
        }
    }
    out
}

/// Compares the layer at `venv` with the seal recorded in it.
pub fn check_seal(venv: &Path) -> Result<(), Corruption> {
    use std::os::unix::fs::MetadataExt;
    let seal: Seal = crate::cache::read_json(&venv.join(SEAL_FILE))
        .ok_or_else(|| Corruption::Layer(venv.join(SEAL_FILE)))?;
    for (rel, secs, nanos) in seal {
        let dir = venv.join(&rel);
        match fs::metadata(&dir) {
            Ok(m) if m.mtime() == secs && m.mtime_nsec() == nanos => {}
            _ => return Err(Corruption::Changed(dir)),
        }
    }
    Ok(())
}

/// Checks the layer at `venv` whose site-packages is `site`.
pub fn verify_layer(venv: &Path, site: &Path) -> Result<(), Corruption> {
    for required in [venv.join("manifest.json"), venv.join("bin").join("python")] {
        if !required.exists() {
            return Err(Corruption::Layer(required));
        }
    }
    let entries = fs::read_dir(site).map_err(|_| Corruption::Layer(site.to_path_buf()))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(dist) = name.to_str().and_then(|n| n.strip_suffix(".dist-info")) else {
            continue;
        };
        let record = entry.path().join("RECORD");
        let Ok(text) = fs::read_to_string(&record) else {
            return Err(Corruption::File {
                dist: dist.to_string(),
                file: record,
                problem: "is missing".into(),
            });
        };
        for line in text.lines() {
            let mut fields = line.rsplitn(3, ',');
            let (Some(size), Some(_hash), Some(path)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let path = path.trim_matches('"');
            if path.is_empty() {
                continue;
            }
            let file = site.join(path);
            match fs::symlink_metadata(&file) {
                Err(_) => {
                    return Err(Corruption::File {
                        dist: dist.to_string(),
                        file,
                        problem: "is missing".into(),
                    });
                }
                Ok(meta) => {
                    if let Ok(expected) = size.parse::<u64>()
                        && meta.is_file()
                        && meta.len() != expected
                    {
                        return Err(Corruption::File {
                            dist: dist.to_string(),
                            file,
                            problem: format!("has {} bytes, {expected} installed", meta.len()),
                        });
                    }
                }
            }
        }
    }
    Ok(())
}
