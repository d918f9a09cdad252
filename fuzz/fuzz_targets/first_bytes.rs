//! The host proxy's readers of script-sent bytes: proxy request heads and
//! the first bytes in a tunnel (TLS ClientHello, HTTP request). Any input
//! must give a verdict, never a panic, and a verdict must not change when
//! more bytes follow a complete message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scriptbox::egress::sniff::{Sniff, first_bytes, request_head, split_authority};

fuzz_target!(|data: &[u8]| {
    let verdict = first_bytes(data);
    let _ = request_head(data);
    if let Sniff::Tls { sni } = &verdict {
        let mut longer = data.to_vec();
        longer.extend_from_slice(b"\x17\x03\x03\x00\x01x");
        assert_eq!(first_bytes(&longer), Sniff::Tls { sni: sni.clone() });
    }
    if let Sniff::Http(head) = &verdict {
        assert!(head.len <= data.len());
        let _ = split_authority(&head.target);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = split_authority(text);
        let _ = scriptbox::egress::rule::EgressRule::parse(text);
        let _ = scriptbox::egress::rule::host_name(text);
    }
});
