//! Which addresses the proxy may dial: never loopback, private, link-local
//! (cloud metadata), shared, multicast, reserved or documentation ranges,
//! nor IPv6 forms that carry such an IPv4 address inside — unless the
//! profile's `egress_private` covers the address.
//!
//! The ranges are data (`src/data/egress_refused.tsv`), read once.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use ipnet::IpNet;

const REFUSED_TSV: &str = include_str!("../data/egress_refused.tsv");

/// One refused range and why.
#[derive(Debug, Clone)]
pub struct RefusedRange {
    /// The range.
    pub net: IpNet,
    /// What it is, for people.
    pub reason: &'static str,
}

/// The refused ranges, in file order (specific before general where they
/// overlap, so the first match names the narrowest reason).
pub fn refused_ranges() -> &'static [RefusedRange] {
    static RANGES: OnceLock<Vec<RefusedRange>> = OnceLock::new();
    RANGES.get_or_init(|| {
        REFUSED_TSV
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .filter_map(|l| {
                let (cidr, reason) = l.split_once('\t')?;
                // A bad line is caught by the unit test over the file.
                Some(RefusedRange {
                    net: cidr.trim().parse().ok()?,
                    reason: reason.trim(),
                })
            })
            .collect()
    })
}

/// The IPv4 addresses an IPv6 address carries inside: v4-compatible,
/// NAT64 (well-known prefix), 6to4, and Teredo (server and client).
fn embedded_v4(ip: Ipv6Addr) -> Vec<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    let mut out = Vec::new();
    if s[..6] == [0, 0, 0, 0, 0, 0] || s[..6] == [0, 0, 0, 0, 0, 0xffff] {
        out.push(low);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        out.push(low);
    }
    if s[0] == 0x2002 {
        out.push(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    if s[0] == 0x2001 && s[1] == 0 {
        out.push(Ipv4Addr::new(
            (s[2] >> 8) as u8,
            s[2] as u8,
            (s[3] >> 8) as u8,
            s[3] as u8,
        ));
        out.push(Ipv4Addr::from(!u32::from(low)));
    }
    out
}

/// Decides on addresses for one profile.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    /// Ranges the administrator opened (`egress_private`).
    pub private: Vec<IpNet>,
}

impl AddressPolicy {
    /// `Ok` when `ip` may be dialled; else the refused range's reason. An
    /// IPv4-mapped address is judged (and should be dialled) as IPv4.
    pub fn check(&self, ip: IpAddr) -> Result<(), String> {
        let ip = ip.to_canonical();
        let mut candidates = vec![ip];
        if let IpAddr::V6(v6) = ip {
            candidates.extend(embedded_v4(v6).into_iter().map(IpAddr::V4));
        }
        for candidate in candidates {
            if self.private.iter().any(|net| net.contains(&candidate)) {
                continue;
            }
            if let Some(range) = refused_ranges().iter().find(|r| r.net.contains(&candidate)) {
                return Err(if candidate == ip {
                    format!("{ip} is {} ({})", range.reason, range.net)
                } else {
                    format!(
                        "{ip} embeds {candidate}, which is {} ({})",
                        range.reason, range.net
                    )
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_of_the_data_file_parses() {
        let lines = REFUSED_TSV
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .count();
        assert_eq!(refused_ranges().len(), lines);
        assert!(lines > 30);
    }

    #[test]
    fn refused_and_allowed_addresses() {
        let policy = AddressPolicy::default();
        for refused in [
            "127.0.0.1",
            "127.255.255.254",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.100.100.200",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.251",
            "192.0.2.1",
            "198.18.0.1",
            "168.63.129.16",
            "::",
            "::1",
            "fd00:ec2::254",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "2002:c0a8:101::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        ] {
            let ip: IpAddr = refused.parse().unwrap();
            assert!(policy.check(ip).is_err(), "{refused} should be refused");
        }
        for allowed in [
            "1.1.1.1",
            "8.8.8.8",
            "151.101.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            let ip: IpAddr = allowed.parse().unwrap();
            assert_eq!(policy.check(ip), Ok(()), "{allowed}");
        }
    }

    #[test]
    fn egress_private_opens_a_range() {
        let policy = AddressPolicy {
            private: vec![
                "127.0.0.1/32".parse().unwrap(),
                "10.1.2.0/24".parse().unwrap(),
            ],
        };
        assert_eq!(policy.check("127.0.0.1".parse().unwrap()), Ok(()));
        assert_eq!(policy.check("::ffff:127.0.0.1".parse().unwrap()), Ok(()));
        assert_eq!(policy.check("10.1.2.200".parse().unwrap()), Ok(()));
        assert!(policy.check("127.0.0.2".parse().unwrap()).is_err());
        assert!(policy.check("10.1.3.1".parse().unwrap()).is_err());
        let why = policy
            .check("169.254.169.254".parse().unwrap())
            .unwrap_err();
        assert!(why.contains("link-local"), "{why}");
    }
}
