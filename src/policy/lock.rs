//! Locking a policy: its allowed set resolved with uv into pinned versions
//! with hashes, so every environment built from it is reproducible.
//!
//! `policies/NAME.lock` is uv's own `requirements.txt` output (usable with
//! `uv pip install --require-hashes -r`), under a header carrying the
//! policy's digest so `policy check` can tell when the lock is stale. Its
//! `# via` annotations are what lets a transitive dependency in: a package
//! the policy does not list is allowed only because the lock shows an allowed
//! package needs it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use pep508_rs::PackageName;

use super::Policy;

/// The name of the requirements file uv reads; `# via -r allowed.in` in the
/// lock marks packages the policy lists itself.
pub const DIRECT_MARKER: &str = "-r allowed.in";

/// Why a policy could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// uv is not installed or could not start.
    #[error(
        "cannot run uv ('{uv}'): {reason} (install it with `python3 -m pip install uv`, or set SCRIPTBOX_UV)"
    )]
    Uv {
        /// The uv command.
        uv: String,
        /// The OS error.
        reason: String,
    },
    /// The allowed packages cannot be installed together.
    #[error("the allowed packages of {policy} cannot be resolved together{involved}:\n{detail}")]
    Unresolvable {
        /// The policy file.
        policy: String,
        /// ": a, b" naming the allowed packages uv's explanation mentions.
        involved: String,
        /// uv's explanation.
        detail: String,
    },
    /// The index could not be reached.
    #[error("cannot reach the package index {index}:\n{detail}")]
    Index {
        /// The index URL.
        index: String,
        /// uv's explanation.
        detail: String,
    },
    /// Writing the lock failed.
    #[error("cannot write {}: {reason}", path.display())]
    Write {
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
}

/// One pinned package of a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockedPackage {
    /// Normalised name.
    pub name: PackageName,
    /// The pinned version.
    pub version: String,
    /// `sha256:...` hashes of its files.
    pub hashes: Vec<String>,
    /// What needs it: allowed package names, or [`DIRECT_MARKER`].
    pub via: Vec<String>,
}

/// A parsed lock file.
#[derive(Debug, Clone, Default)]
pub struct Lock {
    /// The digest of the policy it was made from.
    pub policy_digest: Option<String>,
    /// Pinned packages by name.
    pub packages: BTreeMap<PackageName, LockedPackage>,
}

impl Lock {
    /// Reads the lock beside `policy`, if there is one.
    pub fn for_policy(policy: &Policy) -> Option<Lock> {
        std::fs::read_to_string(policy.lock_path())
            .ok()
            .map(|text| Lock::parse(&text))
    }

    /// Parses a lock (uv's hashed requirements format plus our header).
    pub fn parse(text: &str) -> Lock {
        let mut lock = Lock::default();
        let mut current: Option<LockedPackage> = None;
        let mut in_via = false;
        let finish = |pkg: Option<LockedPackage>, lock: &mut Lock| {
            if let Some(pkg) = pkg {
                lock.packages.insert(pkg.name.clone(), pkg);
            }
        };
        for raw in text.lines() {
            let line = raw.trim();
            if let Some(d) = line.strip_prefix("# policy-digest: ") {
                lock.policy_digest = Some(d.trim().to_string());
            } else if let Some(hash) = line.strip_prefix("--hash=") {
                if let Some(pkg) = current.as_mut() {
                    pkg.hashes
                        .push(hash.trim_end_matches('\\').trim().to_string());
                }
            } else if let Some(via) = line.strip_prefix("# via") {
                in_via = true;
                let via = via.trim();
                if !via.is_empty()
                    && let Some(pkg) = current.as_mut()
                {
                    pkg.via.push(via.to_string());
                }
            } else if in_via && line.starts_with('#') && raw.starts_with("    #   ") {
                if let Some(pkg) = current.as_mut() {
                    pkg.via
                        .push(line.trim_start_matches('#').trim().to_string());
                }
            } else if !line.is_empty() && !line.starts_with('#') {
                in_via = false;
                let spec = line.trim_end_matches('\\').trim();
                if let Some((name, version)) = spec.split_once("==")
                    && let Ok(name) = name.trim().parse::<PackageName>()
                {
                    finish(current.take(), &mut lock);
                    current = Some(LockedPackage {
                        name,
                        version: version.trim().to_string(),
                        hashes: Vec::new(),
                        via: Vec::new(),
                    });
                }
            }
        }
        finish(current, &mut lock);
        lock
    }

    /// `roots` and, transitively, every package the lock says they need.
    pub fn closure_of(&self, roots: impl IntoIterator<Item = String>) -> BTreeSet<String> {
        let mut chosen: BTreeSet<String> = roots.into_iter().collect();
        loop {
            let before = chosen.len();
            for pkg in self.packages.values() {
                if pkg.via.iter().any(|parent| chosen.contains(parent)) {
                    chosen.insert(pkg.name.to_string());
                }
            }
            if chosen.len() == before {
                return chosen;
            }
        }
    }

    /// The allowed packages that pull `name` in, when the lock has it only
    /// as a dependency.
    pub fn required_by(&self, name: &PackageName) -> Option<Vec<String>> {
        let pkg = self.packages.get(name)?;
        let parents: Vec<String> = pkg
            .via
            .iter()
            .filter(|v| v.as_str() != DIRECT_MARKER)
            .cloned()
            .collect();
        Some(parents)
    }
}

