//! Domain types of the client API and their protobuf conversions.

use std::fmt;
use std::str::FromStr;

use ringkv_proto::v1 as proto;

use crate::Error;

/// Most entries one [`Client::scan`](crate::Client::scan) page may ask for.
pub const MAX_SCAN_PAGE_LIMIT: u32 = 10_000;
/// Entries per [`Client::scan`](crate::Client::scan) page when [`ScanOptions::limit`] is
/// not set.
pub const DEFAULT_SCAN_PAGE_LIMIT: u32 = 1_000;

/// A stored value with its version (positive, monotonic per key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    /// The value bytes.
    pub value: Vec<u8>,
    /// The version of the value (the Raft log index of the write that produced it).
    pub version: u64,
}

/// How a read is served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadConsistency {
    /// Through the shard leader after a ReadIndex check.
    #[default]
    Linearizable,
    /// By any replica from its local state: possibly stale, never torn.
    Stale,
    /// A snapshot read as of a timestamp of the oracle ([`crate::Client::timestamp`]): the
    /// newest version committed at or before it, through the shard leader. A timestamp older
    /// than the shard's version history (the nodes' `--mvcc-window-ms`, 10 s by default, and
    /// not across a leader's restart) is refused with "snapshot too old".
    At(u64),
}

impl From<ReadConsistency> for proto::Consistency {
    fn from(consistency: ReadConsistency) -> Self {
        match consistency {
            ReadConsistency::Linearizable | ReadConsistency::At(_) => proto::Consistency::Linearizable,
            ReadConsistency::Stale => proto::Consistency::Stale,
        }
    }
}

impl ReadConsistency {
    /// The read timestamp on the wire (0: the latest values).
    pub(crate) fn read_ts(self) -> u64 {
        match self {
            ReadConsistency::At(read_ts) => read_ts,
            ReadConsistency::Linearizable | ReadConsistency::Stale => 0,
        }
    }
}

/// The result of a compare-and-swap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CasOutcome {
    /// The comparison held and the new value (or the delete) was applied.
    Swapped {
        /// Version of the new value; 0 after a delete.
        new_version: u64,
    },
    /// The key did not have the expected version; nothing changed.
    Mismatch {
        /// The current value, `None` when the key is absent.
        current: Option<Versioned>,
    },
}

impl CasOutcome {
    /// Whether the swap was applied.
    pub fn is_swapped(&self) -> bool {
        matches!(self, CasOutcome::Swapped { .. })
    }
}

/// A range of keys, in bytewise order: every key, the keys with a prefix, or the keys in
/// `[start, end)`.
///
/// Constructing a range never fails; a malformed one (start after end, empty end) is
/// rejected with [`Error::InvalidArgument`] by [`KeyRange::validate`] and by every call
/// that takes it.
///
/// ```
/// use ringkv_client::KeyRange;
///
/// let users = KeyRange::prefix("user/");
/// assert!(users.contains(b"user/42") && !users.contains(b"usage"));
///
/// let span = KeyRange::between("a", "c"); // "a" included, "c" excluded
/// assert!(span.contains(b"b") && !span.contains(b"c"));
///
/// assert!(KeyRange::starting_at("m").contains(b"zzz"));
/// assert!(KeyRange::all().is_all());
/// assert!(KeyRange::between("z", "a").validate().is_err());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct KeyRange {
    bounds: Bounds,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
enum Bounds {
    #[default]
    All,
    Prefix(Vec<u8>),
    Span {
        start: Vec<u8>,
        /// `None`: no upper bound.
        end: Option<Vec<u8>>,
    },
}

/// A [`KeyRange`] as the three `start/end/prefix` fields of the wire messages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct WireRange {
    pub(crate) start: Vec<u8>,
    pub(crate) end: Vec<u8>,
    pub(crate) prefix: Vec<u8>,
}

impl KeyRange {
    /// Every key.
    pub fn all() -> KeyRange {
        KeyRange { bounds: Bounds::All }
    }

