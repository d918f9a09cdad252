//! Egress rules: the host names (and ports) a profile lets scripts reach.
//!
//! An entry is an exact host name (`query1.finance.yahoo.com`) or a
//! wildcard over subdomains (`*.alpaca.markets`: any depth, never the bare
//! domain), optionally with one port (`stream.binance.com:9443`; without
//! one, 443 and 80). The same checks serve `policy check` (entries written
//! by administrators) and the proxy (names written by scripts), so what the
//! policy accepts is exactly what is enforced.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// Ports an entry without `:port` allows.
pub const DEFAULT_PORTS: [u16; 2] = [443, 80];

/// Longest host name (RFC 1035, without the trailing dot).
const MAX_NAME_LEN: usize = 253;

/// Which host names an entry covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostPattern {
    /// Exactly this name.
    Exact(String),
    /// Any name below this domain (`*.alpaca.markets` holds `alpaca.markets`).
    Subdomains(String),
}

impl HostPattern {
    /// Whether `host` (already normalised by [`host_name`]) is covered.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => host == name,
            HostPattern::Subdomains(domain) => host
                .strip_suffix(domain.as_str())
                .and_then(|rest| rest.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty()),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Subdomains(domain) => write!(f, "*.{domain}"),
        }
    }
}

/// One `egress` entry, checked and normalised.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EgressRule {
    /// The names it covers.
    pub pattern: HostPattern,
    /// The one port it allows, or `None` for [`DEFAULT_PORTS`].
    pub port: Option<u16>,
}

impl EgressRule {
    /// Parses and normalises an entry (lowercase, IDNA A-labels, no trailing
    /// dot), refusing anything that is not a host name or `*.` pattern.
    pub fn parse(text: &str) -> Result<EgressRule, RuleError> {
        let err = |kind: RuleErrorKind| RuleError {
            text: text.to_string(),
            kind,
        };
        if text.trim().is_empty() {
            return Err(err(RuleErrorKind::Empty));
        }
        if text.contains("://") {
            return Err(err(RuleErrorKind::Scheme));
        }
        if text.contains('@') {
            return Err(err(RuleErrorKind::Userinfo));
        }
        if text.contains(['/', '?', '#']) {
            return Err(err(RuleErrorKind::Path));
        }
        if is_ip_literal(text) {
            return Err(err(RuleErrorKind::IpAddress));
        }
        let (host, port) = split_port(text).map_err(err)?;
        let (wildcard, name) = match host.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None if host == "*" => return Err(err(RuleErrorKind::Everything)),
            None => (false, host),
        };
        if name.contains('*') {
            return Err(err(RuleErrorKind::Wildcard));
        }
        // One trailing dot (the root) is allowed and dropped.
        let name = name.strip_suffix('.').unwrap_or(name);
        // IDNA (UTS 46) lowercases and maps Unicode names to A-labels.
        let ascii = idna::domain_to_ascii_strict(name)
            .map_err(|_| err(RuleErrorKind::Name("not a valid host name".into())))?;
        let name = match host_name(&ascii) {
            Ok(name) => name,
            // `*.com`: a single label is always a public suffix.
            Err(NameError::SingleLabel) if wildcard => {
                return Err(err(RuleErrorKind::PublicSuffix(ascii)));
            }
            Err(why) => return Err(err(RuleErrorKind::from(why))),
        };
        let pattern = if wildcard {
            let suffix = psl::suffix_str(&name).unwrap_or(&name);
            if suffix == name {
                return Err(err(RuleErrorKind::PublicSuffix(name)));
            }
            HostPattern::Subdomains(name)
        } else {
            HostPattern::Exact(name)
        };
        Ok(EgressRule { pattern, port })
    }

    /// The ports this entry allows.
    pub fn ports(&self) -> &[u16] {
        match &self.port {
            Some(p) => std::slice::from_ref(p),
            None => &DEFAULT_PORTS,
        }
    }

    /// Whether it allows `host` (normalised) on `port`.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        self.ports().contains(&port) && self.pattern.matches(host)
    }
}

impl fmt::Display for EgressRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.pattern),
            None => write!(f, "{}", self.pattern),
        }
    }
}

impl Serialize for EgressRule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EgressRule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        EgressRule::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The rules of one profile, answering "may this name be reached".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Allowlist {
    /// In policy order.
    pub rules: Vec<EgressRule>,
}

impl Allowlist {
    /// Whether `host` (normalised) may be reached on `port`.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        self.rules.iter().any(|r| r.allows(host, port))
    }

    /// Whether `host` may be reached on some port.
    pub fn allows_name(&self, host: &str) -> bool {
        self.rules.iter().any(|r| r.pattern.matches(host))
    }

    /// Every port `host` may be reached on, sorted.
    pub fn ports_for(&self, host: &str) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .rules
            .iter()
            .filter(|r| r.pattern.matches(host))
            .flat_map(|r| r.ports().iter().copied())
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }
}

