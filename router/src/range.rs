//! Key ranges of scans, counts and delete-ranges, and the stateless continuation tokens
//! of paged scans.
//!
//! A range is `[start, end)` in bytewise key order, `end = None` meaning unbounded. Clients
//! give either a prefix or explicit bounds. A continuation token names the last key a page
//! returned; the next page resumes strictly after it (before it, when reverse), so paging
//! never repeats a key and never skips one that existed, unchanged, for the whole scan. The
//! token is tied to its query by a keyed hash, so a token of another query (or a damaged
//! one) is rejected instead of silently scanning something else.

use ringkv_ring::keys::prefix_end;
use siphasher::sip::SipHasher24;

use crate::error::RouterError;
use crate::validate::Limits;

/// SipHash keys of the token tag: ASCII `"ringkv-t"` and `"oken-v01"`.
const TOKEN_KEY_0: u64 = u64::from_be_bytes(*b"ringkv-t");
const TOKEN_KEY_1: u64 = u64::from_be_bytes(*b"oken-v01");
/// First byte of every token; bumped if the layout changes.
const TOKEN_VERSION: u8 = 1;
const FLAG_REVERSE: u8 = 1;

/// A validated key range `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    /// Inclusive lower bound; empty is the first key.
    pub start: Vec<u8>,
    /// Exclusive upper bound; `None` is unbounded.
    pub end: Option<Vec<u8>>,
}

impl KeyRange {
    /// Every key.
    #[cfg(test)]
    pub fn all() -> KeyRange {
        KeyRange {
            start: Vec::new(),
            end: None,
        }
    }

    /// Builds the range of a request: `prefix`, or `[start, end)` (empty end = unbounded).
    pub fn parse(limits: &Limits, start: &[u8], end: &[u8], prefix: &[u8]) -> Result<KeyRange, RouterError> {
        let max = limits.max_key_bytes;
        for (field, bytes) in [("start", start), ("end", end), ("prefix", prefix)] {
            if bytes.len() > max {
                return Err(RouterError::InvalidArgument(format!(
                    "{field} is {} bytes, more than max_key_bytes = {max}",
                    bytes.len()
                )));
            }
        }
        if !prefix.is_empty() {
            if !start.is_empty() || !end.is_empty() {
                return Err(RouterError::InvalidArgument(
                    "give either prefix or start/end, not both".to_string(),
                ));
            }
            return Ok(KeyRange {
                start: prefix.to_vec(),
                end: prefix_end(prefix),
            });
        }
        if !end.is_empty() && start > end {
            return Err(RouterError::InvalidArgument(format!(
                "start ({}) is after end ({})",
                printable(start),
                printable(end)
            )));
        }
        Ok(KeyRange {
            start: start.to_vec(),
            end: (!end.is_empty()).then(|| end.to_vec()),
        })
    }

    /// Whether no key can be in the range.
    pub fn is_empty(&self) -> bool {
        self.end.as_ref().is_some_and(|end| *end <= self.start)
    }

    /// Whether `key` is in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_ref().is_none_or(|end| key < end.as_slice())
    }

    /// What is left of the range once `key` has been returned: the keys after it, or the
    /// keys before it when scanning in reverse.
    pub fn after(&self, key: &[u8], reverse: bool) -> KeyRange {
        if reverse {
            let end = match &self.end {
                Some(end) if end.as_slice() <= key => end.clone(),
                _ => key.to_vec(),
            };
            KeyRange {
                start: self.start.clone(),
                end: Some(end),
            }
        } else {
            let mut successor = Vec::with_capacity(key.len() + 1);
            successor.extend_from_slice(key);
            successor.push(0);
            KeyRange {
                start: successor.max(self.start.clone()),
                end: self.end.clone(),
            }
        }
    }

    /// The end bound as sent to a node (empty = unbounded).
    pub fn end_bytes(&self) -> Vec<u8> {
        self.end.clone().unwrap_or_default()
    }
}

/// The token resuming a scan of `query` after `last_key`.
///
/// Layout: version, flags, u32 key length (big-endian), key, 8-byte tag over the query
/// and the key.
pub fn encode_token(query: &KeyRange, reverse: bool, last_key: &[u8]) -> Vec<u8> {
    let flags = if reverse { FLAG_REVERSE } else { 0 };
    let mut token = Vec::with_capacity(last_key.len() + 14);
    token.push(TOKEN_VERSION);
    token.push(flags);
    token.extend_from_slice(&(last_key.len() as u32).to_be_bytes());
    token.extend_from_slice(last_key);
    token.extend_from_slice(&tag(query, flags, last_key).to_be_bytes());
    token
}

