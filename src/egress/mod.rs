//! Egress allowlist: scripts reach the host names a profile lists, and
//! nothing else.
//!
//! The sandbox has only loopback. Its one way out is a Unix socket served
//! by the [`proxy::HostProxy`] that scriptbox runs on the host for the run:
//! the security boundary, which alone decides. It speaks HTTP/1.1 proxy
//! protocol (`CONNECT host:port`, absolute-form `GET http://host/...`),
//! checks the name and port against the profile's [`rule::Allowlist`],
//! resolves the name itself, refuses addresses in refused ranges
//! ([`address`]), dials exactly the address it checked, and reads the
//! client's first bytes ([`sniff`]): a TLS server name or an HTTP Host
//! header must name the same host. Each connection becomes a
//! [`record::ConnectionRecord`].
//!
//! Inside the sandbox, the [`relay`] (not a boundary: killing it only loses
//! the network) offers what clients need to get there: a DNS stub
//! ([`dns`]) answering allowlisted names with synthetic loopback addresses,
//! an HTTP proxy port for clients honouring `HTTPS_PROXY`, and transparent
//! listeners on the synthetic addresses for clients that ignore it.

pub mod address;
pub mod beside;
pub mod dns;
pub mod handoff;
pub mod proxy;
pub mod record;
pub mod relay;
pub mod rule;
pub mod session;
pub mod sniff;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::policy::{Network, Profile};
pub use address::AddressPolicy;
pub use proxy::{HostProxy, HostProxyHandle};
pub use record::{ConnectionRecord, EgressReport, Reason};
pub use relay::{Relay, RelayConfig, RelayHandle};
pub use rule::{Allowlist, EgressRule};
pub use session::EgressSession;

/// Connections listed in a report; more are only counted.
pub const MAX_RECORDS: usize = 4096;

/// Connections open through the proxy at once, by default.
pub const DEFAULT_MAX_CONCURRENT: usize = 128;

/// `egress_connections` when a profile does not set it.
pub const DEFAULT_MAX_CONNECTIONS: u64 = 256;

/// `egress_bytes` when a profile does not set it (256 MiB).
pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;

/// The egress settings of one profile (`network = "allowlist"`), as the
/// policy file gives them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Egress {
    /// `egress`: which names and ports.
    pub allow: Allowlist,
    /// `egress_private`: refused ranges the administrator opened.
    pub private: Vec<ipnet::IpNet>,
    /// `egress_resolve`: names answered with these addresses instead of the
    /// system resolver's.
    pub resolve: BTreeMap<String, IpAddr>,
    /// `egress_connections`: connections per run, allowed or not.
    pub max_connections: u64,
    /// `egress_bytes`: bytes per run, both ways together.
    pub max_bytes: u64,
}

/// Timeouts of the host proxy; each bounds a wait on the script.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Timeouts {
    /// For the proxy request head, and for the first bytes in a tunnel.
    pub first_bytes: Duration,
    /// For resolving a name.
    pub resolve: Duration,
    /// For each dial.
    pub dial: Duration,
    /// Nothing moving either way for this long closes a connection.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            first_bytes: Duration::from_secs(10),
            resolve: Duration::from_secs(5),
            dial: Duration::from_secs(10),
            idle: Duration::from_secs(300),
        }
    }
}

/// Everything the host proxy enforces for one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EgressConfig {
    /// Names and ports.
    pub allow: Allowlist,
    /// Which resolved addresses may be dialled.
    pub private: Vec<ipnet::IpNet>,
    /// Fixed answers for names (`egress_resolve`).
    pub resolve: BTreeMap<String, IpAddr>,
    /// Whether names without a fixed answer go to the system resolver
    /// (true for runs; tests turn it off so nothing leaves the machine).
    pub system_resolver: bool,
    /// Connections per run (allowed or not).
    pub max_connections: u64,
    /// Bytes per run, both ways together.
    pub max_bytes: u64,
    /// Connections open at once.
    pub max_concurrent: usize,
    /// How long the proxy waits for each thing.
    pub timeouts: Timeouts,
}

impl EgressConfig {
    /// The config for a profile; `None` when its network is `none`.
    pub fn from_profile(profile: &Profile) -> Option<EgressConfig> {
        match &profile.network {
            Network::None => None,
            Network::Allowlist(egress) => Some(EgressConfig::from_egress(egress)),
        }
    }

    /// The config for egress settings, with the default limits.
    pub fn from_egress(egress: &Egress) -> EgressConfig {
        EgressConfig {
            allow: egress.allow.clone(),
            private: egress.private.clone(),
            resolve: egress.resolve.clone(),
            system_resolver: true,
            max_connections: egress.max_connections,
            max_bytes: egress.max_bytes,
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            timeouts: Timeouts::default(),
        }
    }

    /// What the proxy checks addresses with.
    pub fn address_policy(&self) -> AddressPolicy {
        AddressPolicy {
            private: self.private.clone(),
        }
    }
}

/// Why the proxy or relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// A socket could not be bound.
    #[error("egress: cannot listen on {what}: {source}")]
    Bind {
        /// Which socket.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Anything else from the OS.
    #[error("egress: {0}")]
    Io(String),
    /// A relay config file was unusable.
    #[error("egress relay config {path}: {reason}")]
    Config {
        /// The file.
        path: String,
        /// What was wrong.
        reason: String,
    },
}
