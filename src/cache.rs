//! scriptbox's on-disk cache: where it lives and how entries are written.
//!
//! Entries are JSON files written atomically (a temporary file in the same
//! directory, then a rename), so a reader never sees a half-written entry,
//! even if the writer is killed. Every entry is derived data: a missing,
//! stale-schema or unreadable entry is simply recomputed, and deleting the
//! whole directory is always safe.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

/// The cache directory: `$SCRIPTBOX_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/scriptbox`, else `~/.cache/scriptbox`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let dir = if let Some(dir) = std::env::var_os("SCRIPTBOX_CACHE_DIR") {
        PathBuf::from(dir)
    } else if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        PathBuf::from(dir).join("scriptbox")
    } else {
        PathBuf::from(std::env::var_os("HOME")?)
            .join(".cache")
            .join("scriptbox")
    };
    // Absolute, because uv runs in other directories and `.pth` overlays
    // name layers by path.
    std::path::absolute(&dir).ok()
}

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Reads a cached JSON entry; `None` when absent or unreadable.
pub fn read_json<T: DeserializeOwned>(file: &Path) -> Option<T> {
    let bytes = std::fs::read(file).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Writes a JSON entry atomically. Best effort: a cache that cannot be
/// written only costs speed, so failures are logged, not returned.
pub fn write_json<T: Serialize>(file: &Path, value: &T) {
    let result = (|| -> std::io::Result<()> {
        let dir = file.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(&serde_json::to_vec(value)?)?;
        tmp.persist(file).map_err(|e| e.error)?;
        Ok(())
    })();
    if let Err(e) = result {
        tracing::debug!("cache entry {} not written: {e}", file.display());
    }
}

/// `program` itself, or a bare command name looked up on `PATH`.
fn find_program(program: &Path) -> Option<std::path::PathBuf> {
    if program.components().count() == 1 && !program.exists() {
        let search = std::env::var_os("PATH")?;
        std::env::split_paths(&search)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    } else {
        Some(program.to_path_buf())
    }
}

/// A digest identifying an executable file by its resolved path, size,
/// modification time and inode, for caching what it says about itself.
/// `None` for scripts (`#!`): a pyenv-style shim picks a different program
/// per directory and environment, so its answers cannot be cached. A bare
/// command name is looked up on `PATH`.
pub fn file_identity(program: &Path) -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let path = find_program(program)?;
    let real = std::fs::canonicalize(&path).ok()?;
    let mut head = [0u8; 2];
    std::fs::File::open(&real)
        .ok()?
        .read_exact(&mut head)
        .ok()?;
    if &head == b"#!" {
        return None;
    }
    let meta = std::fs::metadata(&real).ok()?;
    Some(sha256_hex(
        format!(
            "{}\0{}\0{}\0{}\0{}\0{}",
            path.display(),
            real.display(),
            meta.len(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ino()
        )
        .as_bytes(),
    ))
}

/// How long an answer from a launcher script stays good.
pub const SCRIPT_ANSWER_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// The identity of a launcher script (a pyenv shim, say) on `PATH` or at
/// `program`: which real program it starts depends on things outside the
/// file (`PYENV_VERSION`, the working directory's `.python-version`), so an
/// answer keyed by this is only trusted for [`SCRIPT_ANSWER_TTL`] (see
/// [`read_json_fresh`]). `None` for anything that is not a `#!` script.
pub fn script_identity(program: &Path) -> Option<String> {
    use std::io::Read;
    let path = find_program(program)?;
    let mut head = [0u8; 2];
    std::fs::File::open(&path)
        .ok()?
        .read_exact(&mut head)
        .ok()?;
    if &head != b"#!" {
        return None;
    }
    let cwd = std::env::current_dir().unwrap_or_default();
    let pyenv: Vec<String> = ["PYENV_VERSION", "PYENV_ROOT", "VIRTUAL_ENV", "PATH"]
        .iter()
        .map(|k| std::env::var(k).unwrap_or_default())
        .collect();
    Some(sha256_hex(
        format!(
            "script\0{}\0{}\0{}",
            path.display(),
            cwd.display(),
            pyenv.join("\0")
        )
        .as_bytes(),
    ))
}

/// Like [`read_json`], but only when the file was written less than
/// `max_age` ago.
pub fn read_json_fresh<T: serde::de::DeserializeOwned>(
    path: &Path,
    max_age: std::time::Duration,
) -> Option<T> {
    let age = std::fs::metadata(path)
        .ok()?
        .modified()
        .ok()?
        .elapsed()
        .ok()?;
    if age > max_age {
        return None;
    }
    read_json(path)
}
