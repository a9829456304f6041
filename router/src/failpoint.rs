//! Test failpoints: points in the transaction coordinator where a router started with the
//! hidden `--unsafe-failpoint NAME` flag exits at once, as if killed there, so an
//! end-to-end test can leave a transaction half-done deterministically
//! (`tests/tests/txn_faults.rs`). Unset (always, outside tests), a check is one comparison
//! of an `Option` in the context.

use std::fmt;
use std::str::FromStr;

/// The exit status of a router stopped by a failpoint (distinct from a panic's 101 and the
/// binary's 1 on an error).
pub const FAILPOINT_EXIT_CODE: i32 = 86;

/// Where the router exits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failpoint {
    /// A two-phase commit locked every key (all prewrites answered), before it takes its
    /// commit timestamp: the transaction is left pending.
    TxnExitAfterPrewrite,
    /// A two-phase commit's primary shard answered committed, before the other shards are
    /// committed: the transaction is committed, its secondary locks left to readers.
    TxnExitAfterPrimaryCommit,
}

impl Failpoint {
    const ALL: [Failpoint; 2] = [
        Failpoint::TxnExitAfterPrewrite,
        Failpoint::TxnExitAfterPrimaryCommit,
    ];

    /// The name `--unsafe-failpoint` takes.
    pub fn name(self) -> &'static str {
        match self {
            Failpoint::TxnExitAfterPrewrite => "txn-exit-after-prewrite",
            Failpoint::TxnExitAfterPrimaryCommit => "txn-exit-after-primary-commit",
        }
    }
}

impl fmt::Display for Failpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Failpoint {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Failpoint::ALL
            .into_iter()
            .find(|failpoint| failpoint.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Failpoint::ALL.iter().map(|failpoint| failpoint.name()).collect();
                format!("unknown failpoint {name:?} (one of {})", names.join(", "))
            })
    }
}

/// Exits the process at once with [`FAILPOINT_EXIT_CODE`] when `armed` is `here`: no
/// destructor, no graceful shutdown, no answer to the client.
pub fn check(armed: Option<Failpoint>, here: Failpoint) {
    if armed == Some(here) {
        eprintln!("ringkv-router: failpoint {here} reached, exiting");
        std::process::exit(FAILPOINT_EXIT_CODE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every failpoint parses back from its name; unknown names list the known ones.
    #[test]
    fn names_round_trip() {
        for failpoint in Failpoint::ALL {
            assert_eq!(failpoint.name().parse::<Failpoint>(), Ok(failpoint));
        }
        let unknown = "txn-exit-never".parse::<Failpoint>();
        assert!(matches!(&unknown, Err(message) if message.contains("txn-exit-after-prewrite")));
    }
}
