//! The storage seam: ordered trees, range iteration, atomic batches, flush.
//!
//! Nothing above this module names `sled`. The seam is deliberately narrow so another
//! engine can be measured against sled later: an [`Engine`] opens named [`Tree`]s; a tree
//! is an ordered map of byte strings with atomic [`Batch`]es; [`Engine::flush`] makes every
//! write made before it durable (one fsync for all trees: group commit happens above).
//!
//! A write or flush that fails with an IO error (a full disk, a failing one) never returns:
//! it stops the node ([`fail_stop`]); so does a failed write or sync of the write-ahead log
//! opened with [`wal_options`]. Reads keep returning their errors. (Under the negative
//! control [`fail_stop::ignore_storage_errors`] a failed flush or log sync returns success and
//! a failed sled write returns its error.)

pub mod fail_stop;
mod sled_engine;

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use ringkv_ring::keys::prefix_end;

pub use sled_engine::SledEngine;

/// Errors from the storage engine. All of them mean the disk or the engine failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage engine error: {0}")]
    Engine(String),
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt record in tree {tree}: {detail}")]
    Corrupt { tree: String, detail: String },
    #[error("raft log: {0}")]
    Wal(#[from] ringkv_wal::WalError),
}

pub type StorageResult<T> = Result<T, StorageError>;

/// One key/value pair read from a tree.
pub type Pair = (Vec<u8>, Vec<u8>);

/// An ordered map of byte strings.
pub trait Tree: Send + Sync + 'static {
    fn name(&self) -> &str;
    fn get(&self, key: &[u8]) -> StorageResult<Option<Vec<u8>>>;
    fn insert(&self, key: &[u8], value: &[u8]) -> StorageResult<()>;
    fn remove(&self, key: &[u8]) -> StorageResult<()>;
    /// Applies every operation of `batch` atomically.
    fn apply_batch(&self, batch: Batch) -> StorageResult<()>;
    /// Pairs with keys in `(start, end)`, ascending.
    fn range(
        &self,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
    ) -> Box<dyn Iterator<Item = StorageResult<Pair>> + Send + '_>;
    /// Pairs with keys in `(start, end)`, descending.
    fn range_rev(
        &self,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
    ) -> Box<dyn Iterator<Item = StorageResult<Pair>> + Send + '_>;
    /// The pair with the greatest key in `(start, end)`.
    fn last_in(&self, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> StorageResult<Option<Pair>>;
    /// Removes every pair.
    fn clear(&self) -> StorageResult<()>;
}

/// A handle to a tree, shared between tasks.
pub type TreeRef = Arc<dyn Tree>;

/// A storage engine holding many trees.
pub trait Engine: Send + Sync + 'static {
    fn open_tree(&self, name: &str) -> StorageResult<TreeRef>;
    fn drop_tree(&self, name: &str) -> StorageResult<()>;
    fn tree_names(&self) -> StorageResult<Vec<String>>;
    /// Makes every write issued before this call durable (fsync).
    fn flush(&self) -> StorageResult<()>;
}

/// A handle to the engine, shared between tasks.
pub type EngineRef = Arc<dyn Engine>;

/// The options of the node's write-ahead log: `preallocate_bytes` and `segment_bytes` (the
/// node's `wal_preallocate_bytes` and `wal_segment_bytes`), default sizes otherwise, and
/// fail-stop on a failed write or sync ([`fail_stop::wal_failed`]) — or, under the negative
/// control [`fail_stop::ignore_storage_errors`], failed writes and syncs treated as success.
pub fn wal_options(preallocate_bytes: u64, segment_bytes: u64) -> ringkv_wal::WalOptions {
    ringkv_wal::WalOptions {
        preallocate_bytes,
        segment_bytes,
        on_failure: Some(fail_stop::wal_failed),
        unsafe_ignore_failures: fail_stop::ignoring_storage_errors(),
        ..ringkv_wal::WalOptions::default()
    }
}

/// Opens the default engine (sled) in `dir`.
pub fn open(dir: &Path) -> StorageResult<EngineRef> {
    Ok(Arc::new(SledEngine::open(dir)?))
}

