//! Watches (`Kv.Watch`): [`WatchStream`], the changes of a key, a prefix or a range,
//! resumed from the last progress of every shard when the stream breaks (a router gone,
//! its total stream deadline), without losing or repeating an event.
//!
//! What was delivered is a [`WatchPosition`] (per shard: the progress, and the events
//! delivered above it); [`WatchStream::position`] hands it out so a watch can be resumed
//! later with [`Client::watch_from`](crate::Client::watch_from), in another process too
//! (`WatchPosition::resume` is what goes on the wire).

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt};
use ringkv_proto::v1 as proto;
pub use ringkv_proto::watch::WatchPosition;
use tonic::codec::Streaming;
use tracing::debug;

use crate::error::Failure;
use crate::retry::{OpKind, ResumeBudget};
use crate::routers::{kv_client, with_deadline, Routers};
use crate::Error;

/// What a watch follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchTarget {
    Key(Vec<u8>),
    /// Every key starting with it (empty: every key).
    Prefix(Vec<u8>),
    /// `[start, end)`; an empty end: no upper bound.
    Range {
        start: Vec<u8>,
        end: Vec<u8>,
    },
}

/// A watch's target and where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchOptions {
    pub target: WatchTarget,
    /// Changes committed after this oracle timestamp (a revision); 0: from now.
    pub start_ts: u64,
    /// Events without values.
    pub keys_only: bool,
}

impl WatchOptions {
    /// The changes of `target` from now on.
    pub fn new(target: WatchTarget) -> WatchOptions {
        WatchOptions {
            target,
            start_ts: 0,
            keys_only: false,
        }
    }

    /// From changes committed after `start_ts` on.
    pub fn after(mut self, start_ts: u64) -> WatchOptions {
        self.start_ts = start_ts;
        self
    }

    pub fn keys_only(mut self, keys_only: bool) -> WatchOptions {
        self.keys_only = keys_only;
        self
    }

    fn request(&self, resume: Vec<proto::ShardProgress>) -> proto::WatchRequest {
        use proto::watch_request::Target;
        let target = match &self.target {
            WatchTarget::Key(key) => Target::Key(key.clone()),
            WatchTarget::Prefix(prefix) => Target::Prefix(prefix.clone()),
            WatchTarget::Range { start, end } => Target::Range(proto::KeyRange {
                start: start.clone(),
                end: end.clone(),
            }),
        };
        proto::WatchRequest {
            target: Some(target),
            start_ts: self.start_ts,
            resume,
            keys_only: self.keys_only,
        }
    }
}

/// A put or a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchEventKind {
    Put,
    Delete,
}

/// One change of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: WatchEventKind,
    pub key: Vec<u8>,
    /// The value put (empty for a delete, or with `keys_only`).
    pub value: Vec<u8>,
    /// The key's version after a put (0 for a delete).
    pub version: u64,
    /// The oracle timestamp it committed at.
    pub commit_ts: u64,
    pub shard_id: u32,
}

impl WatchEvent {
    fn from_wire(event: proto::WatchEvent) -> Result<WatchEvent, Error> {
        let kind = match proto::WatchEventType::try_from(event.r#type) {
            Ok(proto::WatchEventType::Put) => WatchEventKind::Put,
            Ok(proto::WatchEventType::Delete) => WatchEventKind::Delete,
            _ => {
                return Err(Error::InvalidResponse(format!(
                    "watch event of unknown type {}",
                    event.r#type
                )))
            }
        };
        Ok(WatchEvent {
            kind,
            key: event.key,
            value: event.value,
            version: event.version,
            commit_ts: event.commit_ts,
            shard_id: event.shard_id,
        })
    }
}

/// A watch, from [`Client::watch`](crate::Client::watch): a [`Stream`] of events, per key
/// in commit order. It ends after one error item: RESOURCE_EXHAUSTED when the reader fell
/// behind the router's or a node's buffer, OUT_OF_RANGE ("compacted") when history from
/// before a shard's progress is gone, or a break the retry budget did not cover.
pub struct WatchStream {
    inner: BoxStream<'static, Result<WatchEvent, Error>>,
    position: Arc<Mutex<WatchPosition>>,
}

