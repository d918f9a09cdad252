//! Why a package is or is not allowed by a policy.

use pep508_rs::PackageName;

use super::{Policy, Position};

/// The policy's verdict on one package, with the rule that decided it.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// An `[[allow]]` entry admits it.
    Allowed {
        /// Where the entry is.
        at: Position,
        /// Its version specifier, if any.
        version: Option<String>,
        /// Whether the base environment already has it.
        preinstalled: bool,
    },
    /// A `[[deny]]` entry refuses it.
    Denied {
        /// Where the entry is.
        at: Position,
        /// The entry's reason.
        reason: String,
    },
    /// No entry names it, but the lock shows allowed packages need it.
    Dependency {
        /// The allowed packages that pull it in.
        required_by: Vec<String>,
        /// Whether the base environment has it.
        preinstalled: bool,
    },
    /// No entry mentions it.
    NotAllowed,
}

/// Decides `name` under `policy`.
pub fn decide(policy: &Policy, name: &PackageName) -> Decision {
    if let Some(d) = policy.denied(name) {
        return Decision::Denied {
            at: d.at,
            reason: d.reason.clone(),
        };
    }
    match policy.allowed(name) {
        Some(a) => Decision::Allowed {
            at: a.at,
            version: a.version.as_ref().map(ToString::to_string),
            preinstalled: policy.is_preinstalled(name),
        },
        None => match policy.lock.as_ref().and_then(|l| l.required_by(name)) {
            Some(required_by) if !required_by.is_empty() => Decision::Dependency {
                required_by,
                preinstalled: policy.is_preinstalled(name),
            },
            _ => Decision::NotAllowed,
        },
    }
}

/// One paragraph for people: the verdict, the deciding rule and its place,
/// and for a refused package what an administrator would add.
pub fn explain(policy: &Policy, name: &PackageName) -> String {
    let file = policy.path.display();
    match decide(policy, name) {
        Decision::Allowed {
            at,
            version,
            preinstalled,
        } => {
            let versions =
                version.map_or_else(|| "any version".to_string(), |v| format!("versions {v}"));
            let base = if preinstalled {
                "; preinstalled in the base environment"
            } else {
                "; installed on demand"
            };
            format!(
                "{name}: allowed ({versions}) by {file}:{}:{}{base}",
                at.line, at.column
            )
        }
        Decision::Denied { at, reason } => format!(
            "{name}: denied by {file}:{}:{}: {reason}",
            at.line, at.column
        ),
        Decision::Dependency {
            required_by,
            preinstalled,
        } => format!(
            "{name}: allowed as a dependency of {} (pinned in {}){}",
            required_by.join(", "),
            policy.lock_path().display(),
            if preinstalled {
                "; preinstalled in the base environment"
            } else {
                "; installed on demand"
            }
        ),
        Decision::NotAllowed => format!(
            "{name}: not allowed: no entry in {file} names it. To allow it, an administrator adds:\n\n[[allow]]\nname = \"{name}\""
        ),
    }
}
