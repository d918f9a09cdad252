//! Callback signatures: `X-Scriptbox-Signature: v1=HEX`, where HEX is the
//! HMAC-SHA256, keyed with the tenant's secret (its UTF-8 text as printed
//! by `scriptbox token secret`), of the timestamp header's value, a `.`,
//! and the body's bytes. The timestamp (`X-Scriptbox-Timestamp`, Unix
//! seconds) is inside the signature so a receiver can refuse replays of
//! old deliveries.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-scriptbox-signature";
/// The header carrying the time the signature was made.
pub const TIMESTAMP_HEADER: &str = "x-scriptbox-timestamp";
/// The prefix of every tenant secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// A new tenant secret: the prefix and 32 random bytes in hex.
pub fn new_secret() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!("{SECRET_PREFIX}{}", hex(&bytes)))
}

/// The value of [`SIGNATURE_HEADER`] for `body` sent at `timestamp`.
pub fn signature(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex(&mac.finalize().into_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // An independent computation: Python's
        // hmac.new(b"whsec_test", b"1700000000.{}", "sha256").hexdigest().
        assert_eq!(
            signature("whsec_test", 1_700_000_000, b"{}"),
            "v1=35495024f4ef3f94e5a93e22221544c4b75e9a42300cd965ab81cb85cd994e91"
        );
    }

    #[test]
    fn secrets_are_random_and_prefixed() {
        let (a, b) = (new_secret().unwrap(), new_secret().unwrap());
        assert_ne!(a, b);
        assert!(a.starts_with(SECRET_PREFIX) && a.len() == SECRET_PREFIX.len() + 64);
    }
}
