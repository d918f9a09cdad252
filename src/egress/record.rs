//! What the proxy saw of each connection, for the run outcome
//! (`scriptbox.run/1`'s `egress` object; additive to the schema).

use serde::{Deserialize, Serialize};

/// Why a connection was refused, or why an allowed one was cut short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// The name is on no `egress` entry.
    NotAllowed,
    /// The name is allowed, but not on this port.
    PortNotAllowed,
    /// The target was an IP address, not a name.
    IpLiteral,
    /// The allowed name resolved to a refused address (loopback, private,
    /// metadata, ...: DNS rebinding) not covered by `egress_private`.
    RefusedAddress,
    /// The allowed name did not resolve.
    NoAddress,
    /// The TLS ClientHello named another host (or none).
    SniMismatch,
    /// The plain HTTP request's Host header named another host (or none),
    /// or disagreed with its URL.
    HostMismatch,
    /// The first bytes in the tunnel were neither TLS nor HTTP.
    UnknownProtocol,
    /// The proxy request was not one the proxy speaks.
    BadRequest,
    /// The client sent nothing (or too little) in time.
    Timeout,
    /// The run's `egress_connections` were used up.
    ConnectionCap,
    /// Too many connections open at once.
    ConcurrencyCap,
    /// The run's `egress_bytes` were used up (an allowed connection cut).
    ByteCap,
    /// Nothing moved for the idle timeout (an allowed connection cut).
    Idle,
    /// The checked address did not accept the connection.
    DialFailed,
    /// The run ended while the connection was open.
    RunEnded,
}

impl Reason {
    /// The kebab-case name, as in JSON and the `X-Scriptbox-Refused` header.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotAllowed => "not-allowed",
            Reason::PortNotAllowed => "port-not-allowed",
            Reason::IpLiteral => "ip-literal",
            Reason::RefusedAddress => "refused-address",
            Reason::NoAddress => "no-address",
            Reason::SniMismatch => "sni-mismatch",
            Reason::HostMismatch => "host-mismatch",
            Reason::UnknownProtocol => "unknown-protocol",
            Reason::BadRequest => "bad-request",
            Reason::Timeout => "timeout",
            Reason::ConnectionCap => "connection-cap",
            Reason::ConcurrencyCap => "concurrency-cap",
            Reason::ByteCap => "byte-cap",
            Reason::Idle => "idle",
            Reason::DialFailed => "dial-failed",
            Reason::RunEnded => "run-ended",
        }
    }
}

/// One connection the sandbox opened through the proxy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionRecord {
    /// The host asked for (normalised when it was a valid name; otherwise
    /// as sent, cut to 255 characters).
    pub host: String,
    /// The port asked for (0 when the request had none).
    pub port: u16,
    /// The address dialled, or the refused address (when one was resolved).
    pub address: Option<String>,
    /// Whether the proxy let it through.
    pub allowed: bool,
    /// Why it was refused, or why an allowed connection was cut.
    pub reason: Option<Reason>,
    /// One line for people, e.g. which range an address is in.
    pub message: Option<String>,
    /// Bytes from the sandbox to the host it reached.
    pub bytes_up: u64,
    /// Bytes from that host to the sandbox.
    pub bytes_down: u64,
    /// Seconds from accepting the connection to closing it.
    pub seconds: f64,
}

/// Everything the proxy saw in one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EgressReport {
    /// Each connection, in the order they ended (at most
    /// [`MAX_RECORDS`](super::MAX_RECORDS)).
    pub connections: Vec<ConnectionRecord>,
    /// Connections not listed because the list was full.
    pub omitted: u64,
    /// Connections let through.
    pub allowed: u64,
    /// Connections refused.
    pub refused: u64,
    /// Bytes up, over every connection.
    pub bytes_up: u64,
    /// Bytes down, over every connection.
    pub bytes_down: u64,
}

impl EgressReport {
    /// One line per refused target and reason, for the run's report on
    /// stderr, in the order first seen; repeats are counted on the line
    /// (`(3 times)`), so a thousand refusals of one kind stay one line.
    pub fn refusal_lines(&self) -> Vec<String> {
        let mut seen: Vec<(&ConnectionRecord, usize)> = Vec::new();
        for c in self.connections.iter().filter(|c| !c.allowed) {
            match seen
                .iter_mut()
                .find(|(s, _)| s.host == c.host && s.port == c.port && s.reason == c.reason)
            {
                Some((_, count)) => *count += 1,
                None => seen.push((c, 1)),
            }
        }
        seen.into_iter()
            .map(|(c, count)| {
                format!(
                    "scriptbox: egress refused {}:{} ({}){}{}",
                    c.host,
                    c.port,
                    c.reason.map_or("refused", Reason::as_str),
                    c.message
                        .as_deref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default(),
                    if count > 1 {
                        format!(" ({count} times)")
                    } else {
                        String::new()
                    }
                )
            })
            .collect()
    }
}
