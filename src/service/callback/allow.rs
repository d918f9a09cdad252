//! Where callbacks may go. `scriptbox serve --callback-allow PATTERN`
//! (repeatable) names the hosts a `callback_url` may point at:
//!
//! - a host name (`hooks.example.com`, or `backend` for a single-label
//!   internal name), any port;
//! - `*.example.com`: any name below that domain (never the bare domain,
//!   never a whole public suffix such as `*.com`);
//! - `*`: any host name;
//! - an address or CIDR (`10.1.2.0/24`, `127.0.0.1/32`, `::1/128`): URLs
//!   whose host is an IP address in it, and addresses in it that would
//!   otherwise be refused.
//!
//! Whatever the host, every address it resolves to is checked when the
//! callback is made (resolve, check, then connect to that very address, so
//! a name that changes its answer between the check and the connection
//! cannot reach anything else): loopback, private, link-local (the cloud
//! metadata services), shared, multicast and reserved ranges — the
//! egress proxy's list, `src/data/egress_refused.tsv` — are refused
//! unless a CIDR pattern covers the address.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use url::{Host, Url};

use crate::egress::address::AddressPolicy;

/// Longest callback URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// A pattern over host names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NamePattern {
    /// `*`.
    Any,
    /// Exactly this name.
    Exact(String),
    /// Any name below this domain.
    Subdomains(String),
}

impl NamePattern {
    fn matches(&self, host: &str) -> bool {
        match self {
            NamePattern::Any => true,
            NamePattern::Exact(name) => host == name,
            NamePattern::Subdomains(domain) => host
                .strip_suffix(domain.as_str())
                .and_then(|rest| rest.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty()),
        }
    }
}

/// The `--callback-allow` patterns of a server.
#[derive(Debug, Clone, Default)]
pub struct CallbackAllow {
    names: Vec<NamePattern>,
    nets: Vec<IpNet>,
    patterns: Vec<String>,
}

/// A callback URL that passed the checks made at submission.
#[derive(Debug, Clone)]
pub struct CallbackTarget {
    /// The URL.
    pub url: Url,
    /// Its host.
    pub host: Host<String>,
    /// Its port (the scheme's default when none is written).
    pub port: u16,
}

impl CallbackAllow {
    /// Parses the patterns; a bad one is an error naming it.
    pub fn parse(patterns: &[String]) -> Result<CallbackAllow, String> {
        let mut allow = CallbackAllow::default();
        for text in patterns {
            let bad = |why: &str| format!("--callback-allow '{text}': {why}");
            let t = text.trim();
            if t.is_empty() {
                return Err(bad(
                    "empty (expected a host name, *.domain, * or a CIDR like 10.0.0.0/8)",
                ));
            }
            if let Ok(net) = t.parse::<IpNet>() {
                allow.nets.push(net.trunc());
            } else if let Ok(ip) = t.parse::<IpAddr>() {
                allow.nets.push(IpNet::from(ip));
            } else if t.contains('/') {
                return Err(bad("not a CIDR (expected e.g. 10.0.0.0/8 or fd00::/8)"));
            } else if t == "*" {
                allow.names.push(NamePattern::Any);
            } else if let Some(domain) = t.strip_prefix("*.") {
                let name = normalise_name(domain).map_err(|w| bad(&w))?;
                if psl::suffix_str(&name).is_none_or(|suffix| suffix == name) {
                    return Err(bad(&format!(
                        "would allow every host under the public suffix '{name}' (name a domain below it)"
                    )));
                }
                allow.names.push(NamePattern::Subdomains(name));
            } else {
                let name = normalise_name(t).map_err(|w| bad(&w))?;
                allow.names.push(NamePattern::Exact(name));
            }
            allow.patterns.push(t.to_string());
        }
        Ok(allow)
    }

    /// True when no callback is allowed at all (no patterns).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The address check for resolved addresses: the refused ranges, less
    /// the CIDRs allowed.
    pub fn addresses(&self) -> AddressPolicy {
        AddressPolicy {
            private: self.nets.clone(),
        }
    }

    /// Checks a callback URL: `http`, no user name or password,
    /// a host the patterns allow, and, for an IP address host, an address
    /// that may be dialled. Names are resolved only when the callback is
    /// made ([`CallbackAllow::resolve`]).
    pub fn check_url(&self, text: &str) -> Result<CallbackTarget, String> {
        if self.is_empty() {
            return Err(
                "callbacks are not enabled on this server (it was started without --callback-allow)"
                    .into(),
            );
        }
        if text.len() > MAX_URL_LEN {
            return Err(format!("callback_url is longer than {MAX_URL_LEN} bytes"));
        }
        let url =
            Url::parse(text).map_err(|e| format!("callback_url '{text}' is not a URL ({e})"))?;
        if url.scheme() != "http" {
            return Err(format!(
                "callback_url '{text}': expected an http:// URL (callbacks are sent over plain HTTP, signed; https is not supported yet)"
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "callback_url '{text}': a user name or password in the URL is not accepted (the signature authenticates the server)"
            ));
        }
        let host = url
            .host()
            .map(|h| h.to_owned())
            .ok_or_else(|| format!("callback_url '{text}' has no host"))?;
        let port = url
            .port_or_known_default()
            .ok_or_else(|| format!("callback_url '{text}' has no port"))?;
        let allowed = self.patterns.join(", ");
        match &host {
            Host::Domain(name) => {
                let name = name.strip_suffix('.').unwrap_or(name);
                if !self.names.iter().any(|p| p.matches(name)) {
                    return Err(format!(
                        "callback host '{name}' is not allowed on this server (allowed: {allowed})"
                    ));
                }
            }
            Host::Ipv4(_) | Host::Ipv6(_) => {
                let ip = host_ip(&host).expect("an address host");
                if !self.nets.iter().any(|n| n.contains(&ip.to_canonical())) {
                    return Err(format!(
                        "callback address {ip} is not in an allowed range on this server (allowed: {allowed})"
                    ));
                }
                self.addresses()
                    .check(ip)
                    .map_err(|why| format!("callback address refused: {why}"))?;
            }
        }
        Ok(CallbackTarget { url, host, port })
    }

