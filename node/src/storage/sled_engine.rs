//! The sled implementation of the storage seam.
//!
//! Durability: sled 0.34's `Db::flush` ends in `sync_file_range`, which flushes neither the
//! device's write cache nor file metadata, and it never syncs blob files (large values) or the
//! directory. [`Engine::flush`] therefore follows sled's flush with real syncs of its own,
//! in an order that never makes a reference durable before what it refers to: new blob files
//! and the blob directory first, then sled's other files (`conf`, `db`, snapshots), then the
//! database directory. The disk-fault nemesis (`ringkv-faultfs`) shows the difference: with
//! `flush` alone a power cut lost every acknowledged write.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::File;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use super::{Batch, Engine, Pair, StorageError, StorageResult, Tree, TreeRef};

/// The result of a write to sled: an IO error (a full or failing disk) stops the node
/// ([`super::fail_stop`]) — sled keeps the first IO error and fails every later write with it,
/// and what reached its files is unknown. Other errors are returned (and so is an IO error
/// under the negative control, which does not stop the node).
fn written<T>(result: sled::Result<T>, what: &str) -> StorageResult<T> {
    match result {
        Err(sled::Error::Io(err)) => {
            super::fail_stop::storage_failed(what, &err);
            Err(StorageError::Io(err))
        }
        other => Ok(other?),
    }
}

impl From<sled::Error> for StorageError {
    fn from(err: sled::Error) -> Self {
        match err {
            sled::Error::Io(io) => StorageError::Io(io),
            other => StorageError::Engine(other.to_string()),
        }
    }
}

/// One sled `Db` per node.
pub struct SledEngine {
    db: sled::Db,
    dir: PathBuf,
    synced: Mutex<SyncedFiles>,
}

/// The files of sled's directory a flush syncs: open handles of its top-level files, and the
/// blob files already made durable (blobs are written once, never changed).
#[derive(Default)]
struct SyncedFiles {
    files: HashMap<OsString, File>,
    blobs: HashSet<OsString>,
}

