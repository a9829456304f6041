//! What a write's de-duplication record keeps of its outcome: per op, what a retry is
//! answered with, and no more (a failed comparison's version, not its value, which only
//! the reply to the first application carries); and how outcomes of records made before
//! fingerprints, which kept values, read as that.

use serde::{Deserialize, Serialize};

use crate::raft::types::{Current, Versioned, WriteOpResult};

/// The outcome of one op of a write, as its record keeps it: what a retry is answered with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(in crate::raft::state_machine) struct RecordedOp {
    pub(super) succeeded: bool,
    pub(super) version: u64,
    pub(super) existed: bool,
    /// A failed comparison's current version (`None`: the key was absent, or the op
    /// succeeded).
    pub(super) current_version: Option<u64>,
}

impl RecordedOp {
    /// What the record of `result` keeps.
    pub(in crate::raft::state_machine) fn of(result: &WriteOpResult) -> RecordedOp {
        RecordedOp {
            succeeded: result.succeeded,
            version: result.version,
            existed: result.existed,
            current_version: result.current.as_ref().map(|current| current.version),
        }
    }

    /// The answer to a retry: the first outcome, a failed comparison's current state as a
    /// version only.
    pub(in crate::raft::state_machine) fn answer(&self) -> WriteOpResult {
        WriteOpResult {
            succeeded: self.succeeded,
            version: self.version,
            existed: self.existed,
            current: self
                .current_version
                .map(|version| Current { version, value: None }),
        }
    }
}

/// The outcome of one op in a write record written before fingerprints (`w`, and the legacy
/// `r`): a failed comparison's value too.
#[derive(Debug, Deserialize)]
pub(in crate::raft::state_machine) struct UnfingerprintedOp {
    pub(super) succeeded: bool,
    pub(super) version: u64,
    pub(super) existed: bool,
    pub(super) current: Option<Versioned>,
}

/// Outcomes of records made before fingerprints, as records keep them now.
pub(super) fn recorded_ops(ops: Vec<UnfingerprintedOp>) -> Vec<RecordedOp> {
    ops.into_iter()
        .map(|op| RecordedOp {
            succeeded: op.succeeded,
            version: op.version,
            existed: op.existed,
            current_version: op.current.map(|current| current.version),
        })
        .collect()
}
