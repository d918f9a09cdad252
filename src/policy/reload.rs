//! A policy held by a long-lived process (the service), re-read when an
//! administrator edits its file or re-locks it.
//!
//! [`PolicyWatch::current`] costs two `stat` calls: one for the policy file,
//! one for its lock. When the size, modification or change time, inode or
//! device of either differs from what was last read, both are read again and
//! checked. A policy that fails its check never replaces the one in force:
//! every diagnostic is logged (tracing, `file:line:column`), the old policy
//! stays, and the edit that fixes it takes effect at the next call.
//!
//! Timestamps are coarse (a few milliseconds on most file systems, seconds
//! on some), so two writes of the same size in one tick leave the same
//! `stat`. As long as a file was read within [`RACY_WINDOW`] of its last
//! modification, its contents are hashed on each call and compared too;
//! once a read happens after that window, a later write must change the
//! timestamps.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::lock::Lock;
use super::{Policy, PolicyLoadError, load_text, read_policy_text};

/// How long after its modification a file's `stat` is not trusted to show
/// the next modification: more than any common file system's timestamp
/// granularity.
pub const RACY_WINDOW: Duration = Duration::from_secs(2);

/// What `stat` says about a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    /// The file's stamp; `None` when it does not exist or cannot be stat'ed.
    fn of(path: &Path) -> Option<Stamp> {
        let m = std::fs::metadata(path).ok()?;
        Some(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }

    fn modified(&self) -> SystemTime {
        let (secs, nanos) = self.mtime;
        let since_epoch = Duration::new(secs.max(0) as u64, nanos.clamp(0, 999_999_999) as u32);
        SystemTime::UNIX_EPOCH + since_epoch
    }
}

/// One file as last seen: its stamp, a hash of what was read, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    stamp: Option<Stamp>,
    hash: Option<String>,
    read_at: SystemTime,
}

impl Seen {
    /// Whether a write after the read could have left the stamp unchanged.
    fn racy(&self) -> bool {
        match &self.stamp {
            None => false,
            Some(stamp) => {
                self
                .read_at
                .duration_since(stamp.modified())
                .is_ok_and(|d| d < RACY_WINDOW)
                // A modification time in the future: no telling.
                || self.read_at < stamp.modified()
            }
        }
    }
}

/// The policy file and its lock as read for one check.
struct Snapshot {
    policy: Seen,
    lock: Seen,
    policy_text: Result<String, PolicyLoadError>,
    lock_text: Option<String>,
}

fn hash(text: &str) -> String {
    crate::cache::sha256_hex(text.as_bytes())
}

/// Reads both files, stamping each before its read: a write after the
/// stamp shows as a changed stamp at the next call.
fn snapshot(path: &Path, lock_path: &Path) -> Snapshot {
    let now = SystemTime::now();
    let policy_stamp = Stamp::of(path);
    let policy_text = read_policy_text(path);
    let lock_stamp = Stamp::of(lock_path);
    let lock_text = std::fs::read_to_string(lock_path).ok();
    Snapshot {
        policy: Seen {
            stamp: policy_stamp,
            hash: policy_text.as_ref().ok().map(|t| hash(t)),
            read_at: now,
        },
        lock: Seen {
            stamp: lock_stamp,
            hash: lock_text.as_deref().map(hash),
            read_at: now,
        },
        policy_text,
        lock_text,
    }
}

/// Checks a snapshot into a policy whose lock is exactly the lock read.
fn check(path: &Path, snapshot: Snapshot) -> Result<Policy, PolicyLoadError> {
    let text = snapshot.policy_text?;
    let (mut policy, warnings) = load_text(path, &text)?;
    for warning in &warnings {
        tracing::warn!(policy = %path.display(), "{warning}");
    }
    policy.lock = snapshot.lock_text.as_deref().map(Lock::parse);
    Ok(policy)
}

struct State {
    policy: Arc<Policy>,
    policy_seen: Seen,
    lock_seen: Seen,
    error: Option<Arc<PolicyLoadError>>,
    reloads: u64,
}

/// A policy that follows its file and its lock (see the module docs).
pub struct PolicyWatch {
    path: PathBuf,
    lock_path: PathBuf,
    state: Mutex<State>,
}