/// Opens (or reopens) the engine in `dir` for a test. sled's IO threads may hold the
/// directory lock briefly after the last handle of a previous open is dropped: waits
/// (bounded) for it to be released.
#[cfg(test)]
pub(crate) fn open_for_test(dir: &Path) -> EngineRef {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match open(dir) {
            Ok(engine) => return engine,
            Err(_) if std::time::Instant::now() < deadline => std::thread::yield_now(),
            Err(err) => panic!("cannot reopen the engine: {err}"),
        }
    }
}

/// Atomic group of inserts and removes on one tree.
#[derive(Debug, Default)]
pub struct Batch {
    pub(crate) ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    pub fn insert(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), Some(value.into())));
    }

    pub fn remove(&mut self, key: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), None));
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Bounds covering exactly the keys starting with `prefix` (see [`prefix_end`]).
pub fn prefix_bounds(prefix: &[u8]) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let end = match prefix_end(prefix) {
        Some(end) => Bound::Excluded(end),
        None => Bound::Unbounded,
    };
    (Bound::Included(prefix.to_vec()), end)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Batches apply atomically, ranges are ordered, flush succeeds, trees reopen with data.
    #[test]
    fn sled_engine_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let engine = open(dir.path()).expect("open");
            let tree = engine.open_tree("t").expect("tree");
            let mut batch = Batch::default();
            batch.insert(b"b".to_vec(), b"2".to_vec());
            batch.insert(b"a".to_vec(), b"1".to_vec());
            batch.insert(b"c".to_vec(), b"3".to_vec());
            batch.remove(b"c".to_vec());
            tree.apply_batch(batch).expect("batch");
            engine.flush().expect("flush");
        }
        let engine = open_for_test(dir.path());
        let tree = engine.open_tree("t").expect("tree");
        let pairs: Vec<Pair> = tree
            .range(Bound::Unbounded, Bound::Unbounded)
            .collect::<Result<_, _>>()
            .expect("range");
        assert_eq!(
            pairs,
            vec![(b"a".to_vec(), b"1".to_vec()), (b"b".to_vec(), b"2".to_vec())]
        );
        let last = tree.last_in(Bound::Unbounded, Bound::Unbounded).expect("last");
        assert_eq!(last, Some((b"b".to_vec(), b"2".to_vec())));
        let reversed: Vec<Pair> = tree
            .range_rev(Bound::Unbounded, Bound::Unbounded)
            .collect::<Result<_, _>>()
            .expect("reverse range");
        assert_eq!(
            reversed,
            vec![(b"b".to_vec(), b"2".to_vec()), (b"a".to_vec(), b"1".to_vec())]
        );
        assert!(engine.tree_names().expect("names").contains(&"t".to_string()));
    }

    /// A reverse range honours both bounds and yields keys in descending order.
    #[test]
    fn sled_reverse_range_bounds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = open(dir.path()).expect("open");
        let tree = engine.open_tree("t").expect("tree");
        for key in [b"a", b"b", b"c", b"d", b"e"] {
            tree.insert(key, b"v").expect("insert");
        }
        let keys = |start: Bound<Vec<u8>>, end: Bound<Vec<u8>>| -> Vec<Vec<u8>> {
            tree.range_rev(start, end)
                .map(|pair| pair.map(|(key, _)| key))
                .collect::<Result<_, _>>()
                .expect("reverse range")
        };
        assert_eq!(
            keys(Bound::Included(b"b".to_vec()), Bound::Excluded(b"e".to_vec())),
            vec![b"d".to_vec(), b"c".to_vec(), b"b".to_vec()]
        );
        assert_eq!(
            keys(Bound::Excluded(b"b".to_vec()), Bound::Included(b"e".to_vec())),
            vec![b"e".to_vec(), b"d".to_vec(), b"c".to_vec()]
        );
        assert!(keys(Bound::Included(b"c".to_vec()), Bound::Excluded(b"c".to_vec())).is_empty());
        assert!(keys(Bound::Included(b"d".to_vec()), Bound::Excluded(b"b".to_vec())).is_empty());
    }

    /// The bounds of a prefix hold its keys only; an all-`0xff` prefix has no upper bound.
    #[test]
    fn prefix_bounds_cases() {
        assert_eq!(
            prefix_bounds(b"d"),
            (Bound::Included(b"d".to_vec()), Bound::Excluded(b"e".to_vec()))
        );
        assert_eq!(
            prefix_bounds(&[0xff]),
            (Bound::Included(vec![0xff]), Bound::Unbounded)
        );
    }
}
