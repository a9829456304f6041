//! Short-lived tokens (issue 15): what a password login returns, and what every router and
//! node checks without asking anyone.
//!
//! A token is `rk1:<key id>:<expiry, unix ms>:<user>:<tag>`, the tag being HMAC-SHA256 of
//! everything before it under the cluster's [`TokenKey`], kept in the system group's
//! permission table (so every node has it, and every router fetches it with the table). A
//! token is valid while its tag checks out with the table's current key, it has not expired
//! and its user still exists (root always does). So:
//! - rotating the key (`AuthChange::RotateTokenKey`) ends every token at once;
//! - deleting a user ends its tokens at once;
//! - changing a password refuses new logins at once, but tokens issued before the change
//!   stay valid until they expire (at most the table's token lifetime, 5 minutes by default);
//! - a token of another cluster (another key) or a forged one is refused.
//!
//! User names never contain `:` (see [`crate::check_name`]), so the fields split unambiguously.

use std::fmt;

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::{AuthTable, ROOT_USER};

/// The first field of every token (its format's version).
const VERSION: &str = "rk1";
/// Bytes of a token key's secret.
pub const TOKEN_SECRET_BYTES: usize = 32;
/// Longest token accepted, in bytes (a 64-character user and the fields around it).
pub const MAX_TOKEN_BYTES: usize = 256;

/// The key tokens are signed with: a number that grows with each rotation and a secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenKey {
    /// Which key this is; the first is 1, each rotation adds one.
    pub id: u32,
    /// The HMAC-SHA256 secret.
    #[serde(with = "serde_bytes")]
    pub secret: Vec<u8>,
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret.
        f.debug_struct("TokenKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A new random secret for a token key.
pub fn new_secret() -> Result<Vec<u8>, TokenError> {
    let mut secret = vec![0u8; TOKEN_SECRET_BYTES];
    SystemRandom::new()
        .fill(&mut secret)
        .map_err(|_| TokenError::NoRandom)?;
    Ok(secret)
}

/// Why a token is refused. The messages are what callers see (`UNAUTHENTICATED`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("the token is not signed by this cluster's current token key (forged, of another cluster, or the key was rotated)")]
    BadSignature,
    #[error("the token expired; log in again")]
    Expired,
    #[error("the token's user no longer exists")]
    NoSuchUser,
    #[error("this cluster has no token key yet")]
    NoKey,
    #[error("no random bytes for a token key")]
    NoRandom,
}

/// A token for `user` valid until `expires_at_ms` (unix milliseconds), signed with `key`.
pub fn sign(key: &TokenKey, user: &str, expires_at_ms: u64) -> String {
    let body = format!("{VERSION}:{}:{expires_at_ms}:{user}", key.id);
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key.secret), body.as_bytes());
    format!("{body}:{}", hex::encode(tag.as_ref()))
}

/// The user `token` stands for if `table` accepts it at `now_ms` (unix milliseconds).
pub fn verify(table: &AuthTable, token: &str, now_ms: u64) -> Result<String, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed);
    }
    let (body, tag) = token.rsplit_once(':').ok_or(TokenError::Malformed)?;
    let mut fields = body.split(':');
    let (Some(VERSION), Some(key_id), Some(expires_at_ms), Some(user), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(TokenError::Malformed);
    };
    let key_id: u32 = key_id.parse().map_err(|_| TokenError::Malformed)?;
    let expires_at_ms: u64 = expires_at_ms.parse().map_err(|_| TokenError::Malformed)?;
    let tag = hex::decode(tag).map_err(|_| TokenError::Malformed)?;
    let key = table.token_key.as_ref().ok_or(TokenError::NoKey)?;
    if key.id != key_id {
        return Err(TokenError::BadSignature);
    }
    hmac::verify(
        &hmac::Key::new(hmac::HMAC_SHA256, &key.secret),
        body.as_bytes(),
        &tag,
    )
    .map_err(|_| TokenError::BadSignature)?;
    if now_ms >= expires_at_ms {
        return Err(TokenError::Expired);
    }
    if user != ROOT_USER && !table.users.contains_key(user) {
        return Err(TokenError::NoSuchUser);
    }
    Ok(user.to_string())
}

/// Now in unix milliseconds, the clock token expiries are read against.
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}
