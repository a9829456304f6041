//! Range scans: checking the entries a router returns, and [`ScanStream`], a streamed
//! scan that resumes from its last continuation token when it breaks.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt, TryStreamExt};
use ringkv_proto::v1 as proto;
use tonic::codec::Streaming;
use tracing::debug;

use crate::error::Failure;
use crate::retry::{OpKind, ResumeBudget};
use crate::routers::{kv_client, with_deadline, Routers};
use crate::types::{describe_key, WireRange};
use crate::{ContinuationToken, Error, KeyRange, ScanEntry, ScanOptions, ScanPage};

/// The wire request of a scan of `range` with `options` and `limit` (0: no limit, for
/// streams), without a continuation token. The range must be validated.
pub(crate) fn scan_request(range: &KeyRange, options: &ScanOptions, limit: u32) -> proto::ScanRequest {
    let WireRange { start, end, prefix } = range.to_wire();
    proto::ScanRequest {
        start,
        end,
        prefix,
        limit,
        reverse: options.reverse,
        keys_only: options.keys_only,
        consistency: proto::Consistency::from(options.consistency) as i32,
        continuation_token: Vec::new(),
        allow_partial: options.allow_partial,
        read_ts: options.consistency.read_ts(),
        read_uncommitted: options.read_uncommitted,
    }
}

/// Checks the entries of a scan against the query: within the range, in order, and no
/// more than the limit.
#[derive(Debug)]
pub(crate) struct ScanCursor {
    range: KeyRange,
    reverse: bool,
    /// Entries still allowed; `None`: no limit.
    remaining: Option<u32>,
    /// The last entry accepted.
    last_key: Option<Vec<u8>>,
}

impl ScanCursor {
    /// For one page of at most `limit` entries.
    pub(crate) fn page(range: KeyRange, reverse: bool, limit: u32) -> ScanCursor {
        ScanCursor {
            range,
            reverse,
            remaining: Some(limit),
            last_key: None,
        }
    }

    /// For a whole stream of at most `limit` entries (`None`: no limit).
    pub(crate) fn stream(range: KeyRange, reverse: bool, limit: Option<u32>) -> ScanCursor {
        ScanCursor {
            range,
            reverse,
            remaining: limit,
            last_key: None,
        }
    }

    /// Whether `key` comes strictly after the last accepted key in scan order.
    fn is_after_last(&self, key: &[u8]) -> bool {
        match &self.last_key {
            None => true,
            Some(last) if self.reverse => key < last.as_slice(),
            Some(last) => key > last.as_slice(),
        }
    }

    fn check_in_range(&self, key: &[u8]) -> Result<(), Error> {
        if self.range.contains(key) {
            Ok(())
        } else {
            Err(Error::InvalidResponse(format!(
                "scan of {} returned key {} outside the range",
                self.range,
                describe_key(key)
            )))
        }
    }

    /// A whole page: any entry out of range, out of order or over the limit breaks the
    /// contract.
    pub(crate) fn accept_page(mut self, entries: Vec<proto::ScanEntry>) -> Result<Vec<ScanEntry>, Error> {
        if let Some(limit) = self.remaining {
            if u32::try_from(entries.len()).map_or(true, |len| len > limit) {
                return Err(Error::InvalidResponse(format!(
                    "scan page of at most {limit} entries returned {}",
                    entries.len()
                )));
            }
        }
        let mut accepted = Vec::with_capacity(entries.len());
        for entry in entries {
            self.check_in_range(&entry.key)?;
            if !self.is_after_last(&entry.key) {
                return Err(Error::InvalidResponse(format!(
                    "scan returned key {} out of order",
                    describe_key(&entry.key)
                )));
            }
            self.last_key = Some(entry.key.clone());
            accepted.push(ScanEntry::from(entry));
        }
        Ok(accepted)
    }

