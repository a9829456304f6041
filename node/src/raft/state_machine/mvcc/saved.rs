//! A shard's history as a list, to keep it across a clean restart (`kept_history.rs`
//! stores it at shutdown and gives it back at open when the state is the one it was taken
//! from): every version in memory, in the order they were superseded, and the floor.

use serde::{Deserialize, Serialize};

use super::{History, OldVersion, VERSION_OVERHEAD};

/// One version of the history as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedVersion {
    pub key: Vec<u8>,
    pub version: u64,
    pub commit_ts: u64,
    pub superseded_ts: u64,
    pub expires_at: Option<u64>,
    pub value: Vec<u8>,
}

impl History {
    /// The floor and every version held, oldest superseded first (the eviction order).
    pub fn saved(&self) -> (u64, Vec<SavedVersion>) {
        let mut taken: std::collections::HashMap<&[u8], usize> = std::collections::HashMap::new();
        let mut saved = Vec::with_capacity(self.order.len());
        for (_, key) in &self.order {
            let index = taken.entry(key.as_slice()).or_default();
            if let Some(old) = self.versions.get(key).and_then(|versions| versions.get(*index)) {
                saved.push(SavedVersion {
                    key: key.clone(),
                    version: old.version,
                    commit_ts: old.commit_ts,
                    superseded_ts: old.superseded_ts,
                    expires_at: old.expires_at,
                    value: old.value.clone(),
                });
            }
            *index += 1;
        }
        (self.floor, saved)
    }

    /// Takes back what [`History::saved`] gave, of the same state (the caller checked): the
    /// versions (charged to the budget, the oldest evicted while it is spent) and the floor,
    /// in place of the high-water mark a history starts from.
    pub fn restore(&mut self, floor: u64, versions: Vec<SavedVersion>) {
        self.floor = floor.min(self.high_water);
        for saved in versions {
            let cost = 2 * saved.key.len() + saved.value.len() + VERSION_OVERHEAD;
            self.order.push_back((saved.superseded_ts, saved.key.clone()));
            self.versions.entry(saved.key).or_default().push_back(OldVersion {
                version: saved.version,
                commit_ts: saved.commit_ts,
                superseded_ts: saved.superseded_ts,
                expires_at: saved.expires_at,
                value: saved.value,
            });
            self.bytes += cost;
            self.policy.budget.charge(cost);
        }
        while self.policy.budget.over() && !self.order.is_empty() {
            self.evict_oldest();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Head, HistoryPolicy, Superseded, LOGICAL_BITS};
    use super::*;

    /// A history saved and restored into a fresh one of the same high-water mark answers
    /// every read alike, and charges the budget what it holds.
    #[test]
    fn a_restored_history_reads_like_the_saved_one() {
        let ms = |ms: u64| ms << LOGICAL_BITS;
        let old = |key: &[u8], version: u64, commit_ts: u64, value: &[u8]| Superseded {
            key: key.to_vec(),
            version,
            commit_ts,
            expires_at: None,
            value: value.to_vec(),
        };
        let mut history = History::new(HistoryPolicy::standalone(1_000, usize::MAX), ms(10));
        history.record(
            ms(20),
            vec![old(b"a", 1, ms(10), b"a1"), old(b"b", 2, ms(10), b"b1")],
        );
        history.record(ms(30), vec![old(b"a", 3, ms(20), b"a2")]);
        let (floor, saved) = history.saved();
        assert_eq!(floor, ms(10));
        assert_eq!(
            saved
                .iter()
                .map(|v| (v.key.as_slice(), v.superseded_ts))
                .collect::<Vec<_>>(),
            vec![(&b"a"[..], ms(20)), (&b"b"[..], ms(20)), (&b"a"[..], ms(30))]
        );

        let policy = HistoryPolicy::standalone(1_000, usize::MAX);
        let budget = policy.budget.clone();
        let mut restored = History::new(policy, history.high_water());
        restored.restore(floor, saved);
        assert_eq!(restored.floor(), floor);
        assert_eq!(budget.used(), restored.bytes);
        let head = |value: &[u8]| {
            Some(Head {
                version: 4,
                commit_ts: ms(30),
                expires_at: None,
                value: value.to_vec(),
            })
        };
        for read_ts in [ms(10), ms(15), ms(20), ms(25)] {
            assert_eq!(
                restored.read(b"a", head(b"a3"), read_ts),
                history.read(b"a", head(b"a3"), read_ts),
                "a at {read_ts}"
            );
            assert_eq!(
                restored.read(b"b", None, read_ts),
                history.read(b"b", None, read_ts)
            );
        }
        assert!(
            restored.read(b"a", head(b"a3"), ms(10) - 1).is_err(),
            "below the floor"
        );
    }
}
