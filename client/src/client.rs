//! [`Client`]: the typed key-value API over a set of routers, with failover.

use std::collections::HashSet;
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;

use ringkv_proto::v1 as proto;
use ringkv_proto::v1::kv_client::KvClient;
use ringkv_proto::v1::kv_frame::Call;
use ringkv_proto::v1::kv_frame_reply::Answer;
use tracing::debug;

use crate::credentials::AuthChannel;
use crate::error::Failure;
use crate::pipeline::expect;
use crate::retry::{OpKind, ResumeBudget};
use crate::routers::{admin_client, kv_client, tso_client, with_deadline, Routers};
use crate::scan::{scan_request, ScanCursor, ScanStream};
use crate::types::{describe_key, versioned, WireRange};
use crate::watch::{WatchOptions, WatchPosition, WatchStream};
use crate::{
    CasOutcome, ClientConfig, ContinuationToken, CountOptions, CountProgress, CountResult, Error, KeyRange,
    Mutation, MutationResult, ReadConsistency, ScanOptions, ScanPage, Versioned, DEFAULT_SCAN_PAGE_LIMIT,
    MAX_SCAN_PAGE_LIMIT,
};

/// Checks one page of a batch get of `asked` keys: `remaining` names positions in
/// `asked`, ascending, and `results` answers every other key, in order, at least one.
/// Returns the positions left, as `usize`.
fn answered_page(
    asked: &[Vec<u8>],
    results: &[proto::KeyValueResult],
    remaining: &[u32],
) -> Result<Vec<usize>, Error> {
    let left: Vec<usize> = remaining.iter().map(|position| *position as usize).collect();
    let ascending = left.windows(2).all(|pair| pair[0] < pair[1]);
    let in_range = left.last().is_none_or(|last| *last < asked.len());
    if !ascending || !in_range || results.is_empty() || results.len() + left.len() != asked.len() {
        return Err(Error::InvalidResponse(format!(
            "batch get of {} keys returned {} results and {} remaining positions",
            asked.len(),
            results.len(),
            left.len()
        )));
    }
    let mut left_positions = left.iter().peekable();
    let answered =
        (0..asked.len()).filter(|position| left_positions.next_if(|left| **left == *position).is_none());
    for (position, result) in answered.zip(results) {
        if result.key != asked[position] {
            return Err(Error::InvalidResponse(format!(
                "batch get answered key {} where {} was asked",
                describe_key(&result.key),
                describe_key(&asked[position])
            )));
        }
    }
    Ok(left)
}

/// Length of the request id every write carries.
pub const REQUEST_ID_LEN: usize = 16;

/// An async client of a ringkv cluster, talking to its routers.
///
/// Cheap to clone: clones share the connections. Connections are opened lazily on first
/// use. Each operation tries the routers in rotation on transport errors and
/// UNAVAILABLE answers, within [`ClientConfig::request_timeout`] and
/// [`ClientConfig::max_attempts`]; a router that answered stays the preferred one.
#[derive(Clone, Debug)]
pub struct Client {
    routers: Arc<Routers>,
}

impl Client {
    /// Creates a client of the routers at `endpoints` (`host:port` or `http://host:port`)
    /// with the default [`ClientConfig`]. Nothing is connected until the first call.
    pub async fn connect(endpoints: Vec<String>) -> Result<Client, Error> {
        Client::connect_with(endpoints, ClientConfig::default()).await
    }

    /// Like [`Client::connect`] with an explicit configuration.
    pub async fn connect_with(endpoints: Vec<String>, config: ClientConfig) -> Result<Client, Error> {
        Ok(Client {
            routers: Arc::new(Routers::new(&endpoints, config)?),
        })
    }

    /// The router addresses (`host:port`), in rotation order.
    pub fn endpoints(&self) -> Vec<String> {
        self.routers.addresses()
    }

    /// The configuration in use.
    pub fn config(&self) -> &ClientConfig {
        self.routers.config()
    }

    pub(crate) fn routers(&self) -> &Routers {
        &self.routers
    }

