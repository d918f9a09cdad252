//! What a policy says about each dependency a script needs.
//!
//! The validation stage asks [`judge`] for each distribution; the answer is
//! one of four statuses, with a message that names the package, the policy
//! file and the rule, and for a refused package what an administrator would
//! add to allow it.

use pep508_rs::PackageName;
use pep508_rs::pep440_rs::{Version, VersionSpecifiers};
use serde::Serialize;
use version_ranges::Ranges;

use super::Policy;
use super::explain::{Decision, decide};

/// A dependency's standing under a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyStatus {
    /// Preinstalled in the policy's base environment.
    Available,
    /// Allowed, not preinstalled: the environment builder can add it.
    Installable,
    /// Denied, not allowed, or only allowed at versions the script excludes.
    Forbidden,
    /// No distribution could be determined for the import.
    Unknown,
}

/// The policy's answer for one dependency.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyJudgement {
    /// The status.
    pub status: PolicyStatus,
    /// Why, naming the rule and its place; for refusals, what to add.
    pub reason: String,
}

/// Judges distribution `name`, which the script requests with `requested`
/// (e.g. `pandas<1` from its inline metadata).
pub fn judge(
    policy: &Policy,
    name: &PackageName,
    requested: Option<&VersionSpecifiers>,
) -> PolicyJudgement {
    let file = policy.path.display();
    match decide(policy, name) {
        Decision::Denied { at, reason } => PolicyJudgement {
            status: PolicyStatus::Forbidden,
            reason: format!("'{name}' is denied by {file}:{}: {reason}", at.line),
        },
        Decision::Dependency {
            required_by,
            preinstalled,
        } => PolicyJudgement {
            status: if preinstalled {
                PolicyStatus::Available
            } else {
                PolicyStatus::Installable
            },
            reason: format!(
                "'{name}' is allowed as a dependency of {} ({})",
                required_by.join(", "),
                policy.lock_path().display()
            ),
        },
        Decision::NotAllowed => PolicyJudgement {
            status: PolicyStatus::Forbidden,
            reason: format!(
                "'{name}' is not allowed by {file}; to allow it, an administrator adds [[allow]] name = \"{name}\""
            ),
        },
        Decision::Allowed {
            at, preinstalled, ..
        } => {
            let allowed = policy.allowed(name).and_then(|a| a.version.as_ref());
            if let (Some(requested), Some(allowed)) = (requested, allowed)
                && !overlaps(requested, allowed)
            {
                return PolicyJudgement {
                    status: PolicyStatus::Forbidden,
                    reason: format!(
                        "the script needs {name}{requested}, but {file}:{} allows only {name}{allowed}",
                        at.line
                    ),
                };
            }
            if preinstalled {
                PolicyJudgement {
                    status: PolicyStatus::Available,
                    reason: format!("'{name}' is preinstalled ({file}:{})", at.line),
                }
            } else {
                PolicyJudgement {
                    status: PolicyStatus::Installable,
                    reason: format!("'{name}' is allowed by {file}:{}", at.line),
                }
            }
        }
    }
}

/// True when some version satisfies both specifier sets.
fn overlaps(a: &VersionSpecifiers, b: &VersionSpecifiers) -> bool {
    let a: Ranges<Version> = a.clone().into();
    let b: Ranges<Version> = b.clone().into();
    !a.intersection(&b).is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn specifier_overlap() {
        let s = |t: &str| VersionSpecifiers::from_str(t).unwrap();
        assert!(!overlaps(&s("<1"), &s(">=2")));
        assert!(overlaps(&s(">=1.5"), &s(">=2,<3")));
        assert!(!overlaps(&s("==2.0.1"), &s("!=2.0.1")));
    }
}