impl std::fmt::Debug for PolicyWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyWatch")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl PolicyWatch {
    /// Loads the policy at `path`; it must pass its check.
    pub fn open(path: impl Into<PathBuf>) -> Result<PolicyWatch, PolicyLoadError> {
        let path = path.into();
        let lock_path = path.with_extension("lock");
        let snap = snapshot(&path, &lock_path);
        let (policy_seen, lock_seen) = (snap.policy.clone(), snap.lock.clone());
        let policy = check(&path, snap)?;
        Ok(PolicyWatch {
            path,
            lock_path,
            state: Mutex::new(State {
                policy: Arc::new(policy),
                policy_seen,
                lock_seen,
                error: None,
                reloads: 0,
            }),
        })
    }

    /// The policy file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The policy in force, re-read first if its file or lock changed.
    pub fn current(&self) -> Arc<Policy> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.refresh(&mut state);
        state.policy.clone()
    }

    /// Why the files as they are now are not in force, if they are not.
    pub fn last_error(&self) -> Option<Arc<PolicyLoadError>> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.refresh(&mut state);
        state.error.clone()
    }

    /// How many times a changed policy has replaced the one in force.
    pub fn reloads(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).reloads
    }

    fn refresh(&self, state: &mut State) {
        if !self.changed(state) {
            return;
        }
        let snap = snapshot(&self.path, &self.lock_path);
        state.policy_seen = snap.policy.clone();
        state.lock_seen = snap.lock.clone();
        match check(&self.path, snap) {
            Ok(policy) => {
                tracing::info!(
                    policy = %self.path.display(),
                    digest = %policy.digest(),
                    "policy reloaded"
                );
                state.policy = Arc::new(policy);
                state.error = None;
                state.reloads += 1;
            }
            Err(e) => {
                if let PolicyLoadError::Invalid { diagnostics, .. } = &e {
                    for d in diagnostics {
                        tracing::error!(policy = %self.path.display(), "{d}");
                    }
                }
                tracing::error!(
                    policy = %self.path.display(),
                    "{e}; the policy loaded before (digest {}) stays in force",
                    state.policy.digest()
                );
                state.error = Some(Arc::new(e));
            }
        }
    }

    /// Whether either file may differ from what was last read: its stamp
    /// changed, or its stamp cannot be trusted yet and its contents differ.
    fn changed(&self, state: &mut State) -> bool {
        let now = SystemTime::now();
        let files = [
            (&self.path, &mut state.policy_seen, true),
            (&self.lock_path, &mut state.lock_seen, false),
        ];
        let mut changed = false;
        for (path, seen, is_policy) in files {
            if changed {
                break;
            }
            let stamp = Stamp::of(path);
            if stamp != seen.stamp {
                changed = true;
                continue;
            }
            if !seen.racy() {
                continue;
            }
            let text = if is_policy {
                read_policy_text(path).ok()
            } else {
                std::fs::read_to_string(path).ok()
            };
            if text.as_deref().map(hash) != seen.hash {
                changed = true;
            } else if Stamp::of(path) == stamp {
                // Read after the window with the stamp unchanged: from now
                // on a write must show in the stamp.
                seen.read_at = now;
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_file_is_racy_and_an_old_one_is_not() {
        let now = SystemTime::now();
        let stamp = |modified: SystemTime| {
            let d = modified.duration_since(SystemTime::UNIX_EPOCH).unwrap();
            Some(Stamp {
                dev: 1,
                ino: 1,
                size: 1,
                mtime: (d.as_secs() as i64, d.subsec_nanos() as i64),
                ctime: (0, 0),
            })
        };
        let seen = |modified| Seen {
            stamp: stamp(modified),
            hash: None,
            read_at: now,
        };
        assert!(seen(now).racy());
        assert!(seen(now + Duration::from_secs(60)).racy());
        assert!(!seen(now - Duration::from_secs(10)).racy());
    }

    #[test]
    fn a_write_in_the_same_timestamp_tick_is_seen_by_its_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.toml");
        let original = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/policies/tiny.toml"),
        )
        .unwrap();
        std::fs::write(&path, &original).unwrap();
        let watch = PolicyWatch::open(&path).unwrap();
        let rewrite = |from: &str, to: &str| {
            let text = std::fs::read_to_string(&path).unwrap().replace(from, to);
            std::fs::write(&path, text).unwrap();
            // As if the write fell in the tick of the last read: same stamp.
            let mut state = watch.state.lock().unwrap();
            state.policy_seen.stamp = Stamp::of(&path);
        };
        rewrite("memory = \"256M\"", "memory = \"512M\"");
        assert_eq!(watch.current().profiles["default"].memory, 512 << 20);
        // Once a read comes well after the modification, the stamp is
        // trusted: the same trick then goes unseen (which is why the
        // contents are compared while the stamp is fresh).
        watch.state.lock().unwrap().policy_seen.read_at =
            SystemTime::now() + RACY_WINDOW + Duration::from_secs(1);
        rewrite("memory = \"512M\"", "memory = \"128M\"");
        assert_eq!(watch.current().profiles["default"].memory, 512 << 20);
    }
}