    /// Every key starting with `prefix` (the empty prefix is every key).
    pub fn prefix(prefix: impl AsRef<[u8]>) -> KeyRange {
        KeyRange {
            bounds: Bounds::Prefix(prefix.as_ref().to_vec()),
        }
    }

    /// The keys in `[start, end)`: `start` included, `end` excluded. `end` must not be
    /// empty; use [`KeyRange::starting_at`] for a range without an upper bound.
    pub fn between(start: impl AsRef<[u8]>, end: impl AsRef<[u8]>) -> KeyRange {
        KeyRange {
            bounds: Bounds::Span {
                start: start.as_ref().to_vec(),
                end: Some(end.as_ref().to_vec()),
            },
        }
    }

    /// The keys from `start` (included) to the last key.
    pub fn starting_at(start: impl AsRef<[u8]>) -> KeyRange {
        KeyRange {
            bounds: Bounds::Span {
                start: start.as_ref().to_vec(),
                end: None,
            },
        }
    }

    /// The keys from the first key up to `end` (excluded).
    pub fn ending_before(end: impl AsRef<[u8]>) -> KeyRange {
        KeyRange::between([], end)
    }

    /// Whether the range is the whole key space.
    pub fn is_all(&self) -> bool {
        match &self.bounds {
            Bounds::All => true,
            Bounds::Prefix(prefix) => prefix.is_empty(),
            Bounds::Span { start, end } => start.is_empty() && end.is_none(),
        }
    }

    /// The prefix of a prefix range.
    pub fn prefix_bytes(&self) -> Option<&[u8]> {
        match &self.bounds {
            Bounds::Prefix(prefix) => Some(prefix),
            _ => None,
        }
    }

    /// The inclusive lower bound of a `[start, end)` range (empty: the first key).
    pub fn start(&self) -> Option<&[u8]> {
        match &self.bounds {
            Bounds::Span { start, .. } => Some(start),
            _ => None,
        }
    }

    /// The exclusive upper bound of a `[start, end)` range (`None`: no upper bound).
    pub fn end(&self) -> Option<&[u8]> {
        match &self.bounds {
            Bounds::Span { end, .. } => end.as_deref(),
            _ => None,
        }
    }

    /// The range as `[start, end)` (`None` end: no upper bound), a prefix included.
    pub(crate) fn span(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        match &self.bounds {
            Bounds::All => (Vec::new(), None),
            Bounds::Prefix(prefix) => {
                // The smallest key above every key with the prefix (none for all 0xff).
                let mut end = prefix.clone();
                while let Some(last) = end.pop() {
                    if last < u8::MAX {
                        end.push(last + 1);
                        return (prefix.clone(), Some(end));
                    }
                }
                (prefix.clone(), None)
            }
            Bounds::Span { start, end } => (start.clone(), end.clone()),
        }
    }

    /// Whether `key` belongs to the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        match &self.bounds {
            Bounds::All => true,
            Bounds::Prefix(prefix) => key.starts_with(prefix),
            Bounds::Span { start, end } => {
                key >= start.as_slice() && end.as_ref().is_none_or(|end| key < end.as_slice())
            }
        }
    }

    /// Checks the range: an explicit end must not be empty (the wire reads an empty end
    /// as "no upper bound") and must not come before the start.
    pub fn validate(&self) -> Result<(), Error> {
        if let Bounds::Span {
            start,
            end: Some(end),
        } = &self.bounds
        {
            if end.is_empty() {
                return Err(Error::InvalidArgument(
                    "range end must not be empty (use KeyRange::starting_at for no upper bound)".into(),
                ));
            }
            if start > end {
                return Err(Error::InvalidArgument(format!(
                    "range start {} is after its end {}",
                    describe_key(start),
                    describe_key(end)
                )));
            }
        }
        Ok(())
    }

    /// The wire fields (call [`KeyRange::validate`] first).
    pub(crate) fn to_wire(&self) -> WireRange {
        match &self.bounds {
            Bounds::All => WireRange::default(),
            Bounds::Prefix(prefix) => WireRange {
                prefix: prefix.clone(),
                ..WireRange::default()
            },
            Bounds::Span { start, end } => WireRange {
                start: start.clone(),
                end: end.clone().unwrap_or_default(),
                prefix: Vec::new(),
            },
        }
    }
}

