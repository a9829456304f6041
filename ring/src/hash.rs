//! The key hash: SipHash-2-4 with fixed, documented keys.
//!
//! Changing these keys or the algorithm would move every key to another shard: they are
//! part of the on-disk and wire contract.

use std::hash::Hasher;

use siphasher::sip::SipHasher24;

/// First SipHash key: the ASCII bytes of `"ringkv-1"` read as a big-endian u64.
pub const SIPHASH_KEY_0: u64 = u64::from_be_bytes(*b"ringkv-1");
/// Second SipHash key: the ASCII bytes of `"sharding"` read as a big-endian u64.
pub const SIPHASH_KEY_1: u64 = u64::from_be_bytes(*b"sharding");

/// The position of `key` on the 64-bit hash ring.
pub fn key_hash(key: &[u8]) -> u64 {
    let mut hasher = SipHasher24::new_with_keys(SIPHASH_KEY_0, SIPHASH_KEY_1);
    hasher.write(key);
    hasher.finish()
}

/// The position of virtual node `vnode` of `node_id` on the ring.
pub(crate) fn token_hash(node_id: u64, vnode: u32) -> u64 {
    let mut hasher = SipHasher24::new_with_keys(SIPHASH_KEY_0, SIPHASH_KEY_1);
    hasher.write(b"ringkv-token");
    hasher.write(&node_id.to_be_bytes());
    hasher.write(&vnode.to_be_bytes());
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash is a contract: these values must never change.
    #[test]
    fn key_hash_is_stable() {
        assert_eq!(key_hash(b""), key_hash(b""));
        let golden = [key_hash(b"a"), key_hash(b"hello"), key_hash(&[0u8; 16])];
        // Recomputing gives the same answer, and different keys differ.
        assert_eq!(golden, [key_hash(b"a"), key_hash(b"hello"), key_hash(&[0u8; 16])]);
        assert_ne!(golden[0], golden[1]);
        assert_eq!(SIPHASH_KEY_0, 0x72696e676b762d31);
        assert_eq!(SIPHASH_KEY_1, 0x7368617264696e67);
    }
}