/// Why an entry (or a name a script asked for) is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{text}' {kind}")]
pub struct RuleError {
    /// The entry as written.
    pub text: String,
    /// What is wrong with it.
    pub kind: RuleErrorKind,
}

/// What is wrong with an egress entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleErrorKind {
    /// `""`.
    #[error("is empty (expected a host name like \"api.example.com\")")]
    Empty,
    /// `*`.
    #[error("would allow every host (list host names, or \"*.example.com\" for subdomains)")]
    Everything,
    /// `https://...`.
    #[error("has a scheme (give the host name only, e.g. \"api.example.com\")")]
    Scheme,
    /// `user@host`.
    #[error("has a user name (give the host name only)")]
    Userinfo,
    /// `host/path`.
    #[error("has a path (egress entries name hosts, optionally with :port)")]
    Path,
    /// `1.2.3.4`, `[::1]`, `2130706433`, `127.1`.
    #[error(
        "is an IP address (the proxy decides on host names; use egress_private for internal address ranges)"
    )]
    IpAddress,
    /// `a.*.com`, `*foo.com`.
    #[error("has a wildcard other than a leading '*.' (e.g. \"*.example.com\")")]
    Wildcard,
    /// `*.com`, `*.co.uk`.
    #[error(
        "would allow every host under the public suffix '{0}' (name a domain below it, e.g. \"*.example.{0}\")"
    )]
    PublicSuffix(String),
    /// `host:0`, `host:http`.
    #[error("has a bad port '{0}' (expected a number from 1 to 65535)")]
    Port(String),
    /// Not a host name.
    #[error("is not a valid host name: {0}")]
    Name(String),
}

impl From<NameError> for RuleErrorKind {
    fn from(e: NameError) -> RuleErrorKind {
        match e {
            NameError::IpAddress => RuleErrorKind::IpAddress,
            other => RuleErrorKind::Name(other.to_string()),
        }
    }
}

/// Why a name is not a host name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Nothing there.
    #[error("it is empty")]
    Empty,
    /// Over 253 characters, or a label over 63.
    #[error("it is too long")]
    TooLong,
    /// A character outside letters, digits, `-` and `.`.
    #[error("it has characters other than letters, digits, '-' and '.'")]
    Character,
    /// `a..b`, a label starting or ending with `-`.
    #[error("it has an empty label or a label starting or ending with '-'")]
    Label,
    /// `localhost`.
    #[error("it has a single label (give a fully qualified name)")]
    SingleLabel,
    /// The last label is numeric: an IPv4 address in some spelling.
    #[error("it is an IP address")]
    IpAddress,
}

/// Normalises a host name as scripts send it (CONNECT targets, Host
/// headers, TLS SNI, DNS questions): ASCII only, lowercased, one trailing
/// dot dropped, letters/digits/hyphens in labels of 1 to 63, at least two
/// labels, and not numeric in its last label (which is how URL parsers and
/// `inet_aton` read `2130706433`, `127.1` or `0x7f.1` as IPv4).
pub fn host_name(text: &str) -> Result<String, NameError> {
    let text = text.strip_suffix('.').unwrap_or(text);
    if text.is_empty() {
        return Err(NameError::Empty);
    }
    if text.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    if !text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(NameError::Character);
    }
    let labels: Vec<&str> = text.split('.').collect();
    for label in &labels {
        if label.is_empty() || label.starts_with('-') || label.ends_with('-') {
            return Err(NameError::Label);
        }
        if label.len() > 63 {
            return Err(NameError::TooLong);
        }
    }
    let last = labels[labels.len() - 1];
    if is_numeric_label(last) {
        return Err(NameError::IpAddress);
    }
    if labels.len() < 2 {
        return Err(NameError::SingleLabel);
    }
    Ok(text.to_ascii_lowercase())
}