impl fmt::Display for KeyRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.bounds {
            Bounds::All => f.write_str("all keys"),
            Bounds::Prefix(prefix) => write!(f, "prefix {}", describe_key(prefix)),
            Bounds::Span { start, end } => write!(
                f,
                "[{}, {})",
                describe_key(start),
                end.as_deref().map_or_else(|| "∞".to_string(), describe_key)
            ),
        }
    }
}

/// Bytes for error messages: quoted, non-printable ASCII escaped.
pub(crate) fn describe_key(key: &[u8]) -> String {
    format!("\"{}\"", key.escape_ascii())
}

/// How [`Client::scan`](crate::Client::scan) and
/// [`Client::scan_stream`](crate::Client::scan_stream) read a range.
///
/// ```
/// use ringkv_client::{ReadConsistency, ScanOptions};
///
/// let options = ScanOptions::new()
///     .limit(100)
///     .reverse(true)
///     .keys_only(true)
///     .consistency(ReadConsistency::Stale)
///     .allow_partial(true);
/// # let _ = options;
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanOptions {
    pub(crate) limit: Option<u32>,
    pub(crate) reverse: bool,
    pub(crate) keys_only: bool,
    pub(crate) consistency: ReadConsistency,
    pub(crate) allow_partial: bool,
    /// Provisional values too (read-uncommitted transactions).
    pub(crate) read_uncommitted: bool,
}

impl ScanOptions {
    /// Ascending, with values, linearizable per shard, failing if a shard cannot answer.
    pub fn new() -> ScanOptions {
        ScanOptions::default()
    }

    /// For [`Client::scan`](crate::Client::scan): the page size, 1..=
    /// [`MAX_SCAN_PAGE_LIMIT`] (default [`DEFAULT_SCAN_PAGE_LIMIT`]). For
    /// [`Client::scan_stream`](crate::Client::scan_stream): the most entries of the whole
    /// stream, at least 1 (default: no limit).
    pub fn limit(mut self, limit: u32) -> ScanOptions {
        self.limit = Some(limit);
        self
    }

    /// Descending key order: the first entry is the greatest key of the range.
    pub fn reverse(mut self, reverse: bool) -> ScanOptions {
        self.reverse = reverse;
        self
    }

    /// Return keys and versions only; values are left empty.
    pub fn keys_only(mut self, keys_only: bool) -> ScanOptions {
        self.keys_only = keys_only;
        self
    }

    /// How each shard serves its part (default linearizable). [`ReadConsistency::At`]
    /// reads every shard as of one timestamp: a consistent snapshot of the whole range,
    /// also across pages and a resumed stream.
    pub fn consistency(mut self, consistency: ReadConsistency) -> ScanOptions {
        self.consistency = consistency;
        self
    }

    /// When a shard cannot answer in time, return the other shards' keys and name the
    /// missing shards ([`ScanPage::missing_shards`]) instead of failing.
    pub fn allow_partial(mut self, allow_partial: bool) -> ScanOptions {
        self.allow_partial = allow_partial;
        self
    }
}

/// How [`Client::count`](crate::Client::count) reads a range.
///
/// ```
/// use ringkv_client::{CountOptions, ReadConsistency};
///
/// let options = CountOptions::new().consistency(ReadConsistency::Stale).allow_partial(true);
/// # let _ = options;
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CountOptions {
    pub(crate) consistency: ReadConsistency,
    pub(crate) allow_partial: bool,
}

impl CountOptions {
    /// Linearizable per shard, failing if a shard cannot answer.
    pub fn new() -> CountOptions {
        CountOptions::default()
    }

    /// How each shard serves its part (default linearizable).
    pub fn consistency(mut self, consistency: ReadConsistency) -> CountOptions {
        self.consistency = consistency;
        self
    }

