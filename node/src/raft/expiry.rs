//! Keys that expire (issue 16, TTL): what a write says about its key's expiry, the entries
//! that carry it, and the entry that removes expired keys.
//!
//! Expiry is decided inside Raft, by no node's clock: an op's time to live travels in its
//! entry, and the state machine turns it into an instant in oracle time, the entry's commit
//! timestamp plus the time to live (`expires_at`, see [`expires_at`]). A version with expiry
//! `E` is invisible to every read at a timestamp at or above `E` and absent for every write
//! committed at or above it, so gets, scans, counts, compare-and-sets and transactions agree
//! on every replica. Expired keys are then removed by [`TtlCommand::Purge`] entries, each
//! deleting at most its limit of them (the shard leader proposes them in the background).
//!
//! Log format: an op's [`Expiry`] is not part of [`WriteOp`]'s encoding (entries written
//! before it decode unchanged); entries whose ops carry one are [`Command::Ttl`] entries
//! ([`TtlCommand::WriteAt`]), which add the expiries as a table beside the writes. Plain
//! writes stay [`Command::WriteAt`], byte for byte as before.
//!
//! [`WriteOp`]: super::types::WriteOp
//! [`Command::Ttl`]: super::types::Command::Ttl
//! [`Command::WriteAt`]: super::types::Command::WriteAt

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::types::TimedWrites;

/// Bits of an oracle timestamp below its milliseconds (`tso/window.rs`).
const LOGICAL_BITS: u32 = 18;

/// What a write op does to its key's expiry. (postcard encodes the variant index: new
/// variants go at the end.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expiry {
    /// A put stores a value that never expires (dropping any expiry the key had); a delete
    /// deletes. Every op before TTL.
    #[default]
    Never,
    /// A put whose value expires this many milliseconds after the entry's commit timestamp.
    After { ttl_ms: u64 },
    /// Not a put (the op's value is ignored): the key's live value, kept, expires this many
    /// milliseconds after the entry's commit timestamp (`expire`). An absent or expired key
    /// is left alone (the op does not succeed).
    Refresh { ttl_ms: u64 },
    /// Not a put: the key's live value, kept, no longer expires (`persist`). A key absent,
    /// expired or without an expiry is left alone (the op does not succeed).
    Persist,
    /// A put whose value expires at this oracle timestamp, whatever the entry's commit
    /// timestamp (a lease's deadline, shared by all its keys). At or below the commit
    /// timestamp, the value is expired at once: invisible to every read at or after it.
    AtTs { expires_at_ts: u64 },
    /// As [`Expiry::Refresh`], to this absolute oracle timestamp (a lease's keep-alive).
    RefreshAtTs { expires_at_ts: u64 },
}

impl Expiry {
    /// Whether the op keeps the key's value and changes only its expiry.
    pub fn keeps_value(self) -> bool {
        matches!(
            self,
            Expiry::Refresh { .. } | Expiry::Persist | Expiry::RefreshAtTs { .. }
        )
    }

    /// The expiry instant (oracle time) a value written by this op at `commit_ts` gets.
    pub fn instant(self, commit_ts: u64) -> Option<u64> {
        match self {
            Expiry::After { ttl_ms } | Expiry::Refresh { ttl_ms } => Some(expires_at(commit_ts, ttl_ms)),
            Expiry::AtTs { expires_at_ts } | Expiry::RefreshAtTs { expires_at_ts } => Some(expires_at_ts),
            Expiry::Never | Expiry::Persist => None,
        }
    }
}

/// The oracle timestamp `ttl_ms` milliseconds after `commit_ts` (saturating).
pub fn expires_at(commit_ts: u64, ttl_ms: u64) -> u64 {
    commit_ts.saturating_add(ttl_ms.saturating_mul(1 << LOGICAL_BITS))
}

/// Milliseconds from oracle timestamp `now_ts` until `expires_at` (0 once it passed).
pub fn remaining_ms(expires_at: u64, now_ts: u64) -> u64 {
    expires_at.saturating_sub(now_ts) >> LOGICAL_BITS
}

/// A shard command about expiry. (postcard encodes the variant index: new variants go at
/// the end.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TtlCommand {
    /// Writes of which some ops carry an [`Expiry`]: applied as [`Command::WriteAt`].
    ///
    /// [`Command::WriteAt`]: super::types::Command::WriteAt
    WriteAt(ExpiringWrites),
    /// Deletes at most `limit` keys whose expiry is at or below the entry's commit
    /// timestamp, oldest expiry first (a key that expired is already invisible at every
    /// timestamp the entry could commit at, so nothing any read sees changes).
    Purge(TimedPurge),
}

/// A [`TtlCommand::Purge`]: its commit timestamp and bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimedPurge {
    pub commit_ts: u64,
    pub limit: u32,
}

/// [`TimedWrites`] whose ops' expiries are encoded too: the writes as a
/// [`super::types::Command::WriteAt`] encodes them, then one expiry per op, per write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiringWrites(pub TimedWrites);

#[derive(Serialize)]
struct ExpiringWritesRef<'a> {
    writes: &'a TimedWrites,
    expiries: Vec<Vec<Expiry>>,
}

#[derive(Deserialize)]
struct ExpiringWritesOwned {
    writes: TimedWrites,
    expiries: Vec<Vec<Expiry>>,
}

impl Serialize for ExpiringWrites {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let expiries = self
            .0
            .writes
            .iter()
            .map(|write| write.ops.iter().map(|op| op.expiry).collect())
            .collect();
        ExpiringWritesRef {
            writes: &self.0,
            expiries,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ExpiringWrites {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let ExpiringWritesOwned { mut writes, expiries } = ExpiringWritesOwned::deserialize(deserializer)?;
        if expiries.len() != writes.writes.len() {
            return Err(serde::de::Error::custom("expiries do not match the writes"));
        }
        for (write, expiries) in writes.writes.iter_mut().zip(expiries) {
            if expiries.len() != write.ops.len() {
                return Err(serde::de::Error::custom("expiries do not match the ops"));
            }
            for (op, expiry) in write.ops.iter_mut().zip(expiries) {
                op.expiry = expiry;
            }
        }
        Ok(ExpiringWrites(writes))
    }
}