    /// One chunk of a stream: entries not after the last one accepted (repeats around a
    /// resumed stream) are dropped, so each key is delivered once, and the total is cut
    /// at the limit.
    pub(crate) fn accept_chunk(&mut self, entries: Vec<proto::ScanEntry>) -> Result<Vec<ScanEntry>, Error> {
        let mut accepted = Vec::with_capacity(entries.len());
        let mut repeated = 0usize;
        for entry in entries {
            if self.remaining == Some(0) {
                break;
            }
            self.check_in_range(&entry.key)?;
            if !self.is_after_last(&entry.key) {
                repeated += 1;
                continue;
            }
            if let Some(remaining) = self.remaining.as_mut() {
                *remaining -= 1;
            }
            self.last_key = Some(entry.key.clone());
            accepted.push(ScanEntry::from(entry));
        }
        if repeated > 0 {
            debug!(repeated, "scan stream: dropped entries already delivered");
        }
        Ok(accepted)
    }

    /// The limit is reached.
    pub(crate) fn is_exhausted(&self) -> bool {
        self.remaining == Some(0)
    }

    /// The limit to ask of a (re)opened stream: what is left, 0 for no limit.
    pub(crate) fn remaining_limit(&self) -> u32 {
        self.remaining.unwrap_or(0)
    }
}

/// A streamed scan, from [`Client::scan_stream`](crate::Client::scan_stream): a [`Stream`] of [`ScanPage`] chunks in
/// key order.
///
/// Each chunk carries the token to resume after it and the shards missing from it (with
/// [`ScanOptions::allow_partial`]). The stream ends after the last chunk of the range
/// (or at the limit), or after one error item.
pub struct ScanStream {
    inner: BoxStream<'static, Result<ScanPage, Error>>,
}

impl ScanStream {
    pub(crate) fn new(routers: Arc<Routers>, range: &KeyRange, options: &ScanOptions) -> ScanStream {
        let inner = match StreamState::new(routers, range, options) {
            Ok(state) => stream::unfold(state, |mut state| async move {
                let item = state.next_chunk().await?;
                Some((item, state))
            })
            .boxed(),
            Err(error) => stream::once(async move { Err(error) }).boxed(),
        };
        ScanStream { inner }
    }

    /// The entries of every chunk, one by one.
    ///
    /// Missing shards are not visible here: with [`ScanOptions::allow_partial`], read the
    /// chunks instead.
    ///
    /// ```no_run
    /// use futures::TryStreamExt;
    /// use ringkv_client::{Client, KeyRange, ScanOptions};
    ///
    /// # async fn example(client: Client) -> Result<(), ringkv_client::Error> {
    /// let mut entries = client
    ///     .scan_stream(&KeyRange::starting_at("m"), &ScanOptions::new().limit(10))
    ///     .entries();
    /// while let Some(entry) = entries.try_next().await? {
    ///     println!("{:?}", entry.key);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn entries(self) -> impl Stream<Item = Result<ScanEntry, Error>> + Send + Unpin + 'static {
        self.map_ok(|page| stream::iter(page.entries.into_iter().map(Ok)))
            .try_flatten()
            .boxed()
    }
}

impl Stream for ScanStream {
    type Item = Result<ScanPage, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

impl fmt::Debug for ScanStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScanStream").finish_non_exhaustive()
    }
}

/// The state of a [`ScanStream`] between two chunks.
struct StreamState {
    routers: Arc<Routers>,
    /// The request; its token and limit are set each time the stream is (re)opened.
    request: proto::ScanRequest,
    cursor: ScanCursor,
    /// The last continuation token received (empty before the first).
    token: Vec<u8>,
    stream: Option<Streaming<proto::ScanResponse>>,
    /// Messages received on the current stream.
    received: u64,
    budget: ResumeBudget,
    /// Longest wait for the next message.
    idle: Duration,
    finished: bool,
}

