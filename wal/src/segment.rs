//! Segment files: naming, the header, and reading a segment's frames back at recovery.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::record::{self, Record, FRAME_HEADER};
use crate::WalError;

/// The first bytes of every segment: the format and its version. The writer cuts a version 2
/// segment to the end of its frames before it starts the next one, so of those only the last
/// may end in preallocated room.
pub(crate) const MAGIC: &[u8; 8] = b"RKVWAL02";
/// Version 1 segments have the same frames, but were left with the room preallocated past
/// their frames when the writer moved on: any of them may end in zeros.
const MAGIC_V1: &[u8; 8] = b"RKVWAL01";
/// Bytes before the first frame.
pub(crate) const HEADER: u64 = MAGIC.len() as u64;

const SUFFIX: &str = ".wal";

/// The path of segment `id` in `dir`.
pub(crate) fn path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}{SUFFIX}"))
}

/// The ids of the segments in `dir`, ascending.
pub(crate) fn list(dir: &Path) -> Result<Vec<u64>, WalError> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(id) = name.strip_suffix(SUFFIX).and_then(|stem| stem.parse().ok()) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Creates segment `id` with its header and makes its directory entry durable.
pub(crate) fn create(dir: &Path, id: u64) -> Result<File, WalError> {
    let file = create_unsynced(dir, id)?;
    file.sync_data()?;
    sync_dir(dir)?;
    Ok(file)
}

/// [`create`] without its syncs: the caller makes the file and its entry durable.
pub(crate) fn create_unsynced(dir: &Path, id: u64) -> Result<File, WalError> {
    let path = path(dir, id);
    let mut file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    file.write_all(MAGIC)?;
    Ok(file)
}

/// Makes the entries of `dir` (created, renamed or removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// A frame read back from a segment: where it starts and its decoded record.
pub(crate) struct Frame<'a> {
    pub offset: u64,
    pub record: Record<'a>,
}

/// How a segment's contents ended.
pub(crate) enum End {
    /// Every byte belongs to a valid frame.
    Clean,
    /// The frames end at `at` and every byte after it is zero: space the writer preallocated
    /// ([`preallocate`]) and had not written yet. Only the last segment may end so, unless it
    /// is a version 1 segment ([`Contents::cut_when_done`]).
    Unwritten { at: u64 },
    /// The bytes from `at` on are not a valid frame and not all zeros: a torn write, or (if
    /// this is not the last segment) corruption.
    Torn { at: u64, reason: &'static str },
}

/// What a segment's bytes hold.
pub(crate) struct Contents<'a> {
    /// Its valid frames, in order.
    pub frames: Vec<Frame<'a>>,
    /// How the bytes after them end.
    pub end: End,
    /// Whether the writer cut the segment to its frames when it moved on to the next one
    /// (version 2): then only the last segment may end in [`End::Unwritten`] room.
    pub cut_when_done: bool,
}

/// The valid frames of a segment's bytes, in order, and how the bytes ended. A missing,
/// short or zeroed header counts as a segment torn at its start.
pub(crate) fn frames(bytes: &[u8]) -> Result<Contents<'_>, WalError> {
    if bytes.len() < MAGIC.len() || all_zero(&bytes[..MAGIC.len()]) {
        return Ok(Contents {
            frames: Vec::new(),
            end: End::Torn {
                at: 0,
                reason: "no header",
            },
            cut_when_done: true,
        });
    }
    let header = &bytes[..MAGIC.len()];
    if header != MAGIC && header != MAGIC_V1 {
        return Err(WalError::Corrupt(
            "segment does not start with the ringkv WAL header".to_string(),
        ));
    }
    let cut_when_done = header == MAGIC;
    let mut frames = Vec::new();
    let mut at = MAGIC.len();
    while at < bytes.len() {
        let torn = |reason| {
            if all_zero(&bytes[at..]) {
                End::Unwritten { at: at as u64 }
            } else {
                End::Torn {
                    at: at as u64,
                    reason,
                }
            }
        };
        let ended = |frames, reason| {
            Ok(Contents {
                frames,
                end: torn(reason),
                cut_when_done,
            })
        };
        let Some((len, crc)) = record::frame_len(&bytes[at..]) else {
            return ended(frames, "no valid frame header");
        };
        let Some(body) = bytes.get(at + FRAME_HEADER..at + FRAME_HEADER + len) else {
            return ended(frames, "frame runs past the end");
        };
        if crc32fast::hash(body) != crc {
            return ended(frames, "checksum mismatch");
        }
        let Some(record) = record::decode(body) else {
            return ended(frames, "malformed record");
        };
        frames.push(Frame {
            offset: at as u64,
            record,
        });
        at += FRAME_HEADER + len;
    }
    Ok(Contents {
        frames,
        end: End::Clean,
        cut_when_done,
    })
}

fn all_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&byte| byte == 0)
}

/// Extends `file` from `from` to `to` bytes with allocated space that reads as zeros
/// (`fallocate`, mode 0: the file's size grows with it), so the `fdatasync` after a write into
/// it need not write a new file size. On a journaled ext4 that is a journal commit per sync:
/// 1.2 KB write-and-syncs took 724 µs appending and 271–358 µs into allocated space here,
/// and a lone client's put p50 fell a quarter. Without a journal (a size change is a plain
/// inode write, and the first write to each allocated, "unwritten" block changes an extent
/// instead) it measured neutral (ARCHITECTURE.md "Decisions").
pub(crate) fn preallocate(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    let invalid = |_| std::io::Error::from(std::io::ErrorKind::InvalidInput);
    let offset = libc::off_t::try_from(from).map_err(invalid)?;
    let len = libc::off_t::try_from(to.saturating_sub(from)).map_err(invalid)?;
    // SAFETY: `fallocate` takes a descriptor `file` keeps open for the call and reads no
    // memory of ours.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, offset, len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Reads `len` bytes at `offset` of `file`.
pub(crate) fn read_at(file: &File, offset: u64, len: usize) -> Result<Vec<u8>, WalError> {
    let mut bytes = vec![0; len];
    file.read_exact_at(&mut bytes, offset)?;
    Ok(bytes)
}
