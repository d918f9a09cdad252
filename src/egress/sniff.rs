//! Reading the first bytes of a connection: a proxy request head, or the
//! first bytes a client sends through a tunnel (a TLS ClientHello and its
//! server name, or a plain HTTP request and its Host header).
//!
//! Everything here works on a buffer the caller fills, answers
//! [`Sniff::Incomplete`] until it has enough, and never panics: these bytes
//! come from the script. The ClientHello is parsed by `tls-parser` and
//! request heads by `httparse`.

use tls_parser::{
    TlsMessage, TlsMessageHandshake, parse_tls_extension_sni_content, parse_tls_message_handshake,
};

use super::rule::host_name;

/// Largest request head read (the proxy request, or a tunnelled HTTP
/// request's head).
pub const MAX_HEAD: usize = 16 * 1024;

/// Largest ClientHello read, across records (post-quantum key shares make
/// them a few KiB; 64 KiB is far beyond any client's).
pub const MAX_CLIENT_HELLO: usize = 64 * 1024;

/// Most headers in one request head.
const MAX_HEADERS: usize = 96;

/// What the first bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniff {
    /// Not enough bytes yet to tell.
    Incomplete,
    /// A TLS ClientHello: the server name it carries, when it carries
    /// exactly one (lowercased, no trailing dot; not checked as a name).
    Tls {
        /// The SNI host name.
        sni: Option<String>,
    },
    /// An HTTP/1.x request head.
    Http(RequestHead),
    /// Neither, or over the size limits.
    Unknown,
}

/// A parsed HTTP/1.x request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// `GET`, `CONNECT`, ...
    pub method: String,
    /// The request target as sent (`/path`, `http://host/path`, `host:443`).
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// The Host header, when there is exactly one.
    pub host: Option<String>,
    /// How many Host headers there were.
    pub host_count: usize,
    /// Every header, in order (names as sent).
    pub headers: Vec<(String, Vec<u8>)>,
    /// Length of the head, including the blank line.
    pub len: usize,
}

/// Parses an HTTP/1.x request head at the start of `buf`.
pub fn request_head(buf: &[u8]) -> Sniff {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            let (Some(method), Some(target), Some(version)) =
                (request.method, request.path, request.version)
            else {
                return Sniff::Unknown;
            };
            let hosts: Vec<&httparse::Header> = request
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("host"))
                .collect();
            let host = match hosts.as_slice() {
                [one] => std::str::from_utf8(one.value)
                    .ok()
                    .map(|v| v.trim().to_string()),
                _ => None,
            };
            Sniff::Http(RequestHead {
                method: method.to_string(),
                target: target.to_string(),
                version,
                host,
                host_count: hosts.len(),
                headers: request
                    .headers
                    .iter()
                    .map(|h| (h.name.to_string(), h.value.to_vec()))
                    .collect(),
                len,
            })
        }
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => Sniff::Incomplete,
        _ => Sniff::Unknown,
    }
}

/// Tells what the first bytes in a tunnel are.
pub fn first_bytes(buf: &[u8]) -> Sniff {
    match buf.first() {
        None => Sniff::Incomplete,
        Some(0x16) => client_hello(buf),
        Some(b) if b.is_ascii_uppercase() => request_head(buf),
        Some(_) => Sniff::Unknown,
    }
}

/// Reassembles the first handshake message from TLS records and reads its
/// server name.
fn client_hello(buf: &[u8]) -> Sniff {
    let mut handshake: Vec<u8> = Vec::new();
    let mut rest = buf;
    loop {
        if rest.len() < 5 {
            return Sniff::Incomplete;
        }
        // Handshake records of TLS 1.0 to 1.3 (the record layer says 3.x).
        if rest[0] != 0x16 || rest[1] != 0x03 {
            return Sniff::Unknown;
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if len == 0 || len > 16384 + 256 {
            return Sniff::Unknown;
        }
        if rest.len() < 5 + len {
            return if buf.len() < MAX_CLIENT_HELLO {
                Sniff::Incomplete
            } else {
                Sniff::Unknown
            };
        }
        handshake.extend_from_slice(&rest[5..5 + len]);
        rest = &rest[5 + len..];
        if handshake.len() >= 4 {
            if handshake[0] != 1 {
                return Sniff::Unknown;
            }
            let body = (usize::from(handshake[1]) << 16)
                | (usize::from(handshake[2]) << 8)
                | usize::from(handshake[3]);
            if body > MAX_CLIENT_HELLO {
                return Sniff::Unknown;
            }
            if handshake.len() >= 4 + body {
                return Sniff::Tls {
                    sni: server_name(&handshake[..4 + body]),
                };
            }
        }
    }
}

/// The one host name in a ClientHello's server_name extension.
fn server_name(handshake: &[u8]) -> Option<String> {
    let Ok((_, TlsMessage::Handshake(TlsMessageHandshake::ClientHello(hello)))) =
        parse_tls_message_handshake(handshake)
    else {
        return None;
    };
    // Walk the extension list by its framing, so an extension tls-parser
    // is strict about cannot hide the name; the SNI body is the crate's.
    let mut ext = hello.ext?;
    let mut names = Vec::new();
    while !ext.is_empty() {
        if ext.len() < 4 {
            return None;
        }
        let kind = u16::from_be_bytes([ext[0], ext[1]]);
        let len = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
        let data = ext.get(4..4 + len)?;
        if kind == 0 {
            let Ok((_, tls_parser::TlsExtension::SNI(list))) =
                parse_tls_extension_sni_content(data)
            else {
                return None;
            };
            names.extend(list);
        }
        ext = &ext[4 + len..];
    }
    match names.as_slice() {
        [(kind, name)] if kind.0 == 0 => {
            let name = std::str::from_utf8(name).ok()?;
            Some(name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase())
        }
        _ => None,
    }
}

/// Splits a `host:port` authority (IPv6 literals bracketed).
pub fn split_authority(authority: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(port) => Some((host, Some(port.parse().ok()?))),
            None if after.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Some((host, Some(port.parse().ok()?))),
        Some(_) => Some((authority, None)),
        None => Some((authority, None)),
    }
}

