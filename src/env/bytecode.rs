//! Bytecode for venv layers, compiled once per source file ever.
//!
//! Importing pandas without `.pyc` files takes seconds, so every layer gets
//! its bytecode at build time. Compiling is most of a build's cost, and the
//! same files (numpy's, pandas') recur in layer after layer, so compiled
//! files are kept in a store under `<cache>/bytecode/<cache tag>/`, named by
//! the sha256 of the source, and hard-linked into each layer's
//! `__pycache__`. Only sources never seen before are compiled.
//!
//! The files are *unchecked-hash* pycs (PEP 552): Python loads them without
//! comparing them to the source's modification time. That is what makes
//! them shareable between layers, and it is sound because a published layer
//! never changes (it is read-only, and sealed; see [`super::verify`]).
//! Python fixes up the file name recorded in a code object when it loads
//! it, so tracebacks name the layer's own files.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use rayon::prelude::*;

use super::BuildError;
use super::scratch::cache_err;

/// Compiles the sources listed on stdin (`source\0pyc\0` pairs) as
/// unchecked-hash pycs, in parallel; a file that does not compile is
/// skipped (packages ship templates and Python 2 leftovers), as pip and uv
/// skip them.
const COMPILER: &str = r#"
import os, py_compile, sys
from concurrent.futures import ProcessPoolExecutor
mode = py_compile.PycInvalidationMode.UNCHECKED_HASH
def one(pair):
    try:
        py_compile.compile(pair[0], cfile=pair[1], doraise=True, invalidation_mode=mode)
        return 1
    except Exception:
        return 0
data = sys.stdin.buffer.read().split(b"\0")
pairs = [(os.fsdecode(data[i]), os.fsdecode(data[i + 1])) for i in range(0, len(data) - 1, 2)]
workers = min(os.cpu_count() or 1, max(1, len(pairs) // 64))
if workers > 1:
    with ProcessPoolExecutor(workers) as pool:
        done = sum(pool.map(one, pairs, chunksize=32))
else:
    done = sum(map(one, pairs))
print(done)
"#;

/// What a compile step did.
#[derive(Debug, Clone, Copy, Default)]
pub struct BytecodeStats {
    /// Sources given bytecode.
    pub sources: usize,
    /// Of those, compiled now (the rest came from the store).
    pub compiled: usize,
}

/// The `sys.implementation.cache_tag` of CPython `version` (X.Y[.Z]).
pub fn cache_tag(version: &str) -> String {
    let mut parts = version.split('.');
    let major = parts.next().unwrap_or("3");
    let minor = parts.next().unwrap_or("0");
    format!("cpython-{major}{minor}")
}

/// Gives every `.py` file under `site` its bytecode, from `store` when it
/// has it, else compiled by `python` (whose version is `version`) into the
/// store first.
pub fn compile_layer(
    site: &Path,
    python: &Path,
    version: &str,
    store: &Path,
) -> Result<BytecodeStats, BuildError> {
    // Shared while building; `env prune` sweeps under the exclusive lock,
    // so it never removes a file a build is about to link.
    let _shared = store_lock(store)?;
    _shared.lock_shared().map_err(|e| cache_err(store, e))?;
    let tag = cache_tag(version);
    let store = store.join(&tag);
    let sources: Vec<PathBuf> = walkdir::WalkDir::new(site)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "py"))
        .map(|e| e.into_path())
        .collect();
    // (source, its pyc in the layer, its pyc in the store)
    let jobs: Vec<(PathBuf, PathBuf, PathBuf)> = sources
        .par_iter()
        .filter_map(|src| {
            let digest = crate::cache::sha256_hex(&fs::read(src).ok()?);
            let stem = src.file_stem()?.to_str()?;
            let pyc = src
                .parent()?
                .join("__pycache__")
                .join(format!("{stem}.{tag}.pyc"));
            let stored = store.join(&digest[..2]).join(format!("{digest}.pyc"));
            Some((src.clone(), pyc, stored))
        })
        .collect();
    let missing: Vec<&(PathBuf, PathBuf, PathBuf)> = jobs
        .iter()
        .filter(|(_, _, stored)| !stored.is_file())
        .collect();
    if !missing.is_empty() {
        compile_into_store(python, &missing)?;
    }
    let linked: usize = jobs
        .par_iter()
        .map(|(_, pyc, stored)| usize::from(link(stored, pyc).is_ok()))
        .sum();
    Ok(BytecodeStats {
        sources: linked,
        compiled: missing.len(),
    })
}

/// Compiles `missing` into the store: each to a temporary name beside its
/// final one, renamed once complete, so a concurrent build never links a
/// half-written file.
fn compile_into_store(
    python: &Path,
    missing: &[&(PathBuf, PathBuf, PathBuf)],
) -> Result<(), BuildError> {
    let suffix = format!(".{}.tmp", uuid::Uuid::new_v4());
    let mut input = Vec::new();
    let mut renames = Vec::with_capacity(missing.len());
    for (src, _, stored) in missing {
        let parent = stored.parent().expect("store paths have a parent");
        fs::create_dir_all(parent).map_err(|e| cache_err(parent, e))?;
        let tmp = PathBuf::from(format!("{}{suffix}", stored.display()));
        input.extend_from_slice(src.as_os_str().as_encoded_bytes());
        input.push(0);
        input.extend_from_slice(tmp.as_os_str().as_encoded_bytes());
        input.push(0);
        renames.push((tmp, stored.clone()));
    }
    let mut child = std::process::Command::new(python)
        .args(["-I", "-S", "-c", COMPILER])
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| BuildError::Step {
            step: "compiling bytecode".into(),
            detail: format!("cannot run {}: {e}", python.display()),
        })?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().map_err(|e| BuildError::Step {
        step: "compiling bytecode".into(),
        detail: e.to_string(),
    })?;
    let _ = writer.join();
    if !out.status.success() {
        for (tmp, _) in &renames {
            let _ = fs::remove_file(tmp);
        }
        return Err(BuildError::Step {
            step: "compiling bytecode".into(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    for (tmp, stored) in renames {
        // Absent when the source did not compile: it simply gets no pyc.
        if tmp.is_file() {
            fs::rename(&tmp, &stored).map_err(|e| cache_err(&stored, e))?;
        }
    }
    Ok(())
}

/// The store's lock file, created if missing.
pub fn store_lock(store: &Path) -> Result<fs::File, BuildError> {
    fs::create_dir_all(store).map_err(|e| cache_err(store, e))?;
    let path = store.join(".lock");
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| cache_err(&path, e))
}

/// Hard-links the stored pyc into the layer (a copy across file systems).
fn link(stored: &Path, pyc: &Path) -> std::io::Result<()> {
    if !stored.is_file() {
        return Err(std::io::ErrorKind::NotFound.into());
    }
    if let Some(dir) = pyc.parent() {
        fs::create_dir_all(dir)?;
    }
    match fs::hard_link(stored, pyc) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(_) => fs::copy(stored, pyc).map(|_| ()),
    }
}
