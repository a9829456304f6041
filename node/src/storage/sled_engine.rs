//! The sled implementation of the storage seam.

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use super::{Batch, Engine, Pair, StorageError, StorageResult, Tree, TreeRef};

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
}

impl SledEngine {
    pub fn open(dir: &Path) -> StorageResult<SledEngine> {
        let db = sled::Config::new()
            .path(dir)
            // Durability comes from explicit flushes (group commit), not a timer.
            .flush_every_ms(None)
            .cache_capacity(256 * 1024 * 1024)
            .open()?;
        Ok(SledEngine { db })
    }
}

impl Engine for SledEngine {
    fn open_tree(&self, name: &str) -> StorageResult<TreeRef> {
        let tree = self.db.open_tree(name)?;
        Ok(Arc::new(SledTree {
            name: name.to_string(),
            tree,
        }))
    }

    fn drop_tree(&self, name: &str) -> StorageResult<()> {
        self.db.drop_tree(name)?;
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

    fn flush(&self) -> StorageResult<()> {
        self.db.flush()?;
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
        self.tree.insert(key, value)?;
        Ok(())
    }

    fn remove(&self, key: &[u8]) -> StorageResult<()> {
        self.tree.remove(key)?;
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
        self.tree.apply_batch(sled_batch)?;
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
        self.tree.clear()?;
        Ok(())
    }
}