    /// Resolves a target's host and keeps the addresses that may be
    /// dialled, in the resolver's order; an error names what was refused
    /// when nothing is left.
    pub async fn resolve(&self, target: &CallbackTarget) -> Result<Vec<SocketAddr>, String> {
        let found: Vec<SocketAddr> = match &target.host {
            Host::Domain(name) => tokio::net::lookup_host((name.as_str(), target.port))
                .await
                .map_err(|e| format!("cannot resolve '{name}': {e}"))?
                .collect(),
            other => vec![SocketAddr::new(
                host_ip(other).expect("an address host"),
                target.port,
            )],
        };
        let policy = self.addresses();
        let mut allowed = Vec::new();
        let mut refused = Vec::new();
        for addr in found {
            // Dial a v4-mapped address as the IPv4 address it is.
            let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
            match policy.check(addr.ip()) {
                Ok(()) => allowed.push(addr),
                Err(why) => refused.push(why),
            }
        }
        if allowed.is_empty() {
            return Err(if refused.is_empty() {
                format!("'{}' resolves to no address", target.host)
            } else {
                format!("refused: {}", refused.join("; "))
            });
        }
        Ok(allowed)
    }
}

fn host_ip(host: &Host<String>) -> Option<IpAddr> {
    match host {
        Host::Ipv4(v4) => Some(IpAddr::V4(*v4)),
        Host::Ipv6(v6) => Some(IpAddr::V6(*v6)),
        Host::Domain(_) => None,
    }
}

/// A host name as the URL parser leaves it: IDNA A-labels, lowercase, no
/// trailing dot; labels of letters, digits and hyphens. Single labels
/// (internal names) are accepted.
fn normalise_name(text: &str) -> Result<String, String> {
    let text = text.strip_suffix('.').unwrap_or(text);
    let ascii =
        idna::domain_to_ascii_strict(text).map_err(|_| "not a valid host name".to_string())?;
    if ascii.is_empty() || ascii.len() > 253 {
        return Err("not a valid host name".into());
    }
    for label in ascii.split('.') {
        if label.is_empty()
            || label.len() > 63
            || label.starts_with('-')
            || label.ends_with('-')
            || !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err("not a valid host name".into());
        }
    }
    if ascii
        .rsplit('.')
        .next()
        .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("an IP address is written as a CIDR (e.g. 10.1.2.3/32)".into());
    }
    Ok(ascii)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(patterns: &[&str]) -> CallbackAllow {
        CallbackAllow::parse(&patterns.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn patterns_parse_or_are_refused_with_a_reason() {
        for bad in ["", "*.com", "*.co.uk", "10.0.0.0/33", "exa mple.com", "a/b"] {
            let err = CallbackAllow::parse(&[bad.to_string()]).unwrap_err();
            assert!(err.contains(&format!("'{bad}'")), "{err}");
        }
        let a = allow(&[
            "Hooks.Example.com",
            "*.corp.example",
            "backend",
            "10.1.2.0/24",
        ]);
        assert_eq!(a.patterns.len(), 4);
    }

    #[test]
    fn urls_are_checked_against_the_patterns() {
        let a = allow(&[
            "hooks.example.com",
            "*.corp.example",
            "backend",
            "127.0.0.1/32",
        ]);
        for ok in [
            "http://hooks.example.com/scriptbox",
            "http://HOOKS.example.com:8080/x?y=1",
            "http://api.eu.corp.example/hook",
            "http://backend:8000/hooks",
            "http://127.0.0.1:9999/hook",
        ] {
            assert!(a.check_url(ok).is_ok(), "{ok}: {:?}", a.check_url(ok));
        }
        for (bad, why) in [
            ("ftp://hooks.example.com/", "expected an http:// URL"),
            ("https://hooks.example.com/", "https is not supported yet"),
            ("http://user:pw@hooks.example.com/", "user name"),
            ("http://evil.example.com/", "not allowed"),
            ("http://corp.example/", "not allowed"),
            ("http://127.0.0.2/", "not in an allowed range"),
            ("http://10.0.0.1/", "not in an allowed range"),
            (
                "http://169.254.169.254/latest/meta-data",
                "not in an allowed range",
            ),
            // 127.0.0.2 written as a number: parsed as the address it is.
            ("http://2130706434/", "not in an allowed range"),
            ("http://[::1]/", "not in an allowed range"),
            ("not a url", "not a URL"),
        ] {
            let err = a.check_url(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        assert!(
            CallbackAllow::default()
                .check_url("http://hooks.example.com/")
                .unwrap_err()
                .contains("--callback-allow")
        );
    }

    #[tokio::test]
    async fn resolved_addresses_are_checked_before_connecting() {
        // `localhost` is allowed by name but resolves to loopback, which
        // no CIDR opens: refused at resolution.
        let by_name = allow(&["localhost"]);
        let target = by_name.check_url("http://localhost:9/").unwrap();
        let err = by_name.resolve(&target).await.unwrap_err();
        assert!(err.contains("loopback"), "{err}");
        // With loopback's CIDR allowed, the checked address is what is dialled.
        let opened = allow(&["localhost", "127.0.0.0/8", "::1/128"]);
        let target = opened.check_url("http://localhost:9/").unwrap();
        let addrs = opened.resolve(&target).await.unwrap();
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 9));
    }
}