    /// When a shard cannot answer in time, count the others and name the missing shards
    /// instead of failing.
    pub fn allow_partial(mut self, allow_partial: bool) -> CountOptions {
        self.allow_partial = allow_partial;
        self
    }
}

/// Where a scan stopped: pass it to the next [`Client::scan`](crate::Client::scan) of the
/// *same* query (range, direction) to get the following page.
///
/// Tokens are opaque and stateless: they do not expire, but a token is only valid for
/// the query that produced it. As text (`Display` / `FromStr`) a token is lowercase hex.
///
/// ```
/// use ringkv_client::ContinuationToken;
///
/// let token: ContinuationToken = "0a1b2c".parse()?;
/// assert_eq!(token.to_string(), "0a1b2c");
/// assert_eq!(token.as_bytes(), &[0x0a, 0x1b, 0x2c]);
/// # Ok::<(), ringkv_client::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ContinuationToken(Vec<u8>);

impl ContinuationToken {
    /// A token from its bytes; the empty token is invalid (it means "no more pages").
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Result<ContinuationToken, Error> {
        let bytes = bytes.into();
        if bytes.is_empty() {
            return Err(Error::InvalidArgument(
                "continuation token must not be empty".into(),
            ));
        }
        Ok(ContinuationToken(bytes))
    }

    /// The token bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The token bytes, by value.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// A token from the wire, where empty means none.
    pub(crate) fn from_wire(bytes: Vec<u8>) -> Option<ContinuationToken> {
        (!bytes.is_empty()).then_some(ContinuationToken(bytes))
    }
}

impl fmt::Display for ContinuationToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl fmt::Debug for ContinuationToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContinuationToken({self})")
    }
}

impl FromStr for ContinuationToken {
    type Err = Error;

    /// Parses the hex form written by `Display`.
    fn from_str(text: &str) -> Result<ContinuationToken, Error> {
        let bytes = hex::decode(text.trim())
            .map_err(|err| Error::InvalidArgument(format!("continuation token is not hex: {err}")))?;
        ContinuationToken::from_bytes(bytes)
    }
}

/// One stored pair returned by a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanEntry {
    /// The key.
    pub key: Vec<u8>,
    /// The value; empty when the scan is keys-only.
    pub value: Vec<u8>,
    /// The version of the value.
    pub version: u64,
    /// When the value expires (an oracle timestamp); `None`: never.
    pub expires_at_ts: Option<u64>,
}

impl From<proto::ScanEntry> for ScanEntry {
    fn from(entry: proto::ScanEntry) -> Self {
        ScanEntry {
            key: entry.key,
            value: entry.value,
            version: entry.version,
            expires_at_ts: (entry.expires_at_ts != 0).then_some(entry.expires_at_ts),
        }
    }
}

/// One page of a scan ([`Client::scan`](crate::Client::scan)), or one chunk of a streamed
/// scan ([`Client::scan_stream`](crate::Client::scan_stream)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanPage {
    /// In key order (descending when reverse).
    pub entries: Vec<ScanEntry>,
    /// Where to resume; `None` when the range is exhausted.
    pub next: Option<ContinuationToken>,
    /// Shards left out because they could not answer (only with
    /// [`ScanOptions::allow_partial`]).
    pub missing_shards: Vec<u32>,
}

impl ScanPage {
    /// Whether some shards' keys are missing from this page.
    pub fn is_partial(&self) -> bool {
        !self.missing_shards.is_empty()
    }
}

/// The progress of a running count, reported by
/// [`Client::count_with_progress`](crate::Client::count_with_progress).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CountProgress {
    /// Keys counted so far.
    pub count: u64,
    /// Shards whose part is counted.
    pub shards_done: u32,
    /// Shards the range spans.
    pub shards_total: u32,
    /// Whether this is the final report.
    pub done: bool,
    /// Shards left out because they could not answer (only with
    /// [`CountOptions::allow_partial`]).
    pub missing_shards: Vec<u32>,
}

impl From<proto::CountResponse> for CountProgress {
    fn from(response: proto::CountResponse) -> Self {
        CountProgress {
            count: response.count,
            shards_done: response.shards_done,
            shards_total: response.shards_total,
            done: response.done,
            missing_shards: response.missing_shards,
        }
    }
}

