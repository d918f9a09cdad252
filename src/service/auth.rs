//! Bearer tokens: made at random, shown once, stored only as their sha256,
//! and checked on every API call but health and metrics.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::Service;
use super::error::ApiError;
use super::store::{Caller, Role};

/// The prefix of every token, so one found in a log or a repository is
/// recognisable.
pub const TOKEN_PREFIX: &str = "sbx_";

/// A new token: the prefix and 32 random bytes in hex.
pub fn new_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{TOKEN_PREFIX}{hex}"))
}

/// What the store keeps of a token.
pub fn token_hash(token: &str) -> String {
    crate::cache::sha256_hex(token.as_bytes())
}

/// Whether `name` is a usable tenant name: 1 to 64 of `A-Z a-z 0-9 . _ -`.
pub fn valid_tenant(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl FromRequestParts<Service> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        service: &Service,
    ) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthorized(
                "send 'Authorization: Bearer TOKEN' (make one with `scriptbox token create`)",
            )
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| t.starts_with(TOKEN_PREFIX) && t.len() < 256)
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be 'Bearer sbx_...'")
            })?;
        service
            .store()
            .authenticate(&token_hash(token))
            .await?
            .ok_or_else(|| ApiError::unauthorized("unknown or revoked token"))
    }
}

impl Caller {
    /// The tenant whose runs this caller may see: its own, or every
    /// tenant's (`None`) for an admin.
    pub fn scope(&self) -> Option<&str> {
        match self.role {
            Role::Admin => None,
            Role::Submit => Some(&self.tenant),
        }
    }

    /// `Ok` for admins, 403 otherwise.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Admin => Ok(()),
            Role::Submit => Err(ApiError::forbidden(
                "this needs a token with the admin role",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_only_their_hash_is_kept() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == TOKEN_PREFIX.len() + 64);
        assert_eq!(token_hash(&a).len(), 64);
        assert_ne!(token_hash(&a), a);
        assert!(valid_tenant("acme-bots_1.eu"));
        assert!(!valid_tenant("") && !valid_tenant("a b") && !valid_tenant(&"x".repeat(65)));
    }
}
