//! The audit log on disk: whole lines appended by many processes at once,
//! and rotation by size that loses none of them.
//!
//! Appending: the file is opened with `O_APPEND` and each batch of lines is
//! one `write(2)`, which the kernel performs as a unit against other
//! appenders of the same file, so lines never interleave.
//!
//! Rotation: `audit.jsonl` becomes `audit.jsonl.1`, `.1` becomes `.2`, and
//! so on up to the number kept; the oldest is dropped. A writer that had the
//! old file open must not keep writing into it, or its lines would be
//! dropped with it later. So every append holds a shared `flock` on the
//! sibling `audit.jsonl.lock` while it checks that its descriptor is still
//! the file at the path (reopening when not) and writes; rotation holds the
//! lock exclusively while it re-checks the size and renames. A line is thus
//! always written to the current file, and a file is only renamed when no
//! one is writing to it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// How the log is rotated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// The file is rotated once it reaches this many bytes.
    pub max_size: u64,
    /// How many rotated files (`.1` to `.N`) are kept; 0 keeps none.
    pub keep: u32,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            max_size: 64 << 20,
            keep: 5,
        }
    }
}

/// An open audit log: the lock file and the current log file.
#[derive(Debug)]
pub(super) struct LogFile {
    path: PathBuf,
    lock: File,
    file: Option<OpenLog>,
}

#[derive(Debug)]
struct OpenLog {
    file: File,
    dev: u64,
    ino: u64,
}

/// The lock file beside a log: `audit.jsonl.lock`.
pub fn lock_path(log: &Path) -> PathBuf {
    with_suffix(log, "lock")
}

/// The `n`th rotated file: `audit.jsonl.1`.
pub fn rotated_path(log: &Path, n: u32) -> PathBuf {
    with_suffix(log, &n.to_string())
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

fn open_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options
        .create(true)
        .mode(0o644)
        .custom_flags(libc::O_CLOEXEC);
    options
}

