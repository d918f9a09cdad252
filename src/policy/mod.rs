//! Whitelist policies: the administrators' law on which packages scripts get.
//!
//! A policy is a TOML file `policies/NAME.toml`, named by its file stem. This
//! module holds the typed [`Policy`]; [`load`] reads and checks a file,
//! reporting every problem at once with its line and column
//! ([`Diagnostic`]), and [`explain`] says why a package is or is not allowed.
//! [`reload::PolicyWatch`] holds a policy for a long-lived process and
//! follows edits of its files.

mod diagnostic;
pub mod explain;
mod load;
pub mod lock;
pub mod reload;
pub mod verdict;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pep508_rs::PackageName;
use pep508_rs::pep440_rs::VersionSpecifiers;
use serde::Serialize;

pub use diagnostic::{Diagnostic, Severity};
pub use load::{PolicyLoadError, load, load_text, read_policy_text};

/// The package index used when a policy names none.
pub const DEFAULT_INDEX: &str = "https://pypi.org/simple";

/// The platform resolved for when a policy names none (uv's
/// `--python-platform` spelling; the Debian base image's glibc is newer).
pub const DEFAULT_PLATFORM: &str = "x86_64-manylinux_2_28";

/// A checked policy.
#[derive(Debug, Clone, Serialize)]
pub struct Policy {
    /// The file stem, e.g. `default`.
    pub name: String,
    /// Where it was read from.
    #[serde(skip)]
    pub path: PathBuf,
    /// Target interpreter and platform.
    pub python: PythonTarget,
    /// How packages get installed.
    pub install: InstallOptions,
    /// Packages baked into the base environment, sorted by name.
    pub preinstalled: Vec<PackageName>,
    /// Allowed packages.
    pub allow: Vec<AllowEntry>,
    /// Denied packages.
    pub deny: Vec<DenyEntry>,
    /// Named resource limits; `default` always exists.
    pub profiles: BTreeMap<String, Profile>,
    /// The lock beside the policy, if it has been locked.
    #[serde(skip)]
    pub lock: Option<lock::Lock>,
}

/// The interpreter a policy's environments are built for.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PythonTarget {
    /// CPython 3.x minor version.
    pub minor: u8,
    /// uv `--python-platform` value, e.g. `x86_64-manylinux_2_28`.
    pub platform: String,
}

/// Install settings.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct InstallOptions {
    /// Whether installable packages are installed without asking (the seed's
    /// `AUTO_INSTALL_PACKAGES`, off by default).
    pub auto_install: bool,
    /// Only wheels: no source distribution runs build code on our machines.
    pub wheels_only: bool,
    /// Simple-API index URL.
    pub index: String,
    /// Resolve as if nothing newer than this date (or RFC 3339 time) existed.
    pub exclude_newer: Option<String>,
}

/// Where in a policy file an entry was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Position {
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
}

/// One `[[allow]]` entry.
#[derive(Debug, Clone, Serialize)]
pub struct AllowEntry {
    /// PEP 503-normalised name.
    pub name: PackageName,
    /// Allowed versions (all when absent).
    pub version: Option<VersionSpecifiers>,
    /// Debian packages an image needs for it (e.g. TA-Lib's C library).
    pub system: Vec<String>,
    /// A note for people.
    pub note: Option<String>,
    /// Where the entry starts.
    #[serde(skip)]
    pub at: Position,
}

/// One `[[deny]]` entry.
#[derive(Debug, Clone, Serialize)]
pub struct DenyEntry {
    /// PEP 503-normalised name.
    pub name: PackageName,
    /// Why it is denied.
    pub reason: String,
    /// Where the entry starts.
    #[serde(skip)]
    pub at: Position,
}

/// Network access for a profile.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub enum Network {
    /// No network at all (the default).
    None,
    /// Only the names the profile lists, through scriptbox's egress proxy
    /// (`network = "allowlist"` with `egress = [...]`).
    Allowlist(Box<crate::egress::Egress>),
}

impl Network {
    /// The egress settings, when the profile has an allowlist.
    pub fn egress(&self) -> Option<&crate::egress::Egress> {
        match self {
            Network::None => None,
            Network::Allowlist(egress) => Some(egress),
        }
    }
}

/// What isolates a run from the host's kernel (`isolation =` in a profile).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// Namespaces, cgroups and a seccomp filter: the script's system calls
    /// reach the host's kernel (the default).
    #[default]
    Namespaces,
    /// gVisor (`runsc`): a kernel in user space answers the script's
    /// system calls; only a narrow set reaches the host's.
    Gvisor,
}

impl Isolation {
    /// True for the default, [`Isolation::Namespaces`].
    pub fn is_default(&self) -> bool {
        *self == Isolation::Namespaces
    }

    /// The name a policy uses for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Namespaces => "namespaces",
            Isolation::Gvisor => "gvisor",
        }
    }
}

/// Resource limits for runs.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Profile {
    /// Memory limit in bytes (memory plus swap: no swap is allowed).
    pub memory: u64,
    /// CPU cores (fractions allowed).
    pub cpus: f64,
    /// Maximum number of processes and threads.
    pub pids: u32,
    /// Wall-clock limit.
    #[serde(serialize_with = "serialize_secs")]
    pub wall_time: Duration,
    /// Bytes of stdout plus stderr kept before the run is stopped.
    pub output: u64,
    /// Size of the writable `/tmp`.
    pub tmp: u64,
    /// Network access.
    pub network: Network,
    /// What stands between the script and the host's kernel. Left out of
    /// the serialised policy when it is the default, so that the digest of
    /// a policy without the key (its lock's header) is what it was.
    #[serde(skip_serializing_if = "Isolation::is_default")]
    pub isolation: Isolation,
}

fn serialize_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Policy {
    /// The allow entry for a package name (any spelling), if any.
    pub fn allowed(&self, name: &PackageName) -> Option<&AllowEntry> {
        self.allow.iter().find(|a| &a.name == name)
    }

    /// The deny entry for a package name (any spelling), if any.
    pub fn denied(&self, name: &PackageName) -> Option<&DenyEntry> {
        self.deny.iter().find(|d| &d.name == name)
    }

    /// Whether the base environment has the package: preinstalled, or (per
    /// the lock) needed by something that is.
    pub fn is_preinstalled(&self, name: &PackageName) -> bool {
        if self.preinstalled.binary_search(name).is_ok() {
            return true;
        }
        let Some(lock) = &self.lock else { return false };
        // The base closure: preinstalled packages and everything they pull in.
        let base = lock.closure_of(self.preinstalled.iter().map(ToString::to_string));
        base.contains(name.as_ref())
    }

    /// sha256 of the policy's meaning (not its formatting or comments):
    /// what a lock file records to tell whether it is stale.
    pub fn digest(&self) -> String {
        let canonical = serde_json::to_vec(self).expect("policy serialises");
        crate::cache::sha256_hex(&canonical)
    }

    /// The lock file beside the policy: `policies/NAME.lock`.
    pub fn lock_path(&self) -> PathBuf {
        self.path.with_extension("lock")
    }
}

/// Finds a policy by name (`strict` → `policies/strict.toml`) or by path.
pub fn resolve_policy_path(spec: &str, policies_dir: &Path) -> PathBuf {
    let as_path = Path::new(spec);
    if spec.ends_with(".toml") || spec.contains('/') {
        as_path.to_path_buf()
    } else {
        policies_dir.join(format!("{spec}.toml"))
    }
}