impl StreamState {
    fn new(routers: Arc<Routers>, range: &KeyRange, options: &ScanOptions) -> Result<StreamState, Error> {
        range.validate()?;
        if options.limit == Some(0) {
            return Err(Error::InvalidArgument(
                "scan stream limit must be at least 1 (leave it unset for no limit)".into(),
            ));
        }
        let config = routers.config();
        let budget = ResumeBudget::new(config.max_attempts);
        let idle = config.stream_idle_timeout;
        Ok(StreamState {
            request: scan_request(range, options, 0),
            cursor: ScanCursor::stream(range.clone(), options.reverse, options.limit),
            token: Vec::new(),
            stream: None,
            received: 0,
            budget,
            idle,
            finished: false,
            routers,
        })
    }

    /// The next chunk with entries (or missing shards), reopening the stream after the
    /// last token when it breaks; `None` at the end.
    async fn next_chunk(&mut self) -> Option<Result<ScanPage, Error>> {
        loop {
            if self.finished || self.cursor.is_exhausted() {
                return None;
            }
            let error = match self.stream.as_mut() {
                None => match self.open().await {
                    Ok(stream) => {
                        self.stream = Some(stream);
                        self.received = 0;
                        continue;
                    }
                    Err(error) => {
                        self.finished = true;
                        return Some(Err(error));
                    }
                },
                Some(stream) => match tokio::time::timeout(self.idle, stream.message()).await {
                    Ok(Ok(Some(response))) => {
                        self.received += 1;
                        match self.accept(response) {
                            Ok(Some(page)) => return Some(Ok(page)),
                            Ok(None) => continue,
                            Err(error) => {
                                self.finished = true;
                                return Some(Err(error));
                            }
                        }
                    }
                    // Nothing at all to send: the range (or its rest) is empty.
                    Ok(Ok(None)) if self.received == 0 => {
                        self.finished = true;
                        return None;
                    }
                    // The last message promised more: the stream was cut short.
                    Ok(Ok(None)) => {
                        Error::Unavailable("the scan stream ended before the range was exhausted".into())
                    }
                    Ok(Err(status)) => Failure::from_status(&status).error,
                    Err(_elapsed) => {
                        Error::DeadlineExceeded(format!("scan stream: no data within {:?}", self.idle))
                    }
                },
            };
            self.stream = None;
            let Some(round) = self.budget.on_break(&error) else {
                self.finished = true;
                return Some(Err(error));
            };
            debug!(error = %error, round, "scan stream broke; resuming after the last token");
            self.routers.resume_backoff(round).await;
        }
    }

    /// Opens the stream after the last token received, with what is left of the limit.
    async fn open(&mut self) -> Result<Streaming<proto::ScanResponse>, Error> {
        self.request.continuation_token = self.token.clone();
        self.request.limit = self.cursor.remaining_limit();
        let message = self.request.clone();
        let max_bytes = self.routers.config().max_message_bytes;
        self.routers
            .call(OpKind::Read, "scan stream", |channel, timeout| {
                // The router applies the deadline to each round of shard calls; tonic
                // bounds only the wait for the response headers with it, not the stream.
                let request = with_deadline(message.clone(), timeout);
                async move { kv_client(channel, max_bytes).scan_stream(request).await }
            })
            .await
    }

