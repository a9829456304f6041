//! Credentials at a node (issue 15): the hashing of passwords, slow on purpose
//! (`ringkv_authz::password`), on blocking threads, at most [`MAX_CONCURRENT_HASHES`] at
//! once (further callers wait for a turn within their deadline).

use std::sync::Arc;

use ringkv_authz::password::{self, PasswordError};
use ringkv_authz::PasswordHash;
use tokio::sync::Semaphore;

use crate::error::NodeError;

/// Most password hashes computed at once on a node (each takes a core for a while).
pub const MAX_CONCURRENT_HASHES: usize = 2;

/// Hashes and checks passwords at a bounded rate, with the node's configured cost.
#[derive(Clone)]
pub struct PasswordHasher {
    iterations: u32,
    turns: Arc<Semaphore>,
}

impl PasswordHasher {
    /// A hasher making hashes of `iterations` rounds (`NodeConfig::password_hash_iterations`).
    pub fn new(iterations: u32) -> PasswordHasher {
        PasswordHasher {
            iterations,
            turns: Arc::new(Semaphore::new(MAX_CONCURRENT_HASHES)),
        }
    }

    /// A new hash of `password`, computed on a blocking thread.
    pub async fn hash(&self, password: String) -> Result<PasswordHash, NodeError> {
        password::check_password(&password).map_err(|err| NodeError::InvalidArgument(err.to_string()))?;
        let iterations = self.iterations;
        let hash = self
            .run(move || password::hash_password(&password, iterations))
            .await?
            .map_err(|err| NodeError::InvalidArgument(err.to_string()))?;
        Ok(PasswordHash(hash))
    }

    /// Whether `password` matches `stored` (`None`: the user has none; a decoy is checked
    /// so the answer takes as long).
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<bool, NodeError> {
        let iterations = self.iterations;
        let known = stored.is_some();
        let matched = self
            .run(move || {
                let stored = stored.unwrap_or_else(|| password::decoy_hash(iterations));
                password::verify_password(&password, &stored)
            })
            .await?;
        match matched {
            Ok(matched) => Ok(known && matched),
            // A malformed stored hash never matches; say nothing more to the caller.
            Err(PasswordError::MalformedHash) => Ok(false),
            Err(err) => Err(NodeError::InvalidArgument(err.to_string())),
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, NodeError> {
        let _turn = self
            .turns
            .acquire()
            .await
            .map_err(|_| NodeError::Fatal("the password hasher is closed".into()))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|err| NodeError::Fatal(format!("password hashing failed: {err}")))
    }
}
