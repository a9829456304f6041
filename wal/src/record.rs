//! The records of the log and their framing.
//!
//! A frame is `len: u32 LE ‖ crc32(body): u32 LE ‖ body` where `body` is `len` bytes
//! starting with the record type. All integers are little-endian.
//!
//! | type | body after the type byte | meaning |
//! | --- | --- | --- |
//! | 1 append | group u64 ‖ first u64 ‖ count u32 ‖ (len u32 ‖ bytes)* | entries `first..first+count` of `group` (overwriting any at those indexes) |
//! | 2 truncate | group u64 ‖ from u64 | removes the group's entries with index ≥ `from` |
//! | 3 purge | group u64 ‖ upto u64 | removes the group's entries with index ≤ `upto` |
//! | 4 meta | group u64 ‖ key u8 ‖ value bytes (the rest) | sets one small value of the group (vote, …) |
//! | 5 drop | group u64 | forgets everything of the group |

use crate::WalError;

/// Bytes of a frame header (length and checksum).
pub(crate) const FRAME_HEADER: usize = 8;
/// Largest body accepted when reading: a length above it is a torn or corrupt frame.
pub(crate) const MAX_BODY: usize = 256 << 20;

const APPEND: u8 = 1;
const TRUNCATE: u8 = 2;
const PURGE: u8 = 3;
const META: u8 = 4;
const DROP: u8 = 5;

/// Bytes before the first entry's length in an append body.
const APPEND_HEADER: usize = 1 + 8 + 8 + 4;

/// A decoded record; entries are given as `(offset in the body, length)` of their bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Record<'a> {
    Append {
        group: u64,
        first: u64,
        entries: Vec<(usize, u32)>,
    },
    Truncate {
        group: u64,
        from: u64,
    },
    Purge {
        group: u64,
        upto: u64,
    },
    Meta {
        group: u64,
        key: u8,
        value: &'a [u8],
    },
    Drop {
        group: u64,
    },
}

/// Appends the frame of an append record to `out`; returns the offsets (from the start of
/// the frame) and lengths of the entries' bytes.
pub(crate) fn encode_append<E: AsRef<[u8]>>(
    out: &mut Vec<u8>,
    group: u64,
    first: u64,
    entries: &[E],
) -> Result<Vec<(usize, u32)>, WalError> {
    let count = u32::try_from(entries.len()).map_err(|_| WalError::TooLarge)?;
    let start = begin(out, APPEND);
    out.extend_from_slice(&group.to_le_bytes());
    out.extend_from_slice(&first.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    let mut positions = Vec::with_capacity(entries.len());
    for entry in entries {
        let bytes = entry.as_ref();
        let len = u32::try_from(bytes.len()).map_err(|_| WalError::TooLarge)?;
        out.extend_from_slice(&len.to_le_bytes());
        positions.push((out.len() - start, len));
        out.extend_from_slice(bytes);
    }
    finish(out, start)?;
    Ok(positions)
}

pub(crate) fn encode_truncate(out: &mut Vec<u8>, group: u64, from: u64) -> Result<(), WalError> {
    let start = begin(out, TRUNCATE);
    out.extend_from_slice(&group.to_le_bytes());
    out.extend_from_slice(&from.to_le_bytes());
    finish(out, start)
}

pub(crate) fn encode_purge(out: &mut Vec<u8>, group: u64, upto: u64) -> Result<(), WalError> {
    let start = begin(out, PURGE);
    out.extend_from_slice(&group.to_le_bytes());
    out.extend_from_slice(&upto.to_le_bytes());
    finish(out, start)
}

pub(crate) fn encode_meta(out: &mut Vec<u8>, group: u64, key: u8, value: &[u8]) -> Result<(), WalError> {
    let start = begin(out, META);
    out.extend_from_slice(&group.to_le_bytes());
    out.push(key);
    out.extend_from_slice(value);
    finish(out, start)
}

pub(crate) fn encode_drop(out: &mut Vec<u8>, group: u64) -> Result<(), WalError> {
    let start = begin(out, DROP);
    out.extend_from_slice(&group.to_le_bytes());
    finish(out, start)
}

/// Reserves the frame header and writes the type; returns where the frame starts.
fn begin(out: &mut Vec<u8>, kind: u8) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER]);
    out.push(kind);
    start
}