/// Whether a Host header value (or URL authority) names `name`, and
/// `port` when it gives one.
pub fn host_header_matches(value: &str, name: &str, port: u16) -> bool {
    let Some((host, host_port)) = split_authority(value) else {
        return false;
    };
    host_name(host).is_ok_and(|h| h == name) && host_port.is_none_or(|p| p == port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_heads() {
        let Sniff::Http(head) =
            first_bytes(b"GET /v8/finance HTTP/1.1\r\nHost: API.exchange.test\r\nX: y\r\n\r\nbody")
        else {
            panic!()
        };
        assert_eq!(head.method, "GET");
        assert_eq!(head.host.as_deref(), Some("API.exchange.test"));
        assert_eq!(head.len, 59);
        assert_eq!(first_bytes(b"GET / HTTP/1.1\r\nHost: a"), Sniff::Incomplete);
        let Sniff::Http(two) = first_bytes(b"GET / HTTP/1.1\r\nHost: a.b\r\nHost: c.d\r\n\r\n")
        else {
            panic!()
        };
        assert_eq!((two.host, two.host_count), (None, 2));
        assert_eq!(first_bytes(b"\x00\x01junk"), Sniff::Unknown);
        assert_eq!(first_bytes(&vec![b'G'; MAX_HEAD + 1]), Sniff::Unknown);
    }

    #[test]
    fn host_headers() {
        assert!(host_header_matches(
            "api.exchange.test",
            "api.exchange.test",
            80
        ));
        assert!(host_header_matches(
            "API.exchange.test:8080",
            "api.exchange.test",
            8080
        ));
        assert!(host_header_matches(
            "api.exchange.test",
            "api.exchange.test",
            8080
        ));
        assert!(!host_header_matches(
            "api.exchange.test:81",
            "api.exchange.test",
            80
        ));
        assert!(!host_header_matches("evil.test", "api.exchange.test", 80));
        assert!(!host_header_matches("127.0.0.1", "api.exchange.test", 80));
    }

    #[test]
    fn client_hellos_split_anywhere() {
        // A ClientHello for "api.exchange.test" with one extension (SNI).
        let name = b"api.exchange.test";
        let mut sni = Vec::new();
        sni.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
        sni.push(0);
        sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
        sni.extend_from_slice(name);
        let mut ext = vec![0, 0];
        ext.extend_from_slice(&(sni.len() as u16).to_be_bytes());
        ext.extend_from_slice(&sni);
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one cipher
        body.extend_from_slice(&[1, 0]); // null compression
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut hs = vec![1, 0];
        hs.extend_from_slice(&(body.len() as u16).to_be_bytes());
        hs.extend_from_slice(&body);
        // Two records, to check reassembly.
        let (a, b) = hs.split_at(10);
        let mut wire = Vec::new();
        for part in [a, b] {
            wire.extend_from_slice(&[0x16, 3, 1]);
            wire.extend_from_slice(&(part.len() as u16).to_be_bytes());
            wire.extend_from_slice(part);
        }
        for cut in 0..wire.len() {
            assert_eq!(first_bytes(&wire[..cut]), Sniff::Incomplete, "cut at {cut}");
        }
        assert_eq!(
            first_bytes(&wire),
            Sniff::Tls {
                sni: Some("api.exchange.test".into())
            }
        );
    }
}