/// The result of a count.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CountResult {
    /// The exact number of keys in the range, over every shard that answered.
    pub count: u64,
    /// Shards the range spans.
    pub shards_total: u32,
    /// Shards left out because they could not answer (only with
    /// [`CountOptions::allow_partial`]).
    pub missing_shards: Vec<u32>,
}

impl CountResult {
    /// Whether some shards were not counted.
    pub fn is_partial(&self) -> bool {
        !self.missing_shards.is_empty()
    }
}

/// One write of a [`Client::batch_write`](crate::Client::batch_write).
///
/// ```
/// use ringkv_client::Mutation;
///
/// let batch = vec![Mutation::put("user/1", "ada"), Mutation::delete("user/2")];
/// assert_eq!(batch[1].key(), b"user/2");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// Store `value` under `key`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Delete `key` (absent keys are not an error).
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

impl Mutation {
    /// A put of `value` under `key`.
    pub fn put(key: impl AsRef<[u8]>, value: impl Into<Vec<u8>>) -> Mutation {
        Mutation::Put {
            key: key.as_ref().to_vec(),
            value: value.into(),
        }
    }

    /// A delete of `key`.
    pub fn delete(key: impl AsRef<[u8]>) -> Mutation {
        Mutation::Delete {
            key: key.as_ref().to_vec(),
        }
    }

    /// The key written.
    pub fn key(&self) -> &[u8] {
        match self {
            Mutation::Put { key, .. } | Mutation::Delete { key } => key,
        }
    }
}

impl From<Mutation> for proto::Mutation {
    fn from(mutation: Mutation) -> Self {
        match mutation {
            Mutation::Put { key, value } => proto::Mutation {
                key,
                kind: proto::MutationKind::Put as i32,
                value,
            },
            Mutation::Delete { key } => proto::Mutation {
                key,
                kind: proto::MutationKind::Delete as i32,
                value: Vec::new(),
            },
        }
    }
}

/// The result of one [`Mutation`] of a batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MutationResult {
    /// The version of the value written by a put; 0 for a delete.
    pub version: u64,
    /// Whether the key held a value before the mutation.
    pub existed: bool,
}

impl From<proto::MutationResult> for MutationResult {
    fn from(result: proto::MutationResult) -> Self {
        MutationResult {
            version: result.version,
            existed: result.existed,
        }
    }
}

/// Converts a `found/value/version` triple from the wire.
pub(crate) fn versioned(found: bool, value: Vec<u8>, version: u64) -> Option<Versioned> {
    found.then_some(Versioned { value, version })
}

