//! Password hashes (issue 15): PBKDF2-HMAC-SHA256 with a random 16-byte salt, from `ring`
//! (already built for rustls, so no new crate). Slow on purpose: [`ITERATIONS`] rounds, the
//! OWASP recommendation for PBKDF2-HMAC-SHA256 (2023), about 0.2 s of one core per hash
//! or check in a release build; callers run it on a blocking thread and bound how many run
//! at once. (A node may be configured with fewer rounds, down to [`MIN_ITERATIONS`]: tests
//! do, since a debug build takes seconds per hash.)
//!
//! A hash is stored as text, `pbkdf2-sha256$<iterations>$<salt hex>$<hash hex>`, so the cost
//! can be raised later without invalidating existing hashes (each hash names its own).
//! Plaintext passwords are never stored, logged or put in a Raft entry: the node that
//! receives a password hashes it before proposing the change.

use std::num::NonZeroU32;

use ring::pbkdf2;
use ring::rand::{SecureRandom, SystemRandom};

/// PBKDF2 rounds of a new hash.
pub const ITERATIONS: u32 = 600_000;
/// Fewest rounds a stored hash may name (a hash naming fewer is refused as malformed).
pub const MIN_ITERATIONS: u32 = 10_000;
/// Most rounds a stored hash may name (bounds the work one check costs).
pub const MAX_ITERATIONS: u32 = 10_000_000;
/// Longest password accepted, in bytes.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Shortest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;

const SCHEME: &str = "pbkdf2-sha256";
const SALT_BYTES: usize = 16;
const HASH_BYTES: usize = 32;

/// Why a password or a stored hash is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("a password has {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_BYTES} bytes")]
    BadLength,
    #[error("malformed password hash")]
    MalformedHash,
    #[error("no random bytes for a salt")]
    NoRandom,
}

/// Whether `password` is acceptable as a new password.
pub fn check_password(password: &str) -> Result<(), PasswordError> {
    if password.chars().count() < MIN_PASSWORD_CHARS || password.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordError::BadLength);
    }
    Ok(())
}

/// A new salted hash of `password` with `iterations` rounds ([`ITERATIONS`] in production).
pub fn hash_password(password: &str, iterations: u32) -> Result<String, PasswordError> {
    check_password(password)?;
    let rounds = NonZeroU32::new(iterations.clamp(MIN_ITERATIONS, MAX_ITERATIONS))
        .ok_or(PasswordError::MalformedHash)?;
    let mut salt = [0u8; SALT_BYTES];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| PasswordError::NoRandom)?;
    let mut hash = [0u8; HASH_BYTES];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        rounds,
        &salt,
        password.as_bytes(),
        &mut hash,
    );
    Ok(format!(
        "{SCHEME}${rounds}${}${}",
        hex::encode(salt),
        hex::encode(hash)
    ))
}

/// Whether `password` matches `stored` (compared in constant time).
pub fn verify_password(password: &str, stored: &str) -> Result<bool, PasswordError> {
    let mut parts = stored.split('$');
    let (Some(SCHEME), Some(rounds), Some(salt), Some(hash), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(PasswordError::MalformedHash);
    };
    let rounds: u32 = rounds.parse().map_err(|_| PasswordError::MalformedHash)?;
    if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&rounds) {
        return Err(PasswordError::MalformedHash);
    }
    let rounds = NonZeroU32::new(rounds).ok_or(PasswordError::MalformedHash)?;
    let salt = hex::decode(salt).map_err(|_| PasswordError::MalformedHash)?;
    let hash = hex::decode(hash).map_err(|_| PasswordError::MalformedHash)?;
    if password.len() > MAX_PASSWORD_BYTES {
        return Ok(false);
    }
    Ok(pbkdf2::verify(
        pbkdf2::PBKDF2_HMAC_SHA256,
        rounds,
        &salt,
        password.as_bytes(),
        &hash,
    )
    .is_ok())
}

/// A well-formed hash of `iterations` rounds that no caller knows the password of, checked
/// in place of a missing one so a login for an unknown user costs what a wrong password
/// costs (no hint whether the user exists). Made once per process and cost.
pub fn decoy_hash(iterations: u32) -> String {
    static DECOYS: std::sync::Mutex<Vec<(u32, String)>> = std::sync::Mutex::new(Vec::new());
    let mut decoys = DECOYS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, decoy)) = decoys.iter().find(|(rounds, _)| *rounds == iterations) {
        return decoy.clone();
    }
    let mut secret = [0u8; 24];
    // Should the system have no randomness, a fixed secret: still never matched, since a
    // missing user's login is refused whatever the check says.
    let _ = SystemRandom::new().fill(&mut secret);
    let decoy = hash_password(&hex::encode(secret), iterations).unwrap_or_else(|_| {
        format!(
            "{SCHEME}${ITERATIONS}${}${}",
            "00".repeat(SALT_BYTES),
            "00".repeat(HASH_BYTES)
        )
    });
    decoys.push((iterations, decoy.clone()));
    decoy
}