impl LogFile {
    /// Opens (creating) the lock file and the directory holding the log.
    pub(super) fn open(path: &Path) -> io::Result<LogFile> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let lock = open_options()
            .read(true)
            .write(true)
            .open(lock_path(path))?;
        Ok(LogFile {
            path: path.to_path_buf(),
            lock,
            file: None,
        })
    }

    /// Appends `lines` (whole lines, each ending in a newline) in one write,
    /// then rotates if the file has reached the limit.
    pub(super) fn append(&mut self, lines: &[u8], rotation: Rotation) -> io::Result<()> {
        self.lock.lock_shared()?;
        let written = self.append_locked(lines);
        let unlocked = self.lock.unlock();
        let measured = written?;
        unlocked?;
        match measured {
            Some((size, ino)) if size >= rotation.max_size => self.rotate(rotation, ino),
            _ => Ok(()),
        }
    }

    /// Under the shared lock: makes sure the descriptor is the file at the
    /// path, writes, and returns the file's size and inode afterwards.
    fn append_locked(&mut self, lines: &[u8]) -> io::Result<Option<(u64, u64)>> {
        let current = match fs::metadata(&self.path) {
            Ok(meta) => Some((meta.dev(), meta.ino())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let stale = match (&self.file, current) {
            (Some(open), Some((dev, ino))) => open.dev != dev || open.ino != ino,
            _ => true,
        };
        if stale {
            // Rotated or removed since we last wrote: write to the new file.
            let file = open_options().append(true).open(&self.path)?;
            let meta = file.metadata()?;
            self.file = Some(OpenLog {
                file,
                dev: meta.dev(),
                ino: meta.ino(),
            });
        }
        let open = self.file.as_mut().expect("opened above");
        // One write for the whole batch; `write_all` only loops on a short
        // write (a full disk, say), where finishing beats losing the rest.
        open.file.write_all(lines)?;
        let size = open.file.metadata()?.len();
        Ok(Some((size, open.ino)))
    }

    /// Rotates the log if the file at the path is still the one measured at
    /// `ino` and still at the limit (another process may have rotated it in
    /// the meantime).
    fn rotate(&mut self, rotation: Rotation, ino: u64) -> io::Result<()> {
        self.lock.lock()?;
        let result = (|| {
            let meta = match fs::metadata(&self.path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            };
            if meta.ino() != ino || meta.len() < rotation.max_size {
                return Ok(());
            }
            if rotation.keep == 0 {
                return fs::remove_file(&self.path);
            }
            for n in (1..rotation.keep).rev() {
                match fs::rename(rotated_path(&self.path, n), rotated_path(&self.path, n + 1)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            fs::rename(&self.path, rotated_path(&self.path, 1))
        })();
        let unlocked = self.lock.unlock();
        result?;
        unlocked
    }
}

/// The log's files, oldest first: the rotated ones that exist (`.N` down to
/// `.1`), then the current one (when it exists). Files are opened under the
/// shared lock, so a rotation cannot move one between the listing and the
/// opening; each is read whole afterwards.
pub fn open_all(log: &Path) -> io::Result<Vec<(PathBuf, File)>> {
    let lock = File::open(lock_path(log)).ok();
    if let Some(lock) = &lock {
        lock.lock_shared()?;
    }
    let mut rotated: Vec<(u32, PathBuf)> = Vec::new();
    let dir = log
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = log.file_name().map(|n| n.to_string_lossy().into_owned());
    if let (Some(name), Ok(entries)) = (name, fs::read_dir(dir)) {
        let prefix = format!("{name}.");
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(n) = file_name
                .to_str()
                .and_then(|f| f.strip_prefix(&prefix))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            rotated.push((n, entry.path()));
        }
    }
    rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
    let mut files = Vec::new();
    for path in rotated
        .into_iter()
        .map(|(_, p)| p)
        .chain(std::iter::once(log.to_path_buf()))
    {
        match File::open(&path) {
            Ok(file) => files.push((path, file)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display())));
            }
        }
    }
    if let Some(lock) = &lock {
        let _ = lock.unlock();
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: usize) -> Vec<u8> {
        format!("{{\"n\":{n},\"pad\":\"{}\"}}\n", "x".repeat(40)).into_bytes()
    }

    #[test]
    fn rotates_and_keeps_n_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut log = LogFile::open(&path).unwrap();
        let rotation = Rotation {
            max_size: 500,
            keep: 3,
        };
        for n in 0..200 {
            log.append(&line(n), rotation).unwrap();
        }
        assert!(rotated_path(&path, 3).is_file());
        assert!(!rotated_path(&path, 4).exists());
        let files = open_all(&path).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "audit.jsonl.3",
                "audit.jsonl.2",
                "audit.jsonl.1",
                "audit.jsonl"
            ]
        );
        // The newest lines survive, in order, oldest file first.
        let text: String = files
            .iter()
            .map(|(p, _)| fs::read_to_string(p).unwrap())
            .collect();
        let ns: Vec<usize> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["n"]
                    .as_u64()
                    .unwrap() as usize
            })
            .collect();
        assert_eq!(*ns.last().unwrap(), 199);
        assert!(ns.windows(2).all(|w| w[1] == w[0] + 1), "{ns:?}");
    }

    #[test]
    fn a_writer_follows_a_rotation_by_another() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let rotation = Rotation {
            max_size: 1 << 20,
            keep: 2,
        };
        let mut a = LogFile::open(&path).unwrap();
        let mut b = LogFile::open(&path).unwrap();
        a.append(&line(0), rotation).unwrap();
        // `b` rotates (a tiny limit), then `a` writes again: into the new file.
        b.append(
            &line(1),
            Rotation {
                max_size: 1,
                keep: 2,
            },
        )
        .unwrap();
        a.append(&line(2), rotation).unwrap();
        assert_eq!(
            fs::read_to_string(rotated_path(&path, 1))
                .unwrap()
                .lines()
                .count(),
            2
        );
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            String::from_utf8(line(2)).unwrap()
        );
    }
}