/// Decimal, or `0x` hexadecimal (octal is decimal digits): what IPv4
/// parsers accept as a number.
fn is_numeric_label(label: &str) -> bool {
    let hex = label
        .strip_prefix("0x")
        .or_else(|| label.strip_prefix("0X"));
    match hex {
        Some(digits) => digits.bytes().all(|b| b.is_ascii_hexdigit()),
        None => label.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// Whether `text` (maybe with a port) is an IP address in any spelling:
/// IPv4 dotted, bracketed or bare IPv6, or a numeric IPv4 form.
pub fn is_ip_literal(text: &str) -> bool {
    if text.parse::<IpAddr>().is_ok() {
        return true;
    }
    if let Some(rest) = text.strip_prefix('[') {
        let inner = rest.split(']').next().unwrap_or(rest);
        let inner = inner.split('%').next().unwrap_or(inner);
        return inner.parse::<Ipv6Addr>().is_ok() || inner.contains(':');
    }
    let host = match text.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => text,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    host.parse::<IpAddr>().is_ok()
        || host
            .rsplit('.')
            .next()
            .is_some_and(|last| !last.is_empty() && is_numeric_label(last))
}

/// Splits `host[:port]`.
fn split_port(text: &str) -> Result<(&str, Option<u16>), RuleErrorKind> {
    match text.rsplit_once(':') {
        None => Ok((text, None)),
        Some((host, port)) => {
            let valid = !port.is_empty()
                && port.len() <= 5
                && port.bytes().all(|b| b.is_ascii_digit())
                && !port.starts_with('0');
            match port.parse::<u16>() {
                Ok(p) if valid && p > 0 => Ok((host, Some(p))),
                _ => Err(RuleErrorKind::Port(port.to_string())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> EgressRule {
        EgressRule::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn kind(text: &str) -> RuleErrorKind {
        EgressRule::parse(text).expect_err(text).kind
    }

    #[test]
    fn exact_wildcard_and_ports() {
        let r = rule("Query1.Finance.Yahoo.com.");
        assert_eq!(r.to_string(), "query1.finance.yahoo.com");
        assert!(r.allows("query1.finance.yahoo.com", 443));
        assert!(r.allows("query1.finance.yahoo.com", 80));
        assert!(!r.allows("query1.finance.yahoo.com", 8443));
        assert!(!r.allows("query2.finance.yahoo.com", 443));

        let w = rule("*.alpaca.markets");
        assert!(w.allows("api.alpaca.markets", 443));
        assert!(w.allows("a.b.alpaca.markets", 443));
        assert!(!w.allows("alpaca.markets", 443));
        assert!(!w.allows("evilalpaca.markets", 443));
        assert!(!w.allows("alpaca.markets.evil.com", 443));

        let p = rule("stream.binance.com:9443");
        assert_eq!(p.ports(), &[9443]);
        assert!(!p.allows("stream.binance.com", 443));
        assert_eq!(p.to_string(), "stream.binance.com:9443");
    }

    #[test]
    fn idna_names_become_a_labels() {
        assert_eq!(rule("Börse.de").to_string(), "xn--brse-5qa.de");
    }

    #[test]
    fn refused_entries() {
        assert_eq!(kind(""), RuleErrorKind::Empty);
        assert_eq!(kind("*"), RuleErrorKind::Everything);
        assert_eq!(kind("https://api.example.com"), RuleErrorKind::Scheme);
        assert_eq!(kind("user@api.example.com"), RuleErrorKind::Userinfo);
        assert_eq!(kind("api.example.com/v2"), RuleErrorKind::Path);
        for ip in [
            "1.2.3.4",
            "1.2.3.4:443",
            "::1",
            "[::1]",
            "[::1]:443",
            "2130706433",
            "127.1",
            "0x7f.0.0.1",
            "0x7f000001",
        ] {
            assert_eq!(kind(ip), RuleErrorKind::IpAddress, "{ip}");
        }
        assert_eq!(kind("a.*.example.com"), RuleErrorKind::Wildcard);
        assert_eq!(kind("*foo.example.com"), RuleErrorKind::Wildcard);
        assert_eq!(kind("*.com"), RuleErrorKind::PublicSuffix("com".into()));
        assert_eq!(kind("*.co.uk"), RuleErrorKind::PublicSuffix("co.uk".into()));
        assert_eq!(kind("*.test"), RuleErrorKind::PublicSuffix("test".into()));
        for port in [
            "a.com:0",
            "a.com:65536",
            "a.com:",
            "a.com:http",
            "a.com:080",
        ] {
            assert!(matches!(kind(port), RuleErrorKind::Port(_)), "{port}");
        }
        assert!(matches!(kind("localhost"), RuleErrorKind::Name(_)));
        assert!(matches!(kind("a_b.example.com"), RuleErrorKind::Name(_)));
        assert!(matches!(kind("-a.example.com"), RuleErrorKind::Name(_)));
    }

    #[test]
    fn names_from_scripts() {
        assert_eq!(
            host_name("API.Exchange.TEST.").unwrap(),
            "api.exchange.test"
        );
        assert_eq!(host_name("2130706433"), Err(NameError::IpAddress));
        assert_eq!(host_name("127.1"), Err(NameError::IpAddress));
        assert_eq!(host_name("a..b"), Err(NameError::Label));
        assert_eq!(host_name("bÃ¶rse.de"), Err(NameError::Character));
        assert_eq!(host_name(""), Err(NameError::Empty));
        assert_eq!(host_name(&"a.".repeat(200)), Err(NameError::TooLong));
    }

    #[test]
    fn allowlist_ports_for_a_name() {
        let list = Allowlist {
            rules: vec![rule("*.binance.com"), rule("stream.binance.com:9443")],
        };
        assert_eq!(list.ports_for("stream.binance.com"), vec![80, 443, 9443]);
        assert_eq!(list.ports_for("api.binance.com"), vec![80, 443]);
        assert!(list.ports_for("binance.com").is_empty());
        assert!(list.allows("stream.binance.com", 9443));
        assert!(!list.allows("api.binance.com", 9443));
    }
}
