//! Snapshot files: the format of a state-machine dump and where the files live.
//! Knows records only as key/value pairs; what they mean is the state machine's layout.
//!
//! A snapshot of a group is two files in `<data_dir>/snapshots/<group>/`:
//! `<id>.data`, a sequence of records `[u32 key len][key][u32 value len][value]` (big-endian
//! lengths) holding every pair of the state-machine tree, and `current.meta`, the postcard-
//! encoded [`SnapshotMeta`] naming the data file. Both are written aside and renamed into
//! place after an fsync, so a crash leaves either the old snapshot or the new one.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::progress::SnapshotProgress;
use crate::raft::types::SnapshotMeta;
use crate::raft::{decode, encode};
use crate::storage::{Pair, StorageError};

const META_FILE: &str = "current.meta";

/// The snapshot directory of one group.
#[derive(Debug, Clone)]
pub struct SnapshotDir {
    dir: PathBuf,
    /// Serialises publishing with opening the current snapshot.
    files: std::sync::Arc<std::sync::Mutex<()>>,
    /// Where builds and installs of this group's snapshots are counted (the node's).
    progress: std::sync::Arc<SnapshotProgress>,
}

impl SnapshotDir {
    pub fn open(dir: PathBuf) -> Result<SnapshotDir, StorageError> {
        fs::create_dir_all(&dir)?;
        Ok(SnapshotDir {
            dir,
            files: Default::default(),
            progress: Default::default(),
        })
    }

    /// The same directory, its builds and installs counted in `progress`.
    pub fn counted_by(self, progress: std::sync::Arc<SnapshotProgress>) -> SnapshotDir {
        SnapshotDir { progress, ..self }
    }

    /// Where this group's builds and installs are counted.
    pub fn progress(&self) -> &SnapshotProgress {
        &self.progress
    }

    pub fn data_path(&self, snapshot_id: &str) -> PathBuf {
        self.dir.join(format!("{snapshot_id}.data"))
    }

    /// A fresh path for a file being written (received or built).
    pub fn temp_path(&self) -> PathBuf {
        self.dir
            .join(format!("incoming-{:016x}.tmp", rand::random::<u64>()))
    }

    /// The current snapshot's metadata, if any.
    pub fn current(&self) -> Result<Option<SnapshotMeta>, StorageError> {
        let path = self.dir.join(META_FILE);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(decode(&path.display().to_string(), &bytes)?)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    /// The current snapshot's metadata and its opened data file, if any.
    pub fn open_current(&self) -> Result<Option<(SnapshotMeta, File)>, StorageError> {
        let _files = self.files.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(meta) = self.current()? else {
            return Ok(None);
        };
        let file = File::open(self.data_path(&meta.snapshot_id))?;
        Ok(Some((meta, file)))
    }

    /// Makes `data_file` (already fsynced) the current snapshot described by `meta`, then
    /// removes older files.
    pub fn publish(&self, meta: &SnapshotMeta, data_file: &Path) -> Result<(), StorageError> {
        let _files = self.files.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let data_path = self.data_path(&meta.snapshot_id);
        fs::rename(data_file, &data_path)?;
        let meta_tmp = self.temp_path();
        {
            let mut file = File::create(&meta_tmp)?;
            file.write_all(&encode(meta)?)?;
            file.sync_all()?;
        }
        fs::rename(&meta_tmp, self.dir.join(META_FILE))?;
        File::open(&self.dir)?.sync_all()?;
        self.remove_stale(&data_path)
    }

    /// Removes every data and temp file except `keep`.
    pub fn remove_stale(&self, keep: &Path) -> Result<(), StorageError> {
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let is_data = path.extension().is_some_and(|ext| ext == "data" || ext == "tmp");
            if is_data && path != keep {
                let _ = fs::remove_file(&path);
            }
        }
        Ok(())
    }
}

/// Streams records into a snapshot data file.
pub struct SnapshotWriter {
    out: BufWriter<File>,
}

impl SnapshotWriter {
    pub fn create(path: &Path) -> Result<SnapshotWriter, StorageError> {
        Ok(SnapshotWriter {
            out: BufWriter::with_capacity(1 << 20, File::create(path)?),
        })
    }

    pub fn write(&mut self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        let key_len = u32::try_from(key.len()).map_err(|_| io::Error::other("key too large"))?;
        let value_len = u32::try_from(value.len()).map_err(|_| io::Error::other("value too large"))?;
        self.out.write_all(&key_len.to_be_bytes())?;
        self.out.write_all(key)?;
        self.out.write_all(&value_len.to_be_bytes())?;
        self.out.write_all(value)?;
        Ok(())
    }

    /// Flushes and fsyncs the file.
    pub fn finish(self) -> Result<(), StorageError> {
        let file = self.out.into_inner().map_err(|err| err.into_error())?;
        file.sync_all()?;
        Ok(())
    }
}

/// Largest record field accepted when reading (guards against corrupt lengths).
const MAX_FIELD_BYTES: usize = 64 << 20;

/// Reads the records of a snapshot data file.
pub struct SnapshotReader<R: Read> {
    input: BufReader<R>,
}

impl<R: Read> SnapshotReader<R> {
    pub fn new(input: R) -> SnapshotReader<R> {
        SnapshotReader {
            input: BufReader::with_capacity(1 << 20, input),
        }
    }

    fn read_len(&mut self, at_record_start: bool) -> Result<Option<usize>, StorageError> {
        let mut len = [0u8; 4];
        let mut filled = 0;
        while filled < 4 {
            let read = self.input.read(&mut len[filled..])?;
            if read == 0 {
                if filled == 0 && at_record_start {
                    return Ok(None);
                }
                return Err(corrupt("truncated record length"));
            }
            filled += read;
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_FIELD_BYTES {
            return Err(corrupt("record field too large"));
        }
        Ok(Some(len))
    }

    /// The next `(key, value)` record, or None at the end.
    pub fn next_record(&mut self) -> Result<Option<Pair>, StorageError> {
        let Some(key_len) = self.read_len(true)? else {
            return Ok(None);
        };
        let mut key = vec![0u8; key_len];
        self.input
            .read_exact(&mut key)
            .map_err(|_| corrupt("truncated key"))?;
        let value_len = self.read_len(false)?.ok_or_else(|| corrupt("missing value"))?;
        let mut value = vec![0u8; value_len];
        self.input
            .read_exact(&mut value)
            .map_err(|_| corrupt("truncated value"))?;
        Ok(Some((key, value)))
    }
}

fn corrupt(detail: &str) -> StorageError {
    StorageError::Corrupt {
        tree: "snapshot".to_string(),
        detail: detail.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records written are read back in order; a truncated file is reported as corrupt.
    #[test]
    fn snapshot_records_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.data");
        let mut writer = SnapshotWriter::create(&path).expect("create");
        writer.write(b"k1", b"v1").expect("write");
        writer.write(b"", &[0u8; 300]).expect("write");
        writer.finish().expect("finish");
        let bytes = fs::read(&path).expect("read");
        let mut reader = SnapshotReader::new(&bytes[..]);
        assert_eq!(
            reader.next_record().expect("r1"),
            Some((b"k1".to_vec(), b"v1".to_vec()))
        );
        assert_eq!(
            reader.next_record().expect("r2"),
            Some((Vec::new(), vec![0u8; 300]))
        );
        assert_eq!(reader.next_record().expect("end"), None);
        let mut truncated = SnapshotReader::new(&bytes[..bytes.len() - 1]);
        assert!(truncated.next_record().is_ok());
        assert!(truncated.next_record().is_err());
    }
}