    /// Takes in one message: `Some(chunk)` to yield, `None` when it holds nothing new.
    fn accept(&mut self, response: proto::ScanResponse) -> Result<Option<ScanPage>, Error> {
        let entries = self.cursor.accept_chunk(response.entries)?;
        if !entries.is_empty() || response.continuation_token != self.token {
            self.budget.on_progress();
        }
        self.token = response.continuation_token;
        let next = ContinuationToken::from_wire(self.token.clone());
        if next.is_none() {
            self.finished = true;
        }
        if entries.is_empty() && response.missing_shards.is_empty() {
            return Ok(None);
        }
        Ok(Some(ScanPage {
            entries,
            next,
            missing_shards: response.missing_shards,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(keys: &[&str]) -> Vec<proto::ScanEntry> {
        keys.iter()
            .map(|key| proto::ScanEntry {
                key: key.as_bytes().to_vec(),
                value: b"v".to_vec(),
                version: 1,
                ..Default::default()
            })
            .collect()
    }

    fn keys(entries: &[ScanEntry]) -> Vec<String> {
        entries
            .iter()
            .map(|entry| String::from_utf8_lossy(&entry.key).into_owned())
            .collect()
    }

    /// The request carries the range fields and every option.
    #[test]
    fn scan_request_fields() {
        let options = ScanOptions::new()
            .reverse(true)
            .keys_only(true)
            .consistency(crate::ReadConsistency::Stale)
            .allow_partial(true);
        let request = scan_request(&KeyRange::prefix("p"), &options, 7);
        assert_eq!(request.prefix, b"p");
        assert!(request.start.is_empty() && request.end.is_empty());
        assert_eq!(request.limit, 7);
        assert!(request.reverse && request.keys_only && request.allow_partial);
        assert_eq!(request.consistency, proto::Consistency::Stale as i32);
        assert!(request.continuation_token.is_empty());
    }

    /// A page in order and within the range is accepted as is.
    #[test]
    fn page_in_order() {
        let cursor = ScanCursor::page(KeyRange::between("a", "z"), false, 3);
        let accepted = cursor.accept_page(entries(&["a", "b", "y"])).expect("valid page");
        assert_eq!(keys(&accepted), ["a", "b", "y"]);

        let reverse = ScanCursor::page(KeyRange::all(), true, 3);
        let accepted = reverse
            .accept_page(entries(&["c", "b", "a"]))
            .expect("valid page");
        assert_eq!(keys(&accepted), ["c", "b", "a"]);
    }

    /// Pages over the limit, out of order or out of range break the contract.
    #[test]
    fn page_contract_violations() {
        let over = ScanCursor::page(KeyRange::all(), false, 2).accept_page(entries(&["a", "b", "c"]));
        assert!(matches!(over, Err(Error::InvalidResponse(_))));
        let disorder = ScanCursor::page(KeyRange::all(), false, 5).accept_page(entries(&["b", "a"]));
        assert!(matches!(disorder, Err(Error::InvalidResponse(_))));
        let repeat = ScanCursor::page(KeyRange::all(), false, 5).accept_page(entries(&["a", "a"]));
        assert!(matches!(repeat, Err(Error::InvalidResponse(_))));
        let outside = ScanCursor::page(KeyRange::prefix("p/"), false, 5).accept_page(entries(&["q"]));
        assert!(matches!(outside, Err(Error::InvalidResponse(_))));
    }

    /// Entries repeated by a resumed stream are dropped; the limit cuts the total.
    #[test]
    fn chunks_drop_repeats_and_respect_the_limit() {
        let mut cursor = ScanCursor::stream(KeyRange::all(), false, Some(4));
        assert_eq!(cursor.remaining_limit(), 4);
        let first = cursor.accept_chunk(entries(&["a", "b"])).expect("chunk");
        assert_eq!(keys(&first), ["a", "b"]);
        assert_eq!(cursor.remaining_limit(), 2);
        // A resumed stream that starts again at "b".
        let second = cursor
            .accept_chunk(entries(&["b", "c", "d", "e"]))
            .expect("chunk");
        assert_eq!(keys(&second), ["c", "d"]);
        assert!(cursor.is_exhausted());
        assert!(cursor.accept_chunk(entries(&["f"])).expect("chunk").is_empty());
    }

    /// Without a limit a stream asks for 0 (no limit) and never runs out.
    #[test]
    fn unlimited_stream() {
        let mut cursor = ScanCursor::stream(KeyRange::all(), true, None);
        assert_eq!(cursor.remaining_limit(), 0);
        let chunk = cursor.accept_chunk(entries(&["z", "y", "z"])).expect("chunk");
        assert_eq!(keys(&chunk), ["z", "y"]);
        assert!(!cursor.is_exhausted());
        let outside = ScanCursor::stream(KeyRange::prefix("p"), false, None).accept_chunk(entries(&["q"]));
        assert!(matches!(outside, Err(Error::InvalidResponse(_))));
    }
}
