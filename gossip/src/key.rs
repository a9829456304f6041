//! The cluster's gossip key: 32 random bytes shared by every node and router of a cluster,
//! with which the `auth` module authenticates each gossip datagram (HMAC-SHA256).
//!
//! # The key file
//!
//! `gossip.key` (written by `kvctl cert create-ca` beside the CA, mode 0600, never overwritten
//! unless asked) is text: one or two keys, 64 hex digits each, one per line; blank lines and
//! lines starting with `#` are ignored. The first key is the *current* one: this process signs
//! with it and accepts it. A second key is *also accepted* (the previous key, or the next one
//! during a rotation), never used to sign.
//!
//! # Rotation, without a partition at any step, without restarts
//!
//! Nodes and routers follow their key file (`key_source`): each step takes effect within
//! about a second of the file's change. Finish a step on every process before the next.
//!
//! 1. Add the new key as the second line on every process (they still sign with the old key,
//!    and now also accept the new one).
//! 2. Swap the lines (new first) on every process: they sign with the new key; those not
//!    changed yet accept it already, and are still accepted.
//! 3. Remove the old key's line.
//!
//! Each key has a [`GossipKey::id`] (4 bytes derived from the key by SHA-256, revealing nothing
//! of it) that travels with each datagram, so the receiver checks the tag with that key only.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use ring::digest;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// Length of a gossip key in bytes.
pub const GOSSIP_KEY_LEN: usize = 32;

/// Length of a key id in bytes.
pub const GOSSIP_KEY_ID_LEN: usize = 4;

/// The usual name of the key file, beside the CA's files.
pub const GOSSIP_KEY_FILE_NAME: &str = "gossip.key";

/// Mode of the key file: the owner reads and writes, nobody else.
pub const GOSSIP_KEY_FILE_MODE: u32 = 0o600;

/// How many keys a key file may hold (the current one and one more accepted).
pub const MAX_KEYS_PER_FILE: usize = 2;

/// The domain separation prefix of a key id, so the id is not an HMAC or hash the key is used
/// for elsewhere.
const KEY_ID_CONTEXT: &[u8] = b"ringkv gossip key id\0";

/// Errors of reading, parsing and writing gossip key files.
#[derive(Debug, thiserror::Error)]
pub enum GossipKeyError {
    /// The file could not be read.
    #[error("cannot read the gossip key file {path}: {io_error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        io_error: std::io::Error,
    },
    /// The file is not a gossip key file (see the [module docs](self)).
    #[error("{path} is not a gossip key file: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the line.
        reason: String,
    },
    /// The file exists and overwriting it was not asked for.
    #[error("{path} already exists")]
    AlreadyExists {
        /// The file.
        path: PathBuf,
    },
    /// The file (or its directory) could not be written.
    #[error("cannot write the gossip key file {path}: {io_error}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        io_error: std::io::Error,
    },
    /// The system's random number generator failed.
    #[error("the system random number generator failed")]
    Random,
}

/// One gossip key: its secret bytes, its id and the HMAC-SHA256 key made from it.
#[derive(Clone)]
pub struct GossipKey {
    secret: [u8; GOSSIP_KEY_LEN],
    id: [u8; GOSSIP_KEY_ID_LEN],
    hmac: hmac::Key,
}

impl GossipKey {
    /// The key with these bytes.
    pub fn from_bytes(secret: [u8; GOSSIP_KEY_LEN]) -> GossipKey {
        let mut context = digest::Context::new(&digest::SHA256);
        context.update(KEY_ID_CONTEXT);
        context.update(&secret);
        let hash = context.finish();
        let mut id = [0u8; GOSSIP_KEY_ID_LEN];
        id.copy_from_slice(&hash.as_ref()[..GOSSIP_KEY_ID_LEN]);
        GossipKey {
            secret,
            id,
            hmac: hmac::Key::new(hmac::HMAC_SHA256, &secret),
        }
    }

    /// A fresh key from the system's secure random number generator.
    pub fn generate() -> Result<GossipKey, GossipKeyError> {
        let mut secret = [0u8; GOSSIP_KEY_LEN];
        SystemRandom::new()
            .fill(&mut secret)
            .map_err(|_| GossipKeyError::Random)?;
        Ok(GossipKey::from_bytes(secret))
    }