/// The last key named by a token of `query`, or INVALID_ARGUMENT if the token is
/// malformed, damaged, or belongs to another query.
pub fn decode_token(query: &KeyRange, reverse: bool, token: &[u8]) -> Result<Vec<u8>, RouterError> {
    let invalid = |why: &str| {
        RouterError::InvalidArgument(format!(
            "continuation_token is invalid: {why}; pass back the token of the previous page of the \
             same query (same range, prefix and direction)"
        ))
    };
    let [version, flags, rest @ ..] = token else {
        return Err(invalid("too short"));
    };
    if *version != TOKEN_VERSION {
        return Err(invalid("unknown token version"));
    }
    let Some((len, rest)) = rest.split_first_chunk::<4>() else {
        return Err(invalid("too short"));
    };
    let len = u32::from_be_bytes(*len) as usize;
    if rest.len() != len + 8 {
        return Err(invalid("wrong length"));
    }
    let (key, tag_bytes) = rest.split_at(len);
    let expected_flags = if reverse { FLAG_REVERSE } else { 0 };
    if *flags != expected_flags {
        return Err(invalid("it was issued for the other scan direction"));
    }
    let stored_tag = tag_bytes
        .try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| invalid("wrong length"))?;
    if stored_tag != tag(query, *flags, key) {
        return Err(invalid("it does not belong to this query or was altered"));
    }
    if !query.contains(key) {
        return Err(invalid("its key is outside the range"));
    }
    Ok(key.to_vec())
}

fn tag(query: &KeyRange, flags: u8, key: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut hasher = SipHasher24::new_with_keys(TOKEN_KEY_0, TOKEN_KEY_1);
    hasher.write_u8(TOKEN_VERSION);
    hasher.write_u8(flags);
    hasher.write_u64(query.start.len() as u64);
    hasher.write(&query.start);
    match &query.end {
        Some(end) => {
            hasher.write_u8(1);
            hasher.write_u64(end.len() as u64);
            hasher.write(end);
        }
        None => hasher.write_u8(0),
    }
    hasher.write_u64(key.len() as u64);
    hasher.write(key);
    hasher.finish()
}

/// A key for an error message: text when printable ASCII, else hex; clipped.
fn printable(key: &[u8]) -> String {
    const MAX: usize = 64;
    let shown = &key[..key.len().min(MAX)];
    let mut text = if shown.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("{:?}", String::from_utf8_lossy(shown))
    } else {
        format!("0x{}", crate::error::hex(shown))
    };
    if key.len() > MAX {
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_key_bytes: 8,
        max_value_bytes: 16,
        max_batch_keys: 3,
    };

    fn range(start: &[u8], end: Option<&[u8]>) -> KeyRange {
        KeyRange {
            start: start.to_vec(),
            end: end.map(<[u8]>::to_vec),
        }
    }

    /// Prefixes become half-open ranges; bad combinations and inverted bounds are rejected.
    #[test]
    fn ranges_parse_and_validate() {
        assert_eq!(
            KeyRange::parse(&LIMITS, b"", b"", b"ab").ok(),
            Some(range(b"ab", Some(b"ac")))
        );
        assert_eq!(
            KeyRange::parse(&LIMITS, b"", b"", b"a\xff").ok(),
            Some(range(b"a\xff", Some(b"b")))
        );
        assert_eq!(
            KeyRange::parse(&LIMITS, b"", b"", b"\xff\xff").ok(),
            Some(range(b"\xff\xff", None))
        );
        assert_eq!(
            KeyRange::parse(&LIMITS, b"", b"", b"").ok(),
            Some(KeyRange::all())
        );
        assert_eq!(
            KeyRange::parse(&LIMITS, b"b", b"b", b"").ok(),
            Some(range(b"b", Some(b"b")))
        );
        assert!(KeyRange::parse(&LIMITS, b"b", b"b", b"").is_ok_and(|r| r.is_empty()));
        let inverted = KeyRange::parse(&LIMITS, b"b", b"a", b"");
        assert!(matches!(&inverted, Err(RouterError::InvalidArgument(m)) if m.contains("after end")));
        assert!(KeyRange::parse(&LIMITS, b"a", b"", b"p").is_err());
        assert!(KeyRange::parse(&LIMITS, b"123456789", b"", b"").is_err());
    }

    /// `after` leaves exactly the keys not yet returned, in either direction.
    #[test]
    fn after_leaves_the_rest() {
        let r = range(b"b", Some(b"m"));
        let forward = r.after(b"c", false);
        assert!(!forward.contains(b"c"));
        assert!(forward.contains(b"c\0"));
        assert!(forward.contains(b"l"));
        let backward = r.after(b"c", true);
        assert!(backward.contains(b"b"));
        assert!(backward.contains(b"bzz"));
        assert!(!backward.contains(b"c"));
        assert!(!backward.contains(b"c\0"));
    }

    /// Tokens round-trip and are rejected for another query, direction, or any damage.
    #[test]
    fn tokens_are_tied_to_their_query() {
        let query = range(b"a", Some(b"z"));
        let token = encode_token(&query, false, b"key");
        assert_eq!(decode_token(&query, false, &token).ok(), Some(b"key".to_vec()));
        assert!(decode_token(&query, true, &token).is_err());
        assert!(decode_token(&range(b"a", None), false, &token).is_err());
        assert!(decode_token(&query, false, &[]).is_err());
        assert!(decode_token(&query, false, b"garbage").is_err());
        for i in 0..token.len() {
            let mut damaged = token.clone();
            damaged[i] ^= 0x40;
            assert!(decode_token(&query, false, &damaged).is_err(), "byte {i}");
        }
        let mut longer = token.clone();
        longer.push(0);
        assert!(decode_token(&query, false, &longer).is_err());
        // A key outside the range cannot come from a page of this query.
        let outside = encode_token(&query, false, b"zz");
        assert!(decode_token(&query, false, &outside).is_err());
    }
}
