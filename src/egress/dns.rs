//! The DNS stub's wire handling: one query in, at most one answer out.
//!
//! The stub answers only names on the allowlist, each with a synthetic
//! loopback address from the run's [`SyntheticNames`] (the relay listens
//! there and carries connections to the host proxy, which resolves the real
//! name itself). `AAAA` and other types for allowed names get an empty
//! answer (so clients use IPv4); every other name gets NXDOMAIN. Nothing is
//! ever forwarded: a name that is not allowed never leaves the sandbox, so
//! DNS cannot carry data out. Parsing and encoding are `hickory-proto`'s.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType, rdata::A};
use ipnet::Ipv4Net;

use super::rule::host_name;

/// TTL of synthetic answers: the mapping holds for the whole run.
pub const ANSWER_TTL: u32 = 300;

/// Largest DNS message the stub reads (UDP or TCP).
pub const MAX_MESSAGE: usize = 4096;

/// What the stub's owner says about a queried name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Allowed, at this synthetic address.
    Address(Ipv4Addr),
    /// Allowed, but no address could be given (the map is full).
    Exhausted,
    /// Not allowed: NXDOMAIN.
    NotAllowed,
}

/// Answers one DNS query. `lookup` gets each allowed-looking name,
/// normalised (lowercase, no trailing dot). Returns `None` for input that
/// is not a query at all (too short for a header, or a response), which is
/// dropped.
pub fn answer(query: &[u8], lookup: &mut dyn FnMut(&str) -> Lookup) -> Option<Vec<u8>> {
    if query.len() < 12 || query.len() > MAX_MESSAGE {
        return None;
    }
    let id = u16::from_be_bytes([query[0], query[1]]);
    // The QR bit: never answer an answer (no loops between stubs).
    if query[2] & 0x80 != 0 {
        return None;
    }
    let request = match Message::from_vec(query) {
        Ok(m) => m,
        Err(_) => {
            return encode(&Message::error_msg(
                id,
                OpCode::Query,
                ResponseCode::FormErr,
            ));
        }
    };
    if request.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut response = Message::response(id, request.metadata.op_code);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        response.edns = Some(edns);
    }
    if request.metadata.op_code != OpCode::Query {
        response.metadata.response_code = ResponseCode::NotImp;
        return encode(&response);
    }
    let [question] = request.queries.as_slice() else {
        response.metadata.response_code = ResponseCode::FormErr;
        return encode(&response);
    };
    response.add_query(question.clone());
    if question.query_class() != DNSClass::IN {
        response.metadata.response_code = ResponseCode::Refused;
        return encode(&response);
    }
    let Ok(name) = host_name(&question.name().to_ascii()) else {
        response.metadata.response_code = ResponseCode::NXDomain;
        return encode(&response);
    };
    match lookup(&name) {
        Lookup::NotAllowed => response.metadata.response_code = ResponseCode::NXDomain,
        Lookup::Exhausted => response.metadata.response_code = ResponseCode::ServFail,
        Lookup::Address(ip) => {
            response.metadata.authoritative = true;
            if question.query_type() == RecordType::A {
                response.add_answer(Record::from_rdata(
                    question.name().clone(),
                    ANSWER_TTL,
                    RData::A(A(ip)),
                ));
            }
        }
    }
    encode(&response)
}

fn encode(message: &Message) -> Option<Vec<u8>> {
    message.to_vec().ok()
}

/// The run's map of allowed names to synthetic loopback addresses:
/// allocated in order on first query, stable for the run, bounded.
#[derive(Debug, Clone)]
pub struct SyntheticNames {
    net: Ipv4Net,
    max: usize,
    by_name: HashMap<String, Ipv4Addr>,
    by_address: HashMap<Ipv4Addr, String>,
}

impl SyntheticNames {
    /// A map over `net` (e.g. `127.77.0.0/16`) of at most `max` names.
    pub fn new(net: Ipv4Net, max: usize) -> SyntheticNames {
        // Neither the network nor the broadcast address is handed out.
        let room = net.hosts().count();
        SyntheticNames {
            net,
            max: max.min(room),
            by_name: HashMap::new(),
            by_address: HashMap::new(),
        }
    }

    /// The address of `name`, allocating one on first use; `None` when the
    /// map is full.
    pub fn address_for(&mut self, name: &str) -> Option<(Ipv4Addr, bool)> {
        if let Some(ip) = self.by_name.get(name) {
            return Some((*ip, false));
        }
        if self.by_name.len() >= self.max {
            return None;
        }
        let offset = u32::try_from(self.by_name.len() + 1).ok()?;
        let ip = Ipv4Addr::from(u32::from(self.net.network()).checked_add(offset)?);
        if !self.net.contains(&ip) {
            return None;
        }
        self.by_name.insert(name.to_string(), ip);
        self.by_address.insert(ip, name.to_string());
        Some((ip, true))
    }

    /// The name a synthetic address stands for.
    pub fn name_for(&self, ip: Ipv4Addr) -> Option<&str> {
        self.by_address.get(&ip).map(String::as_str)
    }

    /// How many names are mapped.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// True when no name is mapped yet.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

    fn query(name: &str, kind: RecordType) -> Vec<u8> {
        let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
        m.to_vec().unwrap()
    }

    fn ask(bytes: &[u8]) -> Message {
        let mut names = SyntheticNames::new("127.77.0.0/16".parse().unwrap(), 8);
        let reply = answer(bytes, &mut |n| {
            if n.ends_with(".exchange.test") {
                names
                    .address_for(n)
                    .map_or(Lookup::Exhausted, |(ip, _)| Lookup::Address(ip))
            } else {
                Lookup::NotAllowed
            }
        })
        .expect("an answer");
        Message::from_vec(&reply).unwrap()
    }

    #[test]
    fn allowed_names_get_synthetic_a_records_only() {
        let m = ask(&query("API.exchange.test.", RecordType::A));
        assert_eq!(m.metadata.id, 0x1234);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].data, RData::A(A(Ipv4Addr::new(127, 77, 0, 1))));
        let m = ask(&query("api.exchange.test.", RecordType::AAAA));
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
    }

    #[test]
    fn other_names_are_nxdomain() {
        for name in [
            "secret-data.evil.example.",
            "exchange.test.",
            "2130706433.",
            "localhost.",
        ] {
            let m = ask(&query(name, RecordType::A));
            assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
            assert!(m.answers.is_empty());
        }
    }

    #[test]
    fn garbage_is_dropped_or_formerr() {
        let mut never = |_: &str| -> Lookup { panic!("no lookup for garbage") };
        assert!(answer(b"", &mut never).is_none());
        assert!(answer(&[0; 11], &mut never).is_none());
        let mut bad = vec![0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
        bad.extend_from_slice(&[0xc0, 0x0c]); // a pointer to itself
        let m = Message::from_vec(&answer(&bad, &mut never).unwrap()).unwrap();
        assert_eq!(m.metadata.id, 0xabcd);
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    }

    #[test]
    fn the_map_is_bounded_and_stable() {
        let mut names = SyntheticNames::new("127.77.0.0/30".parse().unwrap(), 100);
        let (a, new) = names.address_for("a.example.com").unwrap();
        assert!(new);
        assert_eq!(names.address_for("a.example.com").unwrap(), (a, false));
        assert!(names.address_for("b.example.com").is_some());
        assert!(names.address_for("c.example.com").is_none());
        assert_eq!(names.name_for(a), Some("a.example.com"));
    }
}
