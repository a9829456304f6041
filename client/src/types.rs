//! Domain types of the client API and their protobuf conversions.

use ringkv_proto::v1 as proto;

/// A stored value with its version (positive, monotonic per key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    /// The value bytes.
    pub value: Vec<u8>,
    /// The version of the value (the Raft log index of the write that produced it).
    pub version: u64,
}

/// How a read is served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadConsistency {
    /// Through the shard leader after a ReadIndex check.
    #[default]
    Linearizable,
    /// By any replica from its local state: possibly stale, never torn.
    Stale,
}

impl From<ReadConsistency> for proto::Consistency {
    fn from(consistency: ReadConsistency) -> Self {
        match consistency {
            ReadConsistency::Linearizable => proto::Consistency::Linearizable,
            ReadConsistency::Stale => proto::Consistency::Stale,
        }
    }
}

/// The result of a compare-and-swap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CasOutcome {
    /// The comparison held and the new value (or the delete) was applied.
    Swapped {
        /// Version of the new value; 0 after a delete.
        new_version: u64,
    },
    /// The key did not have the expected version; nothing changed.
    Mismatch {
        /// The current value, `None` when the key is absent.
        current: Option<Versioned>,
    },
}

impl CasOutcome {
    /// Whether the swap was applied.
    pub fn is_swapped(&self) -> bool {
        matches!(self, CasOutcome::Swapped { .. })
    }
}

/// Converts a `found/value/version` triple from the wire.
pub(crate) fn versioned(found: bool, value: Vec<u8>, version: u64) -> Option<Versioned> {
    found.then_some(Versioned { value, version })
}

impl From<proto::CompareAndSwapResponse> for CasOutcome {
    fn from(response: proto::CompareAndSwapResponse) -> Self {
        if response.succeeded {
            CasOutcome::Swapped {
                new_version: response.new_version,
            }
        } else {
            CasOutcome::Mismatch {
                current: versioned(
                    response.current_found,
                    response.current_value,
                    response.current_version,
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failed CAS on an absent key reports no current value.
    #[test]
    fn cas_mismatch_absent() {
        let outcome = CasOutcome::from(proto::CompareAndSwapResponse {
            succeeded: false,
            current_found: false,
            ..Default::default()
        });
        assert_eq!(outcome, CasOutcome::Mismatch { current: None });
    }

    /// A failed CAS carries the current value and version.
    #[test]
    fn cas_mismatch_present() {
        let outcome = CasOutcome::from(proto::CompareAndSwapResponse {
            succeeded: false,
            current_found: true,
            current_value: b"v".to_vec(),
            current_version: 7,
            ..Default::default()
        });
        assert_eq!(
            outcome,
            CasOutcome::Mismatch {
                current: Some(Versioned {
                    value: b"v".to_vec(),
                    version: 7
                })
            }
        );
    }

    /// A successful CAS reports the new version.
    #[test]
    fn cas_swapped() {
        let outcome = CasOutcome::from(proto::CompareAndSwapResponse {
            succeeded: true,
            new_version: 9,
            ..Default::default()
        });
        assert!(outcome.is_swapped());
        assert_eq!(outcome, CasOutcome::Swapped { new_version: 9 });
    }
}
