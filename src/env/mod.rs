//! The environment builder: cached, content-addressed environments holding
//! exactly a script's allowed packages.
//!
//! The validation stage yields a dependency set; [`closure`] turns it into
//! the pinned packages of the policy's lock, and [`venv::ensure_venv`] turns
//! those into an [`venv::EnvHandle`] the runner can use. Environments are
//! keyed by what they contain ([`key::EnvKey`]), never by script.

pub mod key;
pub mod store;
pub mod venv;

use pep508_rs::PackageName;

use crate::policy::lock::{Lock, LockedPackage};

/// Why a package set cannot be taken from a lock.
#[derive(Debug, thiserror::Error)]
#[error("'{0}' is not pinned in the policy's lock (is it allowed? run `scriptbox policy lock`)")]
pub struct NotInLock(pub String);

/// The pinned closure of `roots` in `lock`: the roots and, transitively,
/// everything the lock says they need.
pub fn closure(lock: &Lock, roots: &[PackageName]) -> Result<Vec<LockedPackage>, NotInLock> {
    for root in roots {
        if !lock.packages.contains_key(root) {
            return Err(NotInLock(root.to_string()));
        }
    }
    let chosen = lock.closure_of(roots.iter().map(ToString::to_string));
    Ok(lock
        .packages
        .values()
        .filter(|p| chosen.contains(p.name.as_ref()))
        .cloned()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closure_follows_the_lock() {
        let lock = Lock::parse(
            "pandas==2 \\\n    --hash=sha256:a\n    # via -r allowed.in\nnumpy==2 \\\n    --hash=sha256:b\n    # via\n    #   -r allowed.in\n    #   pandas\nsix==1 \\\n    --hash=sha256:c\n    # via python-dateutil\npython-dateutil==2 \\\n    --hash=sha256:d\n    # via pandas\nrequests==2 \\\n    --hash=sha256:e\n    # via -r allowed.in\n",
        );
        let names = |roots: &[&str]| -> Vec<String> {
            let roots: Vec<PackageName> = roots.iter().map(|r| r.parse().unwrap()).collect();
            closure(&lock, &roots)
                .unwrap()
                .iter()
                .map(|p| p.name.to_string())
                .collect()
        };
        assert_eq!(
            names(&["pandas"]),
            ["numpy", "pandas", "python-dateutil", "six"]
        );
        assert_eq!(names(&["requests"]), ["requests"]);
        assert!(closure(&lock, &["flask".parse().unwrap()]).is_err());
    }
}