    /// The key's id, sent with every datagram it signs.
    pub fn id(&self) -> [u8; GOSSIP_KEY_ID_LEN] {
        self.id
    }

    /// The key's id as 8 hex digits (for logs: it reveals nothing of the key).
    pub fn id_hex(&self) -> String {
        hex::encode(self.id)
    }

    pub(crate) fn hmac(&self) -> &hmac::Key {
        &self.hmac
    }
}

impl fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret.
        f.debug_struct("GossipKey")
            .field("id", &self.id_hex())
            .finish_non_exhaustive()
    }
}

/// The keys a process uses: it signs with [`GossipKeys::current`] and accepts it and
/// [`GossipKeys::also_accepted`].
#[derive(Clone, Debug)]
pub struct GossipKeys {
    current: GossipKey,
    also_accepted: Option<GossipKey>,
}

impl GossipKeys {
    /// Sign and accept `current` only.
    pub fn new(current: GossipKey) -> GossipKeys {
        GossipKeys {
            current,
            also_accepted: None,
        }
    }

    /// Sign with `current`, accept it and `also_accepted` (the previous key, or the next one
    /// during a rotation).
    pub fn with_also_accepted(current: GossipKey, also_accepted: GossipKey) -> GossipKeys {
        GossipKeys {
            current,
            also_accepted: Some(also_accepted),
        }
    }

    /// A fresh current key and nothing else accepted.
    pub fn generate() -> Result<GossipKeys, GossipKeyError> {
        Ok(GossipKeys::new(GossipKey::generate()?))
    }

    /// The key this process signs with.
    pub fn current(&self) -> &GossipKey {
        &self.current
    }

    /// The other key this process accepts, if any.
    pub fn also_accepted(&self) -> Option<&GossipKey> {
        self.also_accepted.as_ref()
    }

    /// The accepted key with this id, if any.
    pub(crate) fn accepted(&self, id: &[u8]) -> Option<&GossipKey> {
        std::iter::once(&self.current)
            .chain(self.also_accepted.as_ref())
            .find(|key| key.id[..] == *id)
    }

