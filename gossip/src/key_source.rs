//! The gossip keys a transport uses now: fixed, or following the key file, so a rotation
//! (`key.rs`'s three steps) needs no restarts.
//!
//! [`KeySource::from_file`] remembers the file's modification time; at most once per
//! [`KEY_RELOAD_CHECK_INTERVAL`] a datagram sent or received first looks at it, and a changed
//! file is read and parsed again: if it is good, the next datagrams are signed and checked
//! with its keys; if not (half written, malformed), a warning says so and the previous keys
//! stay, until the file changes again. So each step of a rotation is: edit the file on every
//! process, and within about a second each uses it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use tracing::{info, warn};

use crate::key::{GossipKeyError, GossipKeys};

/// How often the key file's modification time is looked at, at most.
pub const KEY_RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Where a transport's keys come from.
#[derive(Debug)]
pub struct KeySource {
    current: RwLock<Arc<GossipKeys>>,
    /// The key file and what was last seen of it (None: fixed keys).
    file: Option<WatchedFile>,
}

#[derive(Debug)]
struct WatchedFile {
    path: PathBuf,
    /// When to look next, and the modification time last read.
    check: Mutex<(Instant, Option<SystemTime>)>,
}

impl KeySource {
    /// Always `keys`.
    pub fn fixed(keys: GossipKeys) -> KeySource {
        KeySource {
            current: RwLock::new(Arc::new(keys)),
            file: None,
        }
    }

    /// The keys of the file at `path`, re-read when it changes.
    pub fn from_file(path: PathBuf) -> Result<KeySource, GossipKeyError> {
        let stamp = modified(&path);
        let keys = GossipKeys::load(&path)?;
        Ok(KeySource::with_stamp(keys, path, stamp))
    }

    /// `keys`, read from the file at `path` a moment ago, then the file's keys whenever it
    /// changes (a change between that read and this call is noticed at the next change).
    pub fn following(keys: GossipKeys, path: PathBuf) -> KeySource {
        let stamp = modified(&path);
        KeySource::with_stamp(keys, path, stamp)
    }

    fn with_stamp(keys: GossipKeys, path: PathBuf, stamp: Option<SystemTime>) -> KeySource {
        KeySource {
            current: RwLock::new(Arc::new(keys)),
            file: Some(WatchedFile {
                path,
                check: Mutex::new((Instant::now() + KEY_RELOAD_CHECK_INTERVAL, stamp)),
            }),
        }
    }

    /// The keys to sign and check with now (the file re-read first if it changed).
    pub fn keys(&self) -> Arc<GossipKeys> {
        if let Some(file) = &self.file {
            self.reload_if_changed(file);
        }
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn reload_if_changed(&self, file: &WatchedFile) {
        let stamp = {
            let mut check = file.check.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            if now < check.0 {
                return;
            }
            check.0 = now + KEY_RELOAD_CHECK_INTERVAL;
            let stamp = modified(&file.path);
            if stamp == check.1 {
                return;
            }
            // Remembered whether or not the file is good: a bad file is not read again
            // until it changes.
            check.1 = stamp;
            stamp
        };
        match GossipKeys::load(&file.path) {
            Ok(keys) => {
                info!(
                    path = %file.path.display(),
                    key_id = %keys.current().id_hex(),
                    also_accepted = ?keys.also_accepted().map(|key| key.id_hex()),
                    modified = ?stamp,
                    "gossip key file changed; signing and checking with its keys"
                );
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
            }
            Err(err) => warn!(%err, "gossip key file changed but is refused; keeping the previous keys"),
        }
    }
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path)
        .and_then(|metadata| metadata.modified())
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::GossipKey;

    /// A changed file is used within a few checks; a malformed one is refused and the keys
    /// before it stay.
    #[tokio::test]
    async fn the_key_file_is_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gossip.key");
        let first = GossipKeys::generate().expect("keys");
        first.write(&path, false).expect("write");
        let source = KeySource::from_file(path.clone()).expect("load");
        assert_eq!(source.keys().current().id(), first.current().id());

        let second =
            GossipKeys::with_also_accepted(GossipKey::generate().expect("key"), first.current().clone());
        second.write(&path, true).expect("rewrite");
        let deadline = Instant::now() + Duration::from_secs(30);
        while source.keys().current().id() != second.current().id() {
            assert!(Instant::now() < deadline, "the new key file was never used");
            // Looked at once per interval: poll a few times per interval.
            tokio::time::sleep(KEY_RELOAD_CHECK_INTERVAL / 4).await;
        }
        assert!(source.keys().also_accepted().is_some());

        std::fs::write(&path, "not a key\n").expect("break the file");
        let broken = modified(&path);
        let looked_at = || {
            let file = source.file.as_ref().expect("a file");
            file.check.lock().unwrap_or_else(PoisonError::into_inner).1 == broken
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !looked_at() {
            assert!(Instant::now() < deadline, "the broken file was never looked at");
            assert_eq!(
                source.keys().current().id(),
                second.current().id(),
                "the good keys stay"
            );
            tokio::time::sleep(KEY_RELOAD_CHECK_INTERVAL / 4).await;
        }
        assert_eq!(
            source.keys().current().id(),
            second.current().id(),
            "the good keys stay"
        );
    }
}
