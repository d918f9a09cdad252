//! The relay's DNS stub: any datagram must give an answer or nothing, never
//! a panic; an answer must parse, keep the query's id, and never carry an
//! address for a name the lookup refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scriptbox::egress::dns::{Lookup, SyntheticNames, answer};

fuzz_target!(|data: &[u8]| {
    let mut names = SyntheticNames::new("127.77.0.0/24".parse().unwrap(), 16);
    let mut allowed = false;
    let reply = answer(data, &mut |name| {
        if name.ends_with(".exchange.test") {
            allowed = true;
            names
                .address_for(name)
                .map_or(Lookup::Exhausted, |(ip, _)| Lookup::Address(ip))
        } else {
            Lookup::NotAllowed
        }
    });
    if let Some(reply) = reply {
        assert!(reply.len() >= 12);
        assert_eq!(reply[..2], data[..2], "the answer keeps the query's id");
        if !allowed {
            // ANCOUNT is zero unless a name was allowed.
            assert_eq!(&reply[6..8], &[0, 0]);
        }
    }
});