/// Fills in the length and checksum of the frame starting at `start`.
fn finish(out: &mut [u8], start: usize) -> Result<(), WalError> {
    let body = &out[start + FRAME_HEADER..];
    if body.len() > MAX_BODY {
        return Err(WalError::TooLarge);
    }
    let len = u32::try_from(body.len()).map_err(|_| WalError::TooLarge)?;
    let crc = crc32fast::hash(body);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Reads the frame header at the start of `bytes`: the body length, or `None` when the
/// header is incomplete, zero (never written) or impossibly large.
pub(crate) fn frame_len(bytes: &[u8]) -> Option<(usize, u32)> {
    let len = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    (len > 0 && len <= MAX_BODY).then_some((len, crc))
}

/// Decodes a body whose checksum matched. `None`: the body is malformed (a bug or
/// corruption the checksum missed); callers treat it as corruption.
pub(crate) fn decode(body: &[u8]) -> Option<Record<'_>> {
    let mut reader = Reader { bytes: body, at: 1 };
    let record = match *body.first()? {
        APPEND => {
            let group = reader.u64()?;
            let first = reader.u64()?;
            let count = reader.u32()?;
            // Each entry needs at least its length: a count beyond that is corrupt.
            if count as usize > body.len().saturating_sub(APPEND_HEADER) / 4 {
                return None;
            }
            let mut entries = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let len = reader.u32()?;
                entries.push((reader.at, len));
                reader.skip(len as usize)?;
            }
            Record::Append {
                group,
                first,
                entries,
            }
        }
        TRUNCATE => Record::Truncate {
            group: reader.u64()?,
            from: reader.u64()?,
        },
        PURGE => Record::Purge {
            group: reader.u64()?,
            upto: reader.u64()?,
        },
        META => {
            let group = reader.u64()?;
            let key = reader.u8()?;
            Record::Meta {
                group,
                key,
                value: &body[reader.at..],
            }
        }
        DROP => Record::Drop { group: reader.u64()? },
        _ => return None,
    };
    if !matches!(record, Record::Meta { .. }) && reader.at != body.len() {
        return None;
    }
    Some(record)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let slice = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(slice)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|bytes| bytes[0])
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(frame: &[u8]) -> &[u8] {
        let (len, crc) = frame_len(frame).expect("header");
        let body = &frame[FRAME_HEADER..FRAME_HEADER + len];
        assert_eq!(crc32fast::hash(body), crc);
        body
    }

    /// Every record type decodes to what was encoded; entry positions point at the bytes.
    #[test]
    fn records_round_trip() {
        let mut out = Vec::new();
        let positions = encode_append(&mut out, 7, 10, &[b"ab".as_slice(), b"", b"xyz"]).expect("append");
        let frame = out.clone();
        for ((offset, len), expected) in positions.iter().zip([&b"ab"[..], b"", b"xyz"]) {
            assert_eq!(&frame[*offset..*offset + *len as usize], expected);
        }
        match decode(body(&frame)) {
            Some(Record::Append {
                group,
                first,
                entries,
            }) => {
                assert_eq!((group, first), (7, 10));
                let shifted: Vec<_> = entries
                    .iter()
                    .map(|(offset, len)| (offset + FRAME_HEADER, *len))
                    .collect();
                assert_eq!(shifted, positions);
            }
            other => panic!("unexpected {other:?}"),
        }
        type Encoder = Box<dyn Fn(&mut Vec<u8>)>;
        let cases: Vec<(Encoder, Record<'static>)> = vec![
            (
                Box::new(|out| encode_truncate(out, 3, 9).expect("truncate")),
                Record::Truncate { group: 3, from: 9 },
            ),
            (
                Box::new(|out| encode_purge(out, 3, 4).expect("purge")),
                Record::Purge { group: 3, upto: 4 },
            ),
            (
                Box::new(|out| encode_meta(out, 3, b'v', b"vote").expect("meta")),
                Record::Meta {
                    group: 3,
                    key: b'v',
                    value: b"vote",
                },
            ),
            (
                Box::new(|out| encode_drop(out, u64::MAX).expect("drop")),
                Record::Drop { group: u64::MAX },
            ),
        ];
        for (encode, expected) in cases {
            let mut out = Vec::new();
            encode(&mut out);
            assert_eq!(decode(body(&out)), Some(expected));
        }
    }

    /// Truncated or padded bodies and unknown types are rejected, not misread.
    #[test]
    fn malformed_bodies_are_rejected() {
        let mut out = Vec::new();
        encode_append(&mut out, 1, 1, &[b"abc".as_slice()]).expect("append");
        let whole = body(&out).to_vec();
        for cut in 1..whole.len() {
            assert_eq!(decode(&whole[..cut]), None, "cut at {cut}");
        }
        let mut padded = whole.clone();
        padded.push(0);
        assert_eq!(decode(&padded), None);
        assert_eq!(decode(&[9, 0, 0]), None);
        assert_eq!(decode(&[]), None);
        assert_eq!(frame_len(&[0; 8]), None, "a zero length is unwritten space");
        assert_eq!(frame_len(&[1, 0, 0]), None, "an incomplete header");
    }
}