    /// One `Kv` call with failover: `message` as a frame (`frame` makes it, `pick` takes its
    /// answer) on the router's pipeline, or as the unary call `unary` makes when it does not
    /// go framed (`pipeline.rs`).
    async fn kv_call<M, T, U, UF>(
        &self,
        kind: OpKind,
        operation: &str,
        message: M,
        frame: fn(M) -> Call,
        pick: fn(Answer) -> Option<T>,
        unary: U,
    ) -> Result<T, Error>
    where
        M: Clone,
        U: Fn(KvClient<AuthChannel>, tonic::Request<M>) -> UF,
        UF: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let max_bytes = self.routers.config().max_message_bytes;
        let unary = &unary;
        self.routers
            .call_on(kind, operation, |router, timeout| {
                let (pipeline, channel, message) = (router.pipeline(), router.channel(), message.clone());
                async move {
                    if let Some(answered) = pipeline.call(frame(message.clone()), timeout).await {
                        return answered
                            .and_then(|answer| expect(answer, pick))
                            .map(tonic::Response::new);
                    }
                    unary(kv_client(channel, max_bytes), with_deadline(message, timeout)).await
                }
            })
            .await
    }

    /// Reads `key` linearizably; `None` when it is absent.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Versioned>, Error> {
        self.get_with(key, ReadConsistency::Linearizable).await
    }

    /// Reads `key` with the given consistency; `None` when it is absent.
    pub async fn get_with(
        &self,
        key: impl AsRef<[u8]>,
        consistency: ReadConsistency,
    ) -> Result<Option<Versioned>, Error> {
        self.get_inner(key.as_ref(), consistency, false).await
    }

    /// [`Client::get_with`], or (`uncommitted`) the newest value with provisional ones.
    pub(crate) async fn get_inner(
        &self,
        key: &[u8],
        consistency: ReadConsistency,
        uncommitted: bool,
    ) -> Result<Option<Versioned>, Error> {
        let message = proto::GetRequest {
            key: checked_key(key)?,
            consistency: proto::Consistency::from(consistency) as i32,
            read_ts: consistency.read_ts(),
            read_uncommitted: uncommitted,
        };
        let response = self
            .kv_call(
                OpKind::Read,
                "get",
                message,
                Call::Get,
                |answer| match answer {
                    Answer::Get(response) => Some(response),
                    _ => None,
                },
                |mut kv, request| async move { kv.get(request).await },
            )
            .await?;
        Ok(versioned(response.found, response.value, response.version))
    }

    /// Stores `value` under `key`; returns the new version.
    pub async fn put(&self, key: impl AsRef<[u8]>, value: impl Into<Vec<u8>>) -> Result<u64, Error> {
        let message = proto::PutRequest {
            ttl_ms: 0,
            expires_at_ts: 0,
            key: checked_key(key.as_ref())?,
            value: value.into(),
            request_id: new_request_id(),
            lease: 0,
        };
        let response = self
            .kv_call(
                OpKind::Write,
                "put",
                message,
                Call::Put,
                |answer| match answer {
                    Answer::Put(response) => Some(response),
                    _ => None,
                },
                |mut kv, request| async move { kv.put(request).await },
            )
            .await?;
        Ok(response.version)
    }

    /// Deletes `key`; returns whether a value existed.
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<bool, Error> {
        let message = proto::DeleteRequest {
            key: checked_key(key.as_ref())?,
            request_id: new_request_id(),
        };
        let response = self
            .kv_call(
                OpKind::Write,
                "delete",
                message,
                Call::Delete,
                |answer| match answer {
                    Answer::Delete(response) => Some(response),
                    _ => None,
                },
                |mut kv, request| async move { kv.delete(request).await },
            )
            .await?;
        Ok(response.existed)
    }

    /// Atomically replaces `key` if its version is `expected_version` (0 = the key must
    /// be absent). `new_value: None` deletes the key instead of storing a value.
    pub async fn compare_and_swap(
        &self,
        key: impl AsRef<[u8]>,
        expected_version: u64,
        new_value: Option<Vec<u8>>,
    ) -> Result<CasOutcome, Error> {
        let delete = new_value.is_none();
        let message = proto::CompareAndSwapRequest {
            ttl_ms: 0,
            expires_at_ts: 0,
            key: checked_key(key.as_ref())?,
            expected_version,
            new_value: new_value.unwrap_or_default(),
            delete,
            request_id: new_request_id(),
        };
        let response = self
            .kv_call(
                OpKind::Write,
                "compare-and-swap",
                message,
                Call::CompareAndSwap,
                |answer| match answer {
                    Answer::CompareAndSwap(response) => Some(response),
                    _ => None,
                },
                |mut kv, request| async move { kv.compare_and_swap(request).await },
            )
            .await?;
        Ok(CasOutcome::from(response))
    }

    /// Reads many keys linearizably; one result per key, in order. Values that do not fit
    /// in one reply come in several (see [`Client::batch_get_with`]).
    pub async fn batch_get<K: AsRef<[u8]>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<Vec<Option<Versioned>>, Error> {
        self.batch_get_with(keys, ReadConsistency::Linearizable).await
    }

    /// Reads many keys with the given consistency; one result per key, in order.
    ///
    /// A router's reply holds at most 3.5 MiB of values (so that any gRPC client can receive
    /// it): the keys that do not fit are asked for again, in as many calls as it takes. The
    /// answer is the same as one call's, but for [`ReadConsistency::Linearizable`] and
    /// [`ReadConsistency::Stale`] each call reads when it is made (as each shard of one call
    /// does): use [`ReadConsistency::At`] for one snapshot of every key.
    pub async fn batch_get_with<K: AsRef<[u8]>>(
        &self,
        keys: impl IntoIterator<Item = K>,
        consistency: ReadConsistency,
    ) -> Result<Vec<Option<Versioned>>, Error> {
        self.batch_get_inner(keys, consistency, false).await
    }

    /// [`Client::batch_get_with`], or (`uncommitted`) the newest values with provisional
    /// ones.
    ///
    /// A router answers at most one reply's byte budget of values at a time (3.5 MiB,
    /// `ringkv_proto::budget`): the keys it leaves out are asked for again, page after page,
    /// until every key is answered. Each page is read when it is asked for: like the shards
    /// of one batch, pages are not one snapshot unless the consistency names a timestamp.
    pub(crate) async fn batch_get_inner<K: AsRef<[u8]>>(
        &self,
        keys: impl IntoIterator<Item = K>,
        consistency: ReadConsistency,
        uncommitted: bool,
    ) -> Result<Vec<Option<Versioned>>, Error> {
        let keys = keys
            .into_iter()
            .map(|key| checked_key(key.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut values: Vec<Option<Option<Versioned>>> = vec![None; keys.len()];
        // Positions in `keys` of the keys not answered yet.
        let mut pending: Vec<usize> = (0..keys.len()).collect();
        let max_bytes = self.routers.config().max_message_bytes;
        while !pending.is_empty() {
            let message = proto::BatchGetRequest {
                keys: pending.iter().map(|index| keys[*index].clone()).collect(),
                consistency: proto::Consistency::from(consistency) as i32,
                read_ts: consistency.read_ts(),
                read_uncommitted: uncommitted,
                allow_paging: true,
            };
            let response = self
                .routers
                .call(OpKind::Read, "batch-get", |channel, timeout| {
                    let request = with_deadline(message.clone(), timeout);
                    async move { kv_client(channel, max_bytes).batch_get(request).await }
                })
                .await?;
            let left = answered_page(&message.keys, &response.results, &response.remaining)?;
            let mut left_positions = left.iter().peekable();
            let mut results = response.results.into_iter();
            for (position, index) in pending.iter().enumerate() {
                if left_positions.next_if(|left| **left == position).is_some() {
                    continue;
                }
                if let Some(result) = results.next() {
                    values[*index] = Some(versioned(result.found, result.value, result.version));
                }
            }
            pending = left.iter().map(|position| pending[*position]).collect();
        }
        values
            .into_iter()
            .map(|value| {
                value.ok_or_else(|| Error::InvalidResponse("a batch get left a key unanswered".to_string()))
            })
            .collect()
    }

    /// Stores many entries (atomic per shard, not across shards); returns the version of
    /// each entry, in order. Like [`Client::batch_write`], a batch that fails after it
    /// reached a router may be partly applied: that is [`Error::OutcomeUnknown`].
    pub async fn batch_put<K: AsRef<[u8]>, V: Into<Vec<u8>>>(
        &self,
        entries: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Vec<u64>, Error> {
        let entries = entries
            .into_iter()
            .map(|(key, value)| {
                Ok(proto::KeyValue {
                    key: checked_key(key.as_ref())?,
                    value: value.into(),
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let expected = entries.len();
        let message = proto::BatchPutRequest {
            entries,
            request_id: new_request_id(),
        };
        let max_bytes = self.routers.config().max_message_bytes;
        // Each shard applies its part on its own: a failure after the batch reached a
        // router may follow a partial application.
        let response = self
            .routers
            .call(OpKind::StepwiseWrite, "batch-put", |channel, timeout| {
                let request = with_deadline(message.clone(), timeout);
                async move { kv_client(channel, max_bytes).batch_put(request).await }
            })
            .await?;
        if response.versions.len() != expected {
            // The batch was applied: report the mismatch without calling it a failure.
            return Err(Error::OutcomeUnknown(format!(
                "batch put of {expected} entries returned {} versions",
                response.versions.len()
            )));
        }
        Ok(response.versions)
    }

    /// Applies puts and deletes in one batch; returns one result per mutation, in order.
    ///
    /// The batch is atomic per shard (one Raft entry per shard), not across shards. A key
    /// may appear only once per batch (checked locally). Retries reuse the batch's request
    /// id, so each shard applies its part at most once. When the batch fails after it
    /// reached a router, some shards may have applied their part: that is reported as
    /// [`Error::OutcomeUnknown`], never as a plain failure (read the keys, or write the
    /// batch again).
    ///
    /// ```no_run
    /// use ringkv_client::{Client, Mutation};
    ///
    /// # async fn example(client: Client) -> Result<(), ringkv_client::Error> {
    /// let results = client
    ///     .batch_write(vec![Mutation::put("a", "1"), Mutation::delete("b")])
    ///     .await?;
    /// println!("a is at version {}; b existed: {}", results[0].version, results[1].existed);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn batch_write(
        &self,
        mutations: impl IntoIterator<Item = Mutation>,
    ) -> Result<Vec<MutationResult>, Error> {
        let mut seen = HashSet::new();
        let mutations = mutations
            .into_iter()
            .map(|mutation| {
                let key = checked_key(mutation.key())?;
                if !seen.insert(key) {
                    return Err(Error::InvalidArgument(format!(
                        "key {} appears more than once in the batch",
                        describe_key(mutation.key())
                    )));
                }
                Ok(proto::Mutation::from(mutation))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        if mutations.is_empty() {
            return Ok(Vec::new());
        }
        let expected = mutations.len();
        let message = proto::BatchWriteRequest {
            mutations,
            request_id: new_request_id(),
        };
        let max_bytes = self.routers.config().max_message_bytes;
        let response = self
            .routers
            .call(OpKind::StepwiseWrite, "batch-write", |channel, timeout| {
                let request = with_deadline(message.clone(), timeout);
                async move { kv_client(channel, max_bytes).batch_write(request).await }
            })
            .await?;
        if response.results.len() != expected {
            // The batch was applied: report the mismatch without calling it a failure.
            return Err(Error::OutcomeUnknown(format!(
                "batch write of {expected} mutations returned {} results",
                response.results.len()
            )));
        }
        Ok(response.results.into_iter().map(MutationResult::from).collect())
    }

    /// Reads one page of `range` in key order: at most [`ScanOptions::limit`] entries
    /// (default [`DEFAULT_SCAN_PAGE_LIMIT`]), starting after `token` when given.
    ///
    /// Pass [`ScanPage::next`] back, with the same range and options, for the next page;
    /// it is `None` once the range is exhausted. A page holds at most one reply's byte
    /// budget of entries (3.5 MiB), so it may hold fewer than the limit while more remain:
    /// `next` is what tells (or use [`Client::scan_stream`], which follows the pages). Each shard's part is linearizable when
    /// that shard answers (or possibly stale with [`ReadConsistency::Stale`]); the pages
    /// are not one snapshot of the whole range. Retried on another router on transport
    /// errors, within the request timeout.
    ///
    /// ```no_run
    /// use ringkv_client::{Client, KeyRange, ScanOptions};
    ///
    /// # async fn example(client: Client) -> Result<(), ringkv_client::Error> {
    /// let range = KeyRange::prefix("user/");
    /// let options = ScanOptions::new().limit(500);
    /// let mut token = None;
    /// loop {
    ///     let page = client.scan(&range, &options, token.as_ref()).await?;
    ///     for entry in &page.entries {
    ///         println!("{:?} @ {}", entry.key, entry.version);
    ///     }
    ///     match page.next {
    ///         Some(next) => token = Some(next),
    ///         None => break,
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn scan(
        &self,
        range: &KeyRange,
        options: &ScanOptions,
        token: Option<&ContinuationToken>,
    ) -> Result<ScanPage, Error> {
        range.validate()?;
        let limit = options.limit.unwrap_or(DEFAULT_SCAN_PAGE_LIMIT);
        if !(1..=MAX_SCAN_PAGE_LIMIT).contains(&limit) {
            return Err(Error::InvalidArgument(format!(
                "scan page limit must be in 1..={MAX_SCAN_PAGE_LIMIT}, got {limit}"
            )));
        }
        let mut message = scan_request(range, options, limit);
        message.continuation_token = token.map(|token| token.as_bytes().to_vec()).unwrap_or_default();
        let max_bytes = self.routers.config().max_message_bytes;
        let response = self
            .routers
            .call(OpKind::Read, "scan", |channel, timeout| {
                let request = with_deadline(message.clone(), timeout);
                async move { kv_client(channel, max_bytes).scan(request).await }
            })
            .await?;
        let entries =
            ScanCursor::page(range.clone(), options.reverse, limit).accept_page(response.entries)?;
        Ok(ScanPage {
            entries,
            next: ContinuationToken::from_wire(response.continuation_token),
            missing_shards: response.missing_shards,
        })
    }

    /// Streams `range` in key order, in chunks, up to [`ScanOptions::limit`] entries in
    /// all (default: the whole range).
    ///
    /// Nothing is sent until the stream is polled. When the stream breaks on a transient
    /// error (connection lost, router unavailable, nothing received within
    /// [`ClientConfig::stream_idle_timeout`]) it is reopened, on another router if
    /// needed, after the last entry received, so every key is yielded once. It ends with
    /// an error after [`ClientConfig::max_attempts`] breaks in a row without progress, or
    /// on a definite error. The request timeout bounds opening the stream, not the whole
    /// scan: wrap the stream in your own timeout to bound that.
    ///
    /// Items are [`ScanPage`] chunks (each with its resume token and any missing shards);
    /// [`ScanStream::entries`] flattens them to entries.
    ///
    /// ```no_run
    /// use futures::TryStreamExt;
    /// use ringkv_client::{Client, KeyRange, ScanOptions};
    ///
    /// # async fn example(client: Client) -> Result<(), ringkv_client::Error> {
    /// let mut chunks = client.scan_stream(&KeyRange::all(), &ScanOptions::new().keys_only(true));
    /// let mut keys = 0;
    /// while let Some(chunk) = chunks.try_next().await? {
    ///     keys += chunk.entries.len();
    /// }
    /// println!("{keys} keys");
    /// # Ok(())
    /// # }
    /// ```
    pub fn scan_stream(&self, range: &KeyRange, options: &ScanOptions) -> ScanStream {
        ScanStream::new(Arc::clone(&self.routers), range, options)
    }

    /// Watches the changes of a key, a prefix or a range: every put and delete committed
    /// after `options.start_ts` (0: from now), per key in commit order. A break (a router
    /// gone, the router's stream deadline) is resumed from each shard's progress, without
    /// losing or repeating an event. Lease records (the reserved keyspace `__ringkv/`) are
    /// left out unless the target lies inside that prefix.
    ///
    /// ```no_run
    /// use futures::TryStreamExt;
    /// use ringkv_client::{Client, WatchOptions, WatchTarget};
    ///
    /// # async fn example(client: Client) -> Result<(), ringkv_client::Error> {
    /// let mut events = client.watch(WatchOptions::new(WatchTarget::Prefix(b"user/".to_vec())));
    /// while let Some(event) = events.try_next().await? {
    ///     println!("{:?} {:?} at {}", event.kind, event.key, event.commit_ts);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn watch(&self, options: WatchOptions) -> WatchStream {
        WatchStream::new(Arc::clone(&self.routers), options, WatchPosition::default())
    }

    /// Resumes a watch from `position` ([`WatchStream::position`] of an earlier one with
    /// the same target): exactly the events it had not delivered.
    pub fn watch_from(&self, options: WatchOptions, position: WatchPosition) -> WatchStream {
        WatchStream::new(Arc::clone(&self.routers), options, position)
    }

    /// Counts the keys of `range`.
    ///
    /// Each shard's part is exact when that shard answers; the total is not one snapshot
    /// across shards. With [`CountOptions::allow_partial`], shards that cannot answer are
    /// left out and named in [`CountResult::missing_shards`].
    ///
    /// ```no_run
    /// use ringkv_client::{Client, CountOptions, KeyRange};
    ///
    /// # async fn example(client: Client) -> Result<(), ringkv_client::Error> {
    /// let result = client.count(&KeyRange::prefix("user/"), &CountOptions::new()).await?;
    /// println!("{} users", result.count);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn count(&self, range: &KeyRange, options: &CountOptions) -> Result<CountResult, Error> {
        self.count_with_progress(range, options, |_| {}).await
    }

    /// Like [`Client::count`], calling `on_progress` with every progress report of the
    /// router, the final one (`done`) included.
    ///
    /// The router reports as each shard finishes. A count broken by a transient error
    /// (or silent for [`ClientConfig::stream_idle_timeout`]) is started over, at most
    /// [`ClientConfig::max_attempts`] times in all, so the reported progress can go back.
    /// The request timeout bounds opening the count, not the whole count.
    ///
    /// ```no_run
    /// use ringkv_client::{Client, CountOptions, KeyRange};
    ///
    /// # async fn example(client: Client) -> Result<(), ringkv_client::Error> {
    /// let result = client
    ///     .count_with_progress(&KeyRange::all(), &CountOptions::new(), |progress| {
    ///         eprintln!(
    ///             "{} keys so far, {}/{} shards",
    ///             progress.count, progress.shards_done, progress.shards_total
    ///         );
    ///     })
    ///     .await?;
    /// println!("{} keys", result.count);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn count_with_progress(
        &self,
        range: &KeyRange,
        options: &CountOptions,
        mut on_progress: impl FnMut(&CountProgress),
    ) -> Result<CountResult, Error> {
        range.validate()?;
        let WireRange { start, end, prefix } = range.to_wire();
        let message = proto::CountRequest {
            start,
            end,
            prefix,
            consistency: proto::Consistency::from(options.consistency) as i32,
            allow_partial: options.allow_partial,
            read_ts: options.consistency.read_ts(),
        };
        let max_bytes = self.routers.config().max_message_bytes;
        let idle = self.routers.config().stream_idle_timeout;
        // A restarted count starts from zero: every restart counts against the budget.
        let mut budget = ResumeBudget::new(self.routers.config().max_attempts);
        loop {
            let mut stream = self
                .routers
                .call(OpKind::Read, "count", |channel, timeout| {
                    // The router applies the deadline to each round of shard calls; tonic
                    // bounds only the wait for the response headers with it, not the stream.
                    let request = with_deadline(message.clone(), timeout);
                    async move { kv_client(channel, max_bytes).count(request).await }
                })
                .await?;
            let error = loop {
                match tokio::time::timeout(idle, stream.message()).await {
                    Ok(Ok(Some(response))) => {
                        let progress = CountProgress::from(response);
                        on_progress(&progress);
                        if progress.done {
                            return Ok(CountResult {
                                count: progress.count,
                                shards_total: progress.shards_total,
                                missing_shards: progress.missing_shards,
                            });
                        }
                    }
                    Ok(Ok(None)) => {
                        break Error::Unavailable("the count stream ended before its final report".into())
                    }
                    Ok(Err(status)) => break Failure::from_status(&status).error,
                    Err(_elapsed) => {
                        break Error::DeadlineExceeded(format!("count: no progress report within {idle:?}"))
                    }
                }
            };
            let Some(round) = budget.on_break(&error) else {
                return Err(error);
            };
            debug!(error = %error, round, "count stream broke; starting over");
            self.routers.resume_backoff(round).await;
        }
    }

    /// Deletes every key of `range`; returns how many were deleted.
    ///
    /// The whole key space is refused here ([`Error::InvalidArgument`]): use
    /// [`Client::delete_all`]. The delete is atomic per chunk of a shard, not as a whole:
    /// when it fails or times out part of the range may be deleted, which is reported as
    /// [`Error::OutcomeUnknown`]; deleting the range again is safe. Large ranges may need
    /// a longer [`ClientConfig::request_timeout`].
    ///
    /// ```no_run
    /// use ringkv_client::{Client, KeyRange};
    ///
    /// # async fn example(client: Client) -> Result<(), ringkv_client::Error> {
    /// let deleted = client.delete_range(&KeyRange::between("log/2023", "log/2024")).await?;
    /// println!("deleted {deleted} keys");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn delete_range(&self, range: &KeyRange) -> Result<u64, Error> {
        range.validate()?;
        if range.is_all() {
            return Err(Error::InvalidArgument(
                "delete_range of the whole key space is refused: call delete_all to delete every key".into(),
            ));
        }
        self.delete_range_request(range.to_wire(), false).await
    }

    /// Deletes every key of the cluster; returns how many were deleted. Like
    /// [`Client::delete_range`], it may be partly applied when it fails. Lease records (the
    /// reserved keyspace `__ringkv/`) stay, as scans and counts leave them out: a range
    /// inside that prefix deletes them.
    ///
    /// ```no_run
    /// # async fn example(client: ringkv_client::Client) -> Result<(), ringkv_client::Error> {
    /// let deleted = client.delete_all().await?;
    /// println!("the cluster is empty ({deleted} keys deleted)");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn delete_all(&self) -> Result<u64, Error> {
        self.delete_range_request(WireRange::default(), true).await
    }

    async fn delete_range_request(&self, range: WireRange, all: bool) -> Result<u64, Error> {
        let message = proto::DeleteRangeRequest {
            start: range.start,
            end: range.end,
            prefix: range.prefix,
            request_id: new_request_id(),
            all,
        };
        let max_bytes = self.routers.config().max_message_bytes;
        let response = self
            .routers
            .call(OpKind::StepwiseWrite, "delete-range", |channel, timeout| {
                let request = with_deadline(message.clone(), timeout);
                async move { kv_client(channel, max_bytes).delete_range(request).await }
            })
            .await
            .map_err(|error| match error {
                Error::OutcomeUnknown(message) => Error::OutcomeUnknown(format!(
                    "{message} (part of the range may be deleted; deleting it again is safe)"
                )),
                other => other,
            })?;
        Ok(response.deleted)
    }

    /// The whole cluster as a router sees it: ring, nodes, shards and leaders.
    pub async fn cluster_status(&self) -> Result<proto::ClusterStatusResponse, Error> {
        let max_bytes = self.routers.config().max_message_bytes;
        self.routers
            .call(OpKind::Read, "cluster status", |channel, timeout| {
                let request = with_deadline(proto::ClusterStatusRequest {}, timeout);
                async move { admin_client(channel, max_bytes).cluster_status(request).await }
            })
            .await
    }

    /// Adds a running node (started with an empty data directory) to the ring. It joins as
    /// `joining`; shard leaders then move replicas to it, and it becomes `active` when it
    /// holds every replica placement gives it ([`Client::rebalance_status`] shows the
    /// progress). Idempotent: adding a member again answers `changed = false`.
    pub async fn add_node(&self, node_id: u64, addr: &str) -> Result<proto::RingChangeResponse, Error> {
        let max_bytes = self.routers.config().max_message_bytes;
        self.routers
            .call(OpKind::Read, "add node", |channel, timeout| {
                let request = with_deadline(
                    proto::AddNodeRequest {
                        node_id,
                        addr: addr.to_string(),
                    },
                    timeout,
                );
                async move { admin_client(channel, max_bytes).add_node(request).await }
            })
            .await
    }

    /// Changes the permission table (issue 15): a role, a grant, a user, or enabling
    /// permissions. Needs admin. Answers the table after the change; a repeated change that
    /// already took effect is refused with the reason (e.g. the role already exists).
    pub async fn change_auth(
        &self,
        change: proto::change_auth_request::Change,
    ) -> Result<proto::ChangeAuthResponse, Error> {
        let max_bytes = self.routers.config().max_message_bytes;
        self.routers
            .call(OpKind::Write, "change permissions", |channel, timeout| {
                let request = with_deadline(
                    proto::ChangeAuthRequest {
                        change: Some(change.clone()),
                    },
                    timeout,
                );
                async move { admin_client(channel, max_bytes).change_auth(request).await }
            })
            .await
    }

    /// Logs in as `user` with `password` (issue 15): a token and its expiry (unix ms), for
    /// [`ClientAuth::Token`](crate::ClientAuth::Token) or `kvctl --token`. A wrong user or
    /// password is UNAUTHENTICATED (the same message either way).
    pub async fn login(&self, user: &str, password: &str) -> Result<proto::LoginResponse, Error> {
        let login = proto::LoginRequest {
            user: user.to_string(),
            password: password.to_string(),
        };
        self.routers
            .call(OpKind::Read, "log in", |channel, timeout| {
                let request = with_deadline(login.clone(), timeout);
                async move { proto::auth_client::AuthClient::new(channel).login(request).await }
            })
            .await
    }

    /// Sets `user`'s own password to `new_password` if `old_password` is its current one
    /// (issue 15; no admin needed). A wrong user or old password is UNAUTHENTICATED, like a
    /// failed login, and counts as one (too many: RESOURCE_EXHAUSTED, with how long to wait).
    /// If an attempt took effect but its answer was lost, a retry is refused as a wrong old
    /// password: logging in with the new one tells.
    pub async fn change_password(
        &self,
        user: &str,
        old_password: &str,
        new_password: &str,
    ) -> Result<(), Error> {
        let change = proto::ChangePasswordRequest {
            user: user.to_string(),
            old_password: old_password.to_string(),
            new_password: new_password.to_string(),
        };
        self.routers
            .call(OpKind::Write, "change password", |channel, timeout| {
                let request = with_deadline(change.clone(), timeout);
                async move {
                    proto::auth_client::AuthClient::new(channel)
                        .change_password(request)
                        .await
                }
            })
            .await
            .map(|_: proto::ChangePasswordResponse| ())
    }

    /// The token this client sends and its expiry (unix ms; `None` for a given token),
    /// logging in first if it authenticates with a password; `None` without credentials.
    pub async fn token(&self) -> Result<Option<(String, Option<u64>)>, Error> {
        self.routers.token().await
    }

    /// The permission table (roles, users, whether enforced) and who the caller is taken
    /// for. Needs admin.
    pub async fn get_auth(&self) -> Result<proto::GetAuthResponse, Error> {
        let max_bytes = self.routers.config().max_message_bytes;
        self.routers
            .call(OpKind::Read, "read permissions", |channel, timeout| {
                let request = with_deadline(proto::GetAuthRequest {}, timeout);
                async move { admin_client(channel, max_bytes).get_auth(request).await }
            })
            .await
    }

    /// Starts decommissioning a node: every replica moves away, then the node becomes
    /// `removed` and can be stopped. Idempotent.
    pub async fn decommission_node(&self, node_id: u64) -> Result<proto::RingChangeResponse, Error> {
        let max_bytes = self.routers.config().max_message_bytes;
        self.routers
            .call(OpKind::Read, "decommission node", |channel, timeout| {
                let request = with_deadline(proto::DecommissionNodeRequest { node_id }, timeout);
                async move { admin_client(channel, max_bytes).decommission_node(request).await }
            })
            .await
    }

    /// Hands the leadership of `shard` to `to_node`, one of its voters. Writes to the shard
    /// pause for about a round trip while the target catches up and takes over.
    pub async fn transfer_leader(
        &self,
        shard: u32,
        to_node: u64,
    ) -> Result<proto::TransferLeaderResponse, Error> {
        let max_bytes = self.routers.config().max_message_bytes;
        self.routers
            .call(OpKind::Read, "transfer leader", |channel, timeout| {
                let request = with_deadline(
                    proto::TransferLeaderRequest {
                        shard_id: shard,
                        to_node,
                    },
                    timeout,
                );
                async move { admin_client(channel, max_bytes).transfer_leader(request).await }
            })
            .await
    }

    /// Which replicas a ring change would move, without applying it.
    pub async fn plan_ring_change(
        &self,
        change: proto::plan_ring_change_request::Change,
    ) -> Result<proto::PlanRingChangeResponse, Error> {
        let max_bytes = self.routers.config().max_message_bytes;
        self.routers
            .call(OpKind::Read, "plan ring change", |channel, timeout| {
                let request = with_deadline(
                    proto::PlanRingChangeRequest {
                        change: Some(change.clone()),
                    },
                    timeout,
                );
                async move { admin_client(channel, max_bytes).plan_ring_change(request).await }
            })
            .await
    }

    /// One timestamp of the cluster's timestamp oracle: above every timestamp handed out
    /// before this call began (`physical_ms << 18 | logical`; see [`Client::timestamps`]).
    pub async fn timestamp(&self) -> Result<u64, Error> {
        Ok(self.timestamps(1).await?.start)
    }

    /// `count` (1..=65536) consecutive timestamps of the cluster's timestamp oracle, each
    /// above every timestamp handed out before this call began. A timestamp is
    /// `physical_ms << 18 | logical`: milliseconds since the Unix epoch (the system
    /// leader's clock, never going back) and an 18-bit counter. A retry after a lost
    /// answer simply gets newer timestamps.
    pub async fn timestamps(&self, count: u32) -> Result<Range<u64>, Error> {
        if count == 0 || count > 1 << 16 {
            return Err(Error::InvalidArgument(format!(
                "count must be between 1 and 65536, got {count}"
            )));
        }
        let response = self
            .routers
            .call(OpKind::Read, "timestamps", |channel, timeout| {
                let request = with_deadline(proto::GetTimestampsRequest { count }, timeout);
                async move { tso_client(channel).get_timestamps(request).await }
            })
            .await?;
        if response.first == 0 || response.count != count {
            return Err(Error::InvalidResponse(format!(
                "the router answered {} timestamps from {} for {count}",
                response.count, response.first
            )));
        }
        Ok(response.first..response.first + u64::from(count))
    }

    /// Keeps every node's version history from `read_ts` on for `ttl` (renew before it
    /// lapses; a zero `ttl` releases), so reads at `read_ts` stay possible for longer than
    /// the nodes' `--mvcc-window-ms` — what a backup needs. `hold_id` (non-zero, random)
    /// names the hold. Needs admin. Fails naming the nodes that did not take it.
    pub async fn hold_history(
        &self,
        hold_id: u64,
        read_ts: u64,
        ttl: std::time::Duration,
    ) -> Result<u32, Error> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let max_bytes = self.routers.config().max_message_bytes;
        let response = self
            .routers
            .call(OpKind::Read, "hold history", |channel, timeout| {
                let request = with_deadline(
                    proto::HoldHistoryRequest {
                        hold_id,
                        read_ts,
                        ttl_ms,
                    },
                    timeout,
                );
                async move { admin_client(channel, max_bytes).hold_history(request).await }
            })
            .await?;
        Ok(response.nodes)
    }

    /// How far shard replicas are from the placement of the current ring.
    pub async fn rebalance_status(&self) -> Result<proto::RebalanceStatusResponse, Error> {
        let max_bytes = self.routers.config().max_message_bytes;
        self.routers
            .call(OpKind::Read, "rebalance status", |channel, timeout| {
                let request = with_deadline(proto::RebalanceStatusRequest {}, timeout);
                async move { admin_client(channel, max_bytes).rebalance_status(request).await }
            })
            .await
    }
}

/// A fresh random request id for one logical write (reused by its retries).
pub fn new_request_id() -> Vec<u8> {
    rand::random::<[u8; REQUEST_ID_LEN]>().to_vec()
}

/// Rejects the empty key locally (the contract requires at least one byte).
pub(crate) fn checked_key(key: &[u8]) -> Result<Vec<u8>, Error> {
    if key.is_empty() {
        return Err(Error::InvalidArgument("key must not be empty".into()));
    }
    Ok(key.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page of a batch get answers every key it does not name in `remaining`, in order,
    /// at least one; anything else breaks the contract.
    #[test]
    fn batch_get_pages_are_checked() {
        let asked: Vec<Vec<u8>> = [b"a", b"b", b"c"].iter().map(|key| key.to_vec()).collect();
        let result = |key: &[u8]| proto::KeyValueResult {
            expires_at_ts: 0,
            key: key.to_vec(),
            found: true,
            value: b"v".to_vec(),
            version: 1,
        };
        let page = [result(b"a"), result(b"c")];
        assert_eq!(answered_page(&asked, &page, &[1]).ok(), Some(vec![1]));
        let whole = [result(b"a"), result(b"b"), result(b"c")];
        assert_eq!(answered_page(&asked, &whole, &[]).ok(), Some(vec![]));
        let bad: [(&[proto::KeyValueResult], &[u32]); 5] = [
            (&page, &[0]),          // answers a where b... is left: keys do not match
            (&page[..1], &[1]),     // too few results
            (&[], &[0, 1, 2]),      // no progress
            (&whole[..2], &[2, 2]), // not ascending
            (&whole[..2], &[3]),    // out of range
        ];
        for (results, remaining) in bad {
            assert!(
                answered_page(&asked, results, remaining).is_err(),
                "{remaining:?}"
            );
        }
    }

    /// Request ids are 16 random bytes, different each time.
    #[test]
    fn request_ids_are_random_16_bytes() {
        let first = new_request_id();
        let second = new_request_id();
        assert_eq!(first.len(), REQUEST_ID_LEN);
        assert_ne!(first, second);
    }

    /// The empty key is rejected before any network call.
    #[test]
    fn empty_key_is_invalid() {
        assert!(matches!(checked_key(b""), Err(Error::InvalidArgument(_))));
        assert_eq!(checked_key(b"k").expect("valid"), b"k".to_vec());
    }

    /// An empty endpoint list is rejected, duplicates are collapsed.
    #[tokio::test]
    async fn connect_validates_endpoints() {
        assert!(matches!(
            Client::connect(Vec::new()).await,
            Err(Error::InvalidArgument(_))
        ));
        let client = Client::connect(vec![
            "127.0.0.1:1".into(),
            "http://127.0.0.1:1".into(),
            "127.0.0.1:2".into(),
        ])
        .await
        .expect("valid endpoints");
        assert_eq!(client.endpoints(), vec!["127.0.0.1:1", "127.0.0.1:2"]);
    }
}