impl WatchStream {
    pub(crate) fn new(routers: Arc<Routers>, options: WatchOptions, position: WatchPosition) -> WatchStream {
        let position = Arc::new(Mutex::new(position));
        let budget = ResumeBudget::new(routers.config().max_attempts);
        let state = WatchState {
            routers,
            options,
            position: Arc::clone(&position),
            stream: None,
            pending: Vec::new().into_iter(),
            pending_progress: Vec::new(),
            budget,
            finished: false,
        };
        let inner = stream::unfold(state, |mut state| async move {
            let item = state.next_event().await?;
            Some((item, state))
        })
        .boxed();
        WatchStream { inner, position }
    }

    /// Where the watch got to: every event delivered so far is covered by it, and a watch
    /// resumed from it ([`Client::watch_from`](crate::Client::watch_from)) delivers
    /// exactly the events after them.
    pub fn position(&self) -> WatchPosition {
        self.position
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Stream for WatchStream {
    type Item = Result<WatchEvent, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

impl fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchStream").finish_non_exhaustive()
    }
}

struct WatchState {
    routers: Arc<Routers>,
    options: WatchOptions,
    position: Arc<Mutex<WatchPosition>>,
    stream: Option<Streaming<proto::WatchResponse>>,
    /// Events of the last message not yet yielded: each is admitted to the position as
    /// it is yielded, and the message's progress after the last, so the position covers
    /// what the reader took and no more.
    pending: std::vec::IntoIter<proto::WatchEvent>,
    pending_progress: Vec<proto::ShardProgress>,
    budget: ResumeBudget,
    finished: bool,
}

impl WatchState {
    fn position(&self) -> std::sync::MutexGuard<'_, WatchPosition> {
        self.position.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn next_event(&mut self) -> Option<Result<WatchEvent, Error>> {
        loop {
            match self.take_pending() {
                Ok(Some(event)) => return Some(Ok(event)),
                Ok(None) => {}
                Err(error) => {
                    self.finished = true;
                    return Some(Err(error));
                }
            }
            if self.finished {
                return None;
            }
            let error = match self.stream.as_mut() {
                None => match self.open().await {
                    Ok(stream) => {
                        self.stream = Some(stream);
                        continue;
                    }
                    Err(error) => error,
                },
                Some(stream) => match stream.message().await {
                    Ok(Some(response)) => {
                        if !response.events.is_empty() || !response.progress.is_empty() {
                            self.budget.on_progress();
                        }
                        self.pending = response.events.into_iter();
                        self.pending_progress = response.progress;
                        continue;
                    }
                    Ok(None) => Error::Unavailable("the watch stream ended".into()),
                    Err(status) => Failure::from_status(&status).error,
                },
            };
            self.stream = None;
            let final_error = matches!(error, Error::ResourceExhausted(_));
            let round = (!final_error).then(|| self.budget.on_break(&error)).flatten();
            let Some(round) = round else {
                self.finished = true;
                return Some(Err(error));
            };
            debug!(error = %error, round, "watch broke; resuming from the last progress");
            self.routers.resume_backoff(round).await;
        }
    }

    async fn open(&mut self) -> Result<Streaming<proto::WatchResponse>, Error> {
        let message = self.options.request(self.position().resume());
        let max_bytes = self.routers.config().max_message_bytes;
        self.routers
            .call(OpKind::Read, "watch", |channel, timeout| {
                // The router bounds opening the shard streams by it; the stream has none.
                let request = with_deadline(message.clone(), timeout);
                async move { kv_client(channel, max_bytes).watch(request).await }
            })
            .await
    }

    /// The next pending event not delivered before (admitted to the position now); once
    /// none is left, the pending progress moves the position.
    fn take_pending(&mut self) -> Result<Option<WatchEvent>, Error> {
        let mut position = self.position.lock().unwrap_or_else(PoisonError::into_inner);
        for event in self.pending.by_ref() {
            match position.admit(&event) {
                Ok(true) => return WatchEvent::from_wire(event).map(Some),
                Ok(false) => {}
                Err(too_many) => {
                    return Err(Error::ResourceExhausted(format!(
                        "watch of shard {}: more than {} events above its progress",
                        too_many.shard_id,
                        ringkv_proto::watch::MAX_EVENTS_ABOVE_PROGRESS
                    )))
                }
            }
        }
        for progress in self.pending_progress.drain(..) {
            position.advance(progress.shard_id, progress.ts);
        }
        Ok(None)
    }
}