/// Resolves the policy's allowed set with uv and writes `policies/NAME.lock`
/// atomically. Returns the lock's path and the number of pinned packages.
pub fn lock_policy(policy: &Policy, uv: &str) -> Result<(PathBuf, usize), LockError> {
    let work = tempfile::tempdir().map_err(|e| LockError::Write {
        path: std::env::temp_dir(),
        reason: e.to_string(),
    })?;
    // Only bare `name[specifier]` lines: a requirements file may carry
    // options (extra indexes, URLs) that uv would honour.
    let mut input = String::new();
    for entry in &policy.allow {
        input.push_str(entry.name.as_ref());
        if let Some(version) = &entry.version {
            input.push_str(&version.to_string());
        }
        input.push('\n');
    }
    let input_path = work.path().join("allowed.in");
    let output_path = work.path().join("resolved.txt");
    std::fs::write(&input_path, input).map_err(|e| LockError::Write {
        path: input_path.clone(),
        reason: e.to_string(),
    })?;

    let mut cmd = crate::uv::command(uv, work.path());
    cmd.args([
        "pip",
        "compile",
        "--no-config",
        "allowed.in",
        "-o",
        "resolved.txt",
        "-q",
    ])
    .args([
        "--generate-hashes",
        "--no-header",
        "--annotation-style",
        "split",
    ])
    .args(["--python-version", &format!("3.{}", policy.python.minor)])
    .args(["--python-platform", &policy.python.platform])
    .args(["--default-index", &policy.install.index]);
    if policy.install.wheels_only {
        cmd.args(["--only-binary", ":all:"]);
    }
    if let Some(date) = &policy.install.exclude_newer {
        cmd.args(["--exclude-newer", date]);
    }
    let out = cmd.output().map_err(|e| LockError::Uv {
        uv: uv.to_string(),
        reason: e.to_string(),
    })?;
    let detail = String::from_utf8_lossy(&out.stderr).trim().to_string();
    match out.status.code() {
        Some(0) => {}
        Some(1) => {
            let mentioned: Vec<String> = policy
                .allow
                .iter()
                .map(|a| a.name.to_string())
                .filter(|n| mentions(&detail, n))
                .collect();
            return Err(LockError::Unresolvable {
                policy: policy.path.display().to_string(),
                involved: if mentioned.is_empty() {
                    String::new()
                } else {
                    format!(" (involved: {})", mentioned.join(", "))
                },
                detail,
            });
        }
        _ => {
            return Err(LockError::Index {
                index: policy.install.index.clone(),
                detail,
            });
        }
    }
    let resolved = std::fs::read_to_string(&output_path).map_err(|e| LockError::Write {
        path: output_path.clone(),
        reason: e.to_string(),
    })?;
    let uv_version = Command::new(uv)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let header = format!(
        "# scriptbox lock of {} -- written by `scriptbox policy lock`; do not edit.\n\
         # policy-digest: {}\n\
         # python: 3.{} {}\n\
         # resolver: {uv_version}\n",
        policy.path.display(),
        policy.digest(),
        policy.python.minor,
        policy.python.platform,
    );
    let count = Lock::parse(&resolved).packages.len();
    let lock_path = policy.lock_path();
    write_atomically(&lock_path, &format!("{header}{resolved}"))?;
    Ok((lock_path, count))
}

/// Whether uv's explanation names package `name` as a whole word.
fn mentions(text: &str, name: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.match_indices(name).any(|(i, _)| {
        let before = lower[..i].chars().next_back();
        let after = lower[i + name.len()..].chars().next();
        let boundary = |c: Option<char>| {
            c.is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        };
        boundary(before) && boundary(after)
    })
}

fn write_atomically(path: &Path, text: &str) -> Result<(), LockError> {
    let err = |e: std::io::Error| LockError::Write {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
    // A lock is committed beside the policy: readable like any source file.
    use std::os::unix::fs::PermissionsExt;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(err)?;
    tmp.write_all(text.as_bytes()).map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "# policy-digest: abc\nnumpy==2.4.6 \\\n    --hash=sha256:aa \\\n    --hash=sha256:bb\n    # via\n    #   -r allowed.in\n    #   pandas\npytz==2026.6 \\\n    --hash=sha256:cc\n    # via pandas\n";

    #[test]
    fn parses_pins_hashes_and_parents() {
        let lock = Lock::parse(SAMPLE);
        assert_eq!(lock.policy_digest.as_deref(), Some("abc"));
        let numpy = &lock.packages[&"numpy".parse::<PackageName>().unwrap()];
        assert_eq!(numpy.version, "2.4.6");
        assert_eq!(numpy.hashes, ["sha256:aa", "sha256:bb"]);
        assert_eq!(numpy.via, ["-r allowed.in", "pandas"]);
        let pytz = "pytz".parse::<PackageName>().unwrap();
        assert_eq!(lock.required_by(&pytz), Some(vec!["pandas".to_string()]));
    }

    #[test]
    fn whole_word_mentions() {
        assert!(mentions("because six<1.5 and python-dateutil>=2.8", "six"));
        assert!(!mentions("because sixteen", "six"));
        assert!(!mentions("python-dateutil", "dateutil"));
    }
}