impl SyncedFiles {
    /// Syncs every file sled keeps in `dir` (see the module docs for the order).
    fn sync(&mut self, dir: &Path) -> std::io::Result<()> {
        let blob_dir = dir.join("blobs");
        let mut new_blobs = false;
        if blob_dir.is_dir() {
            let mut present = HashSet::new();
            for entry in std::fs::read_dir(&blob_dir)? {
                let entry = entry?;
                let name = entry.file_name();
                if !self.blobs.contains(&name) {
                    match File::open(entry.path()) {
                        Ok(blob) => blob.sync_data()?,
                        // Collected by sled meanwhile.
                        Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(err) => return Err(err),
                    }
                    new_blobs = true;
                }
                present.insert(name);
            }
            self.blobs.retain(|name| present.contains(name));
            self.blobs.extend(present);
            if new_blobs {
                File::open(&blob_dir)?.sync_all()?;
            }
        }
        let mut present = HashSet::new();
        let mut entries_changed = false;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                continue;
            }
            let name = entry.file_name();
            if !self.files.contains_key(&name) {
                match File::open(entry.path()) {
                    Ok(file) => {
                        self.files.insert(name.clone(), file);
                        entries_changed = true;
                    }
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(err) => return Err(err),
                }
            }
            present.insert(name);
        }
        // Files sled replaced or removed (old snapshots) are forgotten.
        let before = self.files.len();
        self.files.retain(|name, _| present.contains(name));
        entries_changed |= self.files.len() != before;
        for file in self.files.values() {
            file.sync_data()?;
        }
        // New files' directory entries (and renames of snapshots) become durable.
        if entries_changed {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

impl SledEngine {
    pub fn open(dir: &Path) -> StorageResult<SledEngine> {
        let db = sled::Config::new()
            .path(dir)
            // Durability comes from explicit flushes (group commit), not a timer.
            .flush_every_ms(None)
            .cache_capacity(256 * 1024 * 1024)
            .open()?;
        let engine = SledEngine {
            db,
            dir: dir.to_path_buf(),
            synced: Mutex::default(),
        };
        // A new database's files and the directory itself become durable before anything
        // is acknowledged.
        engine.flush()?;
        if let Some(parent) = dir.parent() {
            File::open(parent)?.sync_all()?;
        }
        Ok(engine)
    }
}

impl Engine for SledEngine {
    fn open_tree(&self, name: &str) -> StorageResult<TreeRef> {
        let tree = written(
            self.db.open_tree(name),
            "opening a tree of the state machine (sled)",
        )?;
        Ok(Arc::new(SledTree {
            name: name.to_string(),
            tree,
        }))
    }

    fn drop_tree(&self, name: &str) -> StorageResult<()> {
        written(
            self.db.drop_tree(name),
            "dropping a tree of the state machine (sled)",
        )?;
        Ok(())
    }

    fn tree_names(&self) -> StorageResult<Vec<String>> {
        Ok(self
            .db
            .tree_names()
            .into_iter()
            .map(|name| String::from_utf8_lossy(&name).into_owned())
            .collect())
    }

    /// A failure here stops the process ([`super::fail_stop`]): a flush is a durability
    /// point, and after a failed sync nothing says what the files still hold. (Under the
    /// negative control the failure is logged and the flush reports success.)
    fn flush(&self) -> StorageResult<()> {
        if let Err(err) = self.db.flush() {
            super::fail_stop::storage_failed("a flush of the state machine (sled)", &err);
        }
        let mut synced = self.synced.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(err) = synced.sync(&self.dir) {
            super::fail_stop::storage_failed("an fdatasync of the state machine's files", &err);
        }
        Ok(())
    }
}

struct SledTree {
    name: String,
    tree: sled::Tree,
}

fn to_pair(item: sled::Result<(sled::IVec, sled::IVec)>) -> StorageResult<Pair> {
    let (key, value) = item?;
    Ok((key.to_vec(), value.to_vec()))
}

impl Tree for SledTree {
    fn name(&self) -> &str {
        &self.name
    }

    fn get(&self, key: &[u8]) -> StorageResult<Option<Vec<u8>>> {
        Ok(self.tree.get(key)?.map(|value| value.to_vec()))
    }

    fn insert(&self, key: &[u8], value: &[u8]) -> StorageResult<()> {
        written(
            self.tree.insert(key, value),
            "a write to the state machine (sled)",
        )?;
        Ok(())
    }

    fn remove(&self, key: &[u8]) -> StorageResult<()> {
        written(self.tree.remove(key), "a write to the state machine (sled)")?;
        Ok(())
    }

    fn apply_batch(&self, batch: Batch) -> StorageResult<()> {
        let mut sled_batch = sled::Batch::default();
        for (key, value) in batch.ops {
            match value {
                Some(value) => sled_batch.insert(key, value),
                None => sled_batch.remove(key),
            }
        }
        written(
            self.tree.apply_batch(sled_batch),
            "a write to the state machine (sled)",
        )?;
        Ok(())
    }

    fn range(
        &self,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
    ) -> Box<dyn Iterator<Item = StorageResult<Pair>> + Send + '_> {
        Box::new(self.tree.range::<Vec<u8>, _>((start, end)).map(to_pair))
    }

    fn range_rev(
        &self,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
    ) -> Box<dyn Iterator<Item = StorageResult<Pair>> + Send + '_> {
        Box::new(self.tree.range::<Vec<u8>, _>((start, end)).rev().map(to_pair))
    }

    fn last_in(&self, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> StorageResult<Option<Pair>> {
        self.tree
            .range::<Vec<u8>, _>((start, end))
            .next_back()
            .map(to_pair)
            .transpose()
    }

    fn clear(&self) -> StorageResult<()> {
        written(self.tree.clear(), "clearing a tree of the state machine (sled)")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;

    use super::*;

    /// Set in the child process of [`a_failed_write_stops_the_node`]: where it writes.
    const CHILD_DIR: &str = "RINGKV_SLED_FAIL_STOP_CHILD_DIR";
    /// Set in the child process too: it ignores storage errors (the negative control).
    const CHILD_IGNORES: &str = "RINGKV_SLED_FAIL_STOP_CHILD_IGNORES";
    /// The child's file size limit (`prlimit --fsize`).
    const FILE_LIMIT_BYTES: u64 = 4 << 20;
    /// `SIGXFSZ` on Linux (x86-64 and arm64).
    const SIGXFSZ: i32 = 25;

    /// A write sled cannot make stops the process with exit code 74 and says why, instead of
    /// returning an error that stops one Raft group. The child process writes past its file
    /// size limit (`EFBIG`), which fails a write the way a full disk (`ENOSPC`) does.
    #[test]
    fn a_failed_write_stops_the_node() {
        if let Ok(dir) = std::env::var(CHILD_DIR) {
            if std::env::var_os(CHILD_IGNORES).is_some() {
                crate::storage::fail_stop::ignore_storage_errors();
            }
            write_until_it_fails(Path::new(&dir));
        }
        let output = run_child(false);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(super::super::fail_stop::EXIT_STORAGE_FAILED),
            "the child ended with {}: {stderr}",
            output.status
        );
        assert!(
            stderr.contains("a write to the state machine (sled) failed"),
            "{stderr}"
        );
    }

    /// Under the negative control (`--unsafe-ignore-sync-errors`) the same write returns its
    /// error and the process runs on.
    #[test]
    fn a_failed_write_under_the_negative_control_returns_instead() {
        let output = run_child(true);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("a failed write returned instead of stopping the node"),
            "{stderr}"
        );
    }

    /// Runs [`a_failed_write_stops_the_node`]'s child under a file size limit, ignoring
    /// storage errors if `ignore` says so.
    fn run_child(ignore: bool) -> std::process::Output {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new("prlimit");
        child
            .arg(format!("--fsize={FILE_LIMIT_BYTES}"))
            .arg(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "storage::sled_engine::tests::a_failed_write_stops_the_node",
            ])
            .args(["--test-threads=1", "--nocapture"])
            .env(CHILD_DIR, dir.path());
        if ignore {
            child.env(CHILD_IGNORES, "1");
        }
        child.output().expect("run the child under prlimit")
    }

    /// The child: inserts far more than the file size limit allows; never returns.
    fn write_until_it_fails(dir: &Path) -> ! {
        // The default action of SIGXFSZ kills the process; with a handler installed, a write
        // past the limit fails with EFBIG instead.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let _xfsz = runtime
            .block_on(async {
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(SIGXFSZ))
            })
            .expect("SIGXFSZ handler");
        let engine = SledEngine::open(dir).expect("open");
        let tree = engine.open_tree("t").expect("tree");
        let value = vec![7u8; 1024];
        for key in 0..(64u32 << 10) {
            if let Err(err) = tree.insert(&key.to_be_bytes(), &value) {
                eprintln!("a failed write returned instead of stopping the node: {err}");
                std::process::exit(1);
            }
        }
        if let Err(err) = engine.flush() {
            eprintln!("a failed flush returned instead of stopping the node: {err}");
            std::process::exit(1);
        }
        eprintln!("64 MiB written past a {FILE_LIMIT_BYTES}-byte file size limit");
        std::process::exit(0)
    }
}