impl From<proto::CompareAndSwapResponse> for CasOutcome {
    fn from(response: proto::CompareAndSwapResponse) -> Self {
        if response.succeeded {
            CasOutcome::Swapped {
                new_version: response.new_version,
            }
        } else {
            CasOutcome::Mismatch {
                current: versioned(
                    response.current_found,
                    response.current_value,
                    response.current_version,
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failed CAS on an absent key reports no current value.
    #[test]
    fn cas_mismatch_absent() {
        let outcome = CasOutcome::from(proto::CompareAndSwapResponse {
            succeeded: false,
            current_found: false,
            ..Default::default()
        });
        assert_eq!(outcome, CasOutcome::Mismatch { current: None });
    }

    /// A failed CAS carries the current value and version.
    #[test]
    fn cas_mismatch_present() {
        let outcome = CasOutcome::from(proto::CompareAndSwapResponse {
            succeeded: false,
            current_found: true,
            current_value: b"v".to_vec(),
            current_version: 7,
            ..Default::default()
        });
        assert_eq!(
            outcome,
            CasOutcome::Mismatch {
                current: Some(Versioned {
                    value: b"v".to_vec(),
                    version: 7
                })
            }
        );
    }

    /// Prefix, span and all ranges map to their wire fields.
    #[test]
    fn key_range_wire_fields() {
        assert_eq!(KeyRange::all().to_wire(), WireRange::default());
        let prefix = KeyRange::prefix("p/").to_wire();
        assert_eq!(
            (prefix.start, prefix.end, prefix.prefix),
            (vec![], vec![], b"p/".to_vec())
        );
        let span = KeyRange::between("a", "b").to_wire();
        assert_eq!(
            (span.start, span.end, span.prefix),
            (b"a".to_vec(), b"b".to_vec(), vec![])
        );
        let open = KeyRange::starting_at("m").to_wire();
        assert_eq!((open.start, open.end), (b"m".to_vec(), vec![]));
        let head = KeyRange::ending_before("m").to_wire();
        assert_eq!((head.start, head.end), (vec![], b"m".to_vec()));
    }

    /// Empty ends and inverted bounds are rejected; equal bounds are an empty range.
    #[test]
    fn key_range_validation() {
        assert!(KeyRange::all().validate().is_ok());
        assert!(KeyRange::prefix("").validate().is_ok());
        assert!(KeyRange::between("a", "a").validate().is_ok());
        assert!(KeyRange::starting_at("").validate().is_ok());
        assert!(matches!(
            KeyRange::between("b", "a").validate(),
            Err(Error::InvalidArgument(_))
        ));
        // An empty end would be "unbounded" on the wire: never send it by accident.
        assert!(KeyRange::between("", "").validate().is_err());
        assert!(KeyRange::ending_before("").validate().is_err());
    }

    /// The whole key space can be spelled three ways.
    #[test]
    fn key_range_is_all() {
        assert!(KeyRange::all().is_all());
        assert!(KeyRange::prefix("").is_all());
        assert!(KeyRange::starting_at("").is_all());
        assert!(!KeyRange::prefix("a").is_all());
        assert!(!KeyRange::ending_before("z").is_all());
    }

    /// Membership follows the bytewise order and the half-open bounds.
    #[test]
    fn key_range_contains() {
        let span = KeyRange::between("b", "d");
        assert!(!span.contains(b"a") && span.contains(b"b") && span.contains(b"c\xff"));
        assert!(!span.contains(b"d"));
        let prefix = KeyRange::prefix([0xff]);
        assert!(prefix.contains(&[0xff, 0]) && !prefix.contains(&[0xfe]));
        assert_eq!(KeyRange::between("a", "b\n").to_string(), "[\"a\", \"b\\n\")");
        assert_eq!(KeyRange::starting_at("a").to_string(), "[\"a\", ∞)");
    }

    /// Tokens round-trip through hex; empty and non-hex tokens are invalid.
    #[test]
    fn continuation_token_text() {
        let token: ContinuationToken = "00ff10".parse().expect("hex");
        assert_eq!(token.as_bytes(), &[0x00, 0xff, 0x10]);
        assert_eq!(
            token.to_string().parse::<ContinuationToken>().expect("hex"),
            token
        );
        assert!("".parse::<ContinuationToken>().is_err());
        assert!("xyz".parse::<ContinuationToken>().is_err());
        assert!(ContinuationToken::from_wire(Vec::new()).is_none());
    }

    /// Mutations map to the wire kinds; deletes carry no value.
    #[test]
    fn mutation_wire_kinds() {
        let put = proto::Mutation::from(Mutation::put("k", "v"));
        assert_eq!(put.kind, proto::MutationKind::Put as i32);
        assert_eq!(put.value, b"v");
        let delete = proto::Mutation::from(Mutation::delete("k"));
        assert_eq!(delete.kind, proto::MutationKind::Delete as i32);
        assert!(delete.value.is_empty());
        assert_eq!(Mutation::delete("x").key(), b"x");
    }

    /// A successful CAS reports the new version.
    #[test]
    fn cas_swapped() {
        let outcome = CasOutcome::from(proto::CompareAndSwapResponse {
            succeeded: true,
            new_version: 9,
            ..Default::default()
        });
        assert!(outcome.is_swapped());
        assert_eq!(outcome, CasOutcome::Swapped { new_version: 9 });
    }
}
