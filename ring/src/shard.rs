//! Shards: `S` equal, contiguous ranges of the 64-bit hash ring (S a power of two).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A shard of the ring, `0..S`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ShardId(pub u32);

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The largest supported shard count.
pub const MAX_SHARDS: u32 = 1 << 16;

/// Number of high hash bits that select the shard when there are `shards` shards.
fn shard_bits(shards: u32) -> u32 {
    debug_assert!(shards.is_power_of_two());
    shards.trailing_zeros()
}

/// The shard that owns hash position `hash` when the ring has `shards` shards.
pub fn shard_of_hash(hash: u64, shards: u32) -> ShardId {
    let bits = shard_bits(shards);
    if bits == 0 {
        return ShardId(0);
    }
    ShardId((hash >> (64 - bits)) as u32)
}

/// The first hash position owned by `shard`.
pub fn shard_start(shard: ShardId, shards: u32) -> u64 {
    let bits = shard_bits(shards);
    if bits == 0 {
        return 0;
    }
    u64::from(shard.0) << (64 - bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shard's start position maps back to that shard, and the shards tile the ring.
    #[test]
    fn shard_starts_round_trip() {
        for shards in [1u32, 2, 4, 64, 1024] {
            for shard in 0..shards {
                let start = shard_start(ShardId(shard), shards);
                assert_eq!(shard_of_hash(start, shards), ShardId(shard));
                if start > 0 {
                    assert_eq!(shard_of_hash(start - 1, shards), ShardId(shard - 1));
                }
            }
            assert_eq!(shard_of_hash(u64::MAX, shards), ShardId(shards - 1));
        }
    }
}