    /// Reads and parses a key file (format in the [module docs](self)).
    pub fn load(path: &Path) -> Result<GossipKeys, GossipKeyError> {
        let text = fs::read_to_string(path).map_err(|io_error| GossipKeyError::Read {
            path: path.to_path_buf(),
            io_error,
        })?;
        GossipKeys::parse(&text).map_err(|reason| GossipKeyError::Format {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Parses the text of a key file; the error says what is wrong, naming the line.
    pub fn parse(text: &str) -> Result<GossipKeys, String> {
        let mut keys = Vec::with_capacity(MAX_KEYS_PER_FILE);
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line_number = index + 1;
            if keys.len() == MAX_KEYS_PER_FILE {
                return Err(format!(
                    "line {line_number}: more than {MAX_KEYS_PER_FILE} keys (the current one and one \
                     more accepted)"
                ));
            }
            let mut secret = [0u8; GOSSIP_KEY_LEN];
            hex::decode_to_slice(line, &mut secret).map_err(|_| {
                format!(
                    "line {line_number}: expected a key of {} hex digits, got {} characters",
                    GOSSIP_KEY_LEN * 2,
                    line.chars().count()
                )
            })?;
            keys.push(GossipKey::from_bytes(secret));
        }
        let mut keys = keys.into_iter();
        let Some(current) = keys.next() else {
            return Err("no key in it".to_string());
        };
        Ok(GossipKeys {
            current,
            also_accepted: keys.next(),
        })
    }

    /// The text of a key file holding these keys.
    pub fn to_file_text(&self) -> String {
        let mut text = String::from(
            "# ringkv cluster gossip key: every node and router of the cluster needs it (keep it \
             secret).\n# The first key signs and is accepted; a second one is accepted only \
             (rotation).\n",
        );
        for key in std::iter::once(&self.current).chain(self.also_accepted.as_ref()) {
            text.push_str(&hex::encode(key.secret));
            text.push('\n');
        }
        text
    }

    /// Writes these keys to `path` with mode 0600 (creating its directory). Refuses when the
    /// file exists unless `overwrite`, and writes nothing then. Written to a temporary name and
    /// renamed, so a crash leaves the old file or the new one.
    pub fn write(&self, path: &Path, overwrite: bool) -> Result<(), GossipKeyError> {
        if !overwrite && path.symlink_metadata().is_ok() {
            return Err(GossipKeyError::AlreadyExists {
                path: path.to_path_buf(),
            });
        }
        let write_error = |io_error| GossipKeyError::Write {
            path: path.to_path_buf(),
            io_error,
        };
        if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(write_error)?;
        }
        let mut temporary_name = path.as_os_str().to_owned();
        temporary_name.push(".tmp");
        let temporary = PathBuf::from(temporary_name);
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, GOSSIP_KEY_FILE_MODE);
        let mut file = options.open(&temporary).map_err(write_error)?;
        // The mode given to open applies only to a new file (and is masked by the umask).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(fs::Permissions::from_mode(GOSSIP_KEY_FILE_MODE))
                .map_err(write_error)?;
        }
        file.write_all(self.to_file_text().as_bytes())
            .map_err(write_error)?;
        file.sync_all().map_err(write_error)?;
        drop(file);
        fs::rename(&temporary, path).map_err(write_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key file round-trips, with one key or two, and the ids tell the keys apart.
    #[test]
    fn key_file_round_trips() {
        let first = GossipKey::from_bytes([1; GOSSIP_KEY_LEN]);
        let second = GossipKey::from_bytes([2; GOSSIP_KEY_LEN]);
        assert_ne!(first.id(), second.id());
        let one = GossipKeys::new(first.clone());
        let parsed = GossipKeys::parse(&one.to_file_text()).expect("one key parses");
        assert_eq!(parsed.current().id(), first.id());
        assert!(parsed.also_accepted().is_none());
        let two = GossipKeys::with_also_accepted(second.clone(), first.clone());
        let parsed = GossipKeys::parse(&two.to_file_text()).expect("two keys parse");
        assert_eq!(parsed.current().id(), second.id());
        assert_eq!(parsed.also_accepted().map(GossipKey::id), Some(first.id()));
        assert!(parsed.accepted(&first.id()).is_some());
        assert!(parsed.accepted(&[0; GOSSIP_KEY_ID_LEN]).is_none());
    }

    /// Bad key files are refused with the line at fault.
    #[test]
    fn bad_key_files_are_refused() {
        let key = "ab".repeat(GOSSIP_KEY_LEN);
        assert!(GossipKeys::parse("# only a comment\n\n").is_err());
        let short = GossipKeys::parse("abcd\n").expect_err("a short key is refused");
        assert!(short.contains("line 1"), "{short}");
        let not_hex = GossipKeys::parse(&format!("# c\n{}zz\n", &key[2..]))
            .expect_err("a key that is not hex is refused");
        assert!(not_hex.contains("line 2"), "{not_hex}");
        let three = GossipKeys::parse(&format!("{key}\n{key}\n{key}\n")).expect_err("a third key is refused");
        assert!(three.contains("line 3"), "{three}");
    }

    /// The file is written 0600 and not overwritten unless asked.
    #[test]
    fn key_file_is_private_and_not_overwritten() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("certs").join(GOSSIP_KEY_FILE_NAME);
        let keys = GossipKeys::generate().expect("a random key");
        keys.write(&path, false).expect("a new file is written");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).expect("metadata").permissions().mode();
            assert_eq!(mode & 0o777, GOSSIP_KEY_FILE_MODE);
        }
        let loaded = GossipKeys::load(&path).expect("the file loads");
        assert_eq!(loaded.current().id(), keys.current().id());
        let other = GossipKeys::generate().expect("a random key");
        assert!(matches!(
            other.write(&path, false),
            Err(GossipKeyError::AlreadyExists { .. })
        ));
        assert_eq!(
            GossipKeys::load(&path).expect("loads").current().id(),
            keys.current().id()
        );
        other.write(&path, true).expect("overwrite when asked");
        assert_eq!(
            GossipKeys::load(&path).expect("loads").current().id(),
            other.current().id()
        );
    }
}
