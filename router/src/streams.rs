//! Server streams (`ScanStream`, `Count`) under bounds: a pool of stream slots apart from
//! the unary requests' in-flight limit, an idle and a total deadline, and nothing made
//! ahead of the reader.
//!
//! - Slots: at most `max_open_streams` streams are open; one more is refused at once with
//!   RESOURCE_EXHAUSTED. Streams never take `max_inflight_requests` permits, so streams a
//!   client leaves unread cannot starve unary requests.
//! - One message at a time: a stream's task ([`StreamSlots::serve`]) makes the next message
//!   only when the transport asks for it, and hands it over through a one-message channel.
//!   What a stream holds is its own state (a scan's shard pages: `stream_buffer_bytes`)
//!   and the message being made.
//! - Idle deadline: the task waits for the transport to ask for the next message at most
//!   `stream_idle_timeout_ms`. The transport asks as soon as it could queue the last one,
//!   so a stream waiting longer has a reader whose flow-control window stayed shut: the
//!   task cuts it — drops the stream's state (shard pages, shard calls in flight) and its
//!   slot at once — and the reader gets DEADLINE_EXCEEDED after the messages sent before.
//! - Total deadline: a stream open `stream_total_timeout_ms` is cut the same way.
//!
//! Why a task per stream: the transport (hyper) does not poll a stream whose reader's
//! window is shut — it holds the message it took last until the window opens — so a
//! stream run only by the transport's polls could neither notice its reader went idle nor
//! free what it holds. What the transport itself holds for a cut stream (that last message,
//! and the part of the one before that the window did not take, ≤ 2 messages) stays until
//! the client reads, cancels or disconnects: the server cannot reset an HTTP/2 stream it
//! is not polled for.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tonic::Status;

use crate::error::{to_status, RouterError};

/// A server stream of the router's services.
pub type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The bounds of server streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSettings {
    pub max_open_streams: usize,
    /// Longest wait for the reader to ask for the next message.
    pub idle_timeout: Duration,
    /// Longest life of a stream.
    pub total_timeout: Duration,
}

/// The router's stream slots and the tasks of its open streams.
#[derive(Debug, Clone)]
pub struct StreamSlots {
    slots: Arc<Semaphore>,
    settings: StreamSettings,
    /// Every stream's task, joined at shutdown.
    tasks: TaskTracker,
}

/// The slot of one open stream, released on drop.
#[derive(Debug)]
pub struct StreamSlot {
    _permit: OwnedSemaphorePermit,
}

/// Why a stream was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    Idle,
    Expired,
}

impl StreamSlots {
    pub fn new(settings: StreamSettings) -> Self {
        let max_open_streams = settings.max_open_streams.clamp(1, Semaphore::MAX_PERMITS);
        StreamSlots {
            slots: Arc::new(Semaphore::new(max_open_streams)),
            settings: StreamSettings {
                max_open_streams,
                ..settings
            },
            tasks: TaskTracker::new(),
        }
    }

    /// A slot for a new stream, or `TooManyStreams` when every slot is taken.
    pub fn try_open(&self) -> Result<StreamSlot, RouterError> {
        let permit =
            Arc::clone(&self.slots)
                .try_acquire_owned()
                .map_err(|_| RouterError::TooManyStreams {
                    max_open_streams: self.settings.max_open_streams,
                })?;
        Ok(StreamSlot { _permit: permit })
    }

    /// Streams open now.
    #[cfg(test)]
    pub fn open_streams(&self) -> usize {
        self.settings.max_open_streams - self.slots.available_permits()
    }

    /// Serves `inner` to the transport under the stream bounds, holding `slot` until the
    /// stream ends, is cut, or its reader goes away. `inner` is polled by the stream's own
    /// task, only for the message the reader asks for next.
    pub fn serve<T: Send + 'static>(&self, slot: StreamSlot, inner: ResponseStream<T>) -> ResponseStream<T> {
        let (demand_tx, demand_rx) = mpsc::channel(1);
        let (item_tx, item_rx) = mpsc::channel(1);
        self.tasks
            .spawn(produce(inner, slot, self.settings, demand_rx, item_tx));
        Box::pin(Served {
            demand: demand_tx,
            items: item_rx,
            asked: false,
        })
    }

    /// Waits (at most `timeout`) for every stream's task to end. Call after the server
    /// stopped: the transport dropped its streams, so the tasks end at once.
    pub async fn shutdown(&self, timeout: Duration) {
        self.tasks.close();
        if tokio::time::timeout(timeout, self.tasks.wait()).await.is_err() {
            tracing::warn!(
                streams = self.tasks.len(),
                "stream tasks still running after the shutdown timeout"
            );
        }
    }
}

/// The task of one stream: makes each message of `inner` when the reader asks for it, and
/// cuts the stream when the reader asks for nothing within the idle deadline or the stream
/// outlives its total deadline.
async fn produce<T>(
    mut inner: ResponseStream<T>,
    slot: StreamSlot,
    settings: StreamSettings,
    mut demand: mpsc::Receiver<()>,
    items: mpsc::Sender<Result<T, Status>>,
) {
    let expires = Instant::now() + settings.total_timeout;
    let cut = loop {
        let idle_deadline = Instant::now() + settings.idle_timeout;
        let (wait_until, late) = if idle_deadline < expires {
            (idle_deadline, Cut::Idle)
        } else {
            (expires, Cut::Expired)
        };
        match tokio::time::timeout_at(wait_until, demand.recv()).await {
            Ok(Some(())) => {}
            // The transport dropped the stream: the client went away.
            Ok(None) => return,
            Err(_elapsed) => break late,
        }
        let next = tokio::select! {
            next = tokio::time::timeout_at(expires, inner.next()) => next,
            () = items.closed() => return,
        };
        match next {
            Ok(Some(item)) => {
                let last = item.is_err();
                // The reader asked and took the previous message: the channel has room.
                if items.send(item).await.is_err() || last {
                    return;
                }
            }
            Ok(None) => return,
            Err(_elapsed) => break Cut::Expired,
        }
    };
    // Free what the stream holds before telling the reader, whenever it reads.
    drop(inner);
    drop(slot);
    let error = match cut {
        Cut::Idle => RouterError::StreamIdle {
            idle_timeout_ms: settings.idle_timeout.as_millis() as u64,
        },
        Cut::Expired => RouterError::StreamExpired {
            total_timeout_ms: settings.total_timeout.as_millis() as u64,
        },
    };
    tracing::debug!(%error, "stream cut");
    // Room is certain: the reader took every message it asked for.
    let _ = items.try_send(Err(to_status(&error)));
}

/// The transport's side of a served stream: asks the task for one message at a time.
struct Served<T> {
    demand: mpsc::Sender<()>,
    items: mpsc::Receiver<Result<T, Status>>,
    /// A message was asked for and not received yet.
    asked: bool,
}

impl<T> Stream for Served<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if !this.asked {
            // Fails only when the task ended: what it left in `items` is all there is.
            this.asked = this.demand.try_send(()).is_ok();
        }
        match this.items.poll_recv(cx) {
            Poll::Ready(Some(item)) => {
                this.asked = false;
                Poll::Ready(Some(item))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::stream;
    use tonic::Code;

    use super::*;

    const IDLE: Duration = Duration::from_secs(30);
    const TOTAL: Duration = Duration::from_secs(600);

    fn slots(max_open_streams: usize) -> StreamSlots {
        StreamSlots::new(StreamSettings {
            max_open_streams,
            idle_timeout: IDLE,
            total_timeout: TOTAL,
        })
    }

    /// Counts the messages made and whether the stream's state was dropped.
    #[derive(Default)]
    struct Probe {
        made: AtomicUsize,
        dropped: AtomicUsize,
    }

    struct DropFlag(Arc<Probe>);

    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// An endless stream of numbers, recording what it made; each takes `every` of the
    /// (paused) clock to make, as a slow shard page would.
    fn numbers(probe: &Arc<Probe>, every: Duration) -> ResponseStream<u64> {
        let flag = DropFlag(Arc::clone(probe));
        Box::pin(stream::unfold((0u64, flag), move |(next, flag)| async move {
            if !every.is_zero() {
                tokio::time::sleep(every).await;
            }
            flag.0.made.fetch_add(1, Ordering::SeqCst);
            Some((Ok(next), (next + 1, flag)))
        }))
    }

    /// Lets the stream tasks run until they wait (paused time does not advance meanwhile).
    async fn settle() {
        for _ in 0..64 {
            tokio::task::yield_now().await;
        }
    }

    /// Messages are made only as the reader asks: an unread stream makes none ahead.
    #[tokio::test(start_paused = true)]
    async fn nothing_is_made_ahead_of_the_reader() {
        let slots = slots(4);
        let probe = Arc::new(Probe::default());
        let slot = slots.try_open().expect("a free slot");
        let mut served = slots.serve(slot, numbers(&probe, Duration::ZERO));
        tokio::time::advance(Duration::from_secs(5)).await;
        settle().await;
        assert_eq!(
            probe.made.load(Ordering::SeqCst),
            0,
            "nothing asked, nothing made"
        );
        for expected in 0..3 {
            let item = served.next().await.map(|item| item.ok());
            assert_eq!(item, Some(Some(expected)));
        }
        settle().await;
        assert_eq!(probe.made.load(Ordering::SeqCst), 3, "one message per ask");
    }

    /// A reader that asks for nothing within the idle deadline has its stream cut: its
    /// state and slot are freed at once, and the reader, when it comes back, gets
    /// DEADLINE_EXCEEDED naming the deadline.
    #[tokio::test(start_paused = true)]
    async fn an_idle_reader_has_its_stream_cut() {
        let slots = slots(1);
        let probe = Arc::new(Probe::default());
        let slot = slots.try_open().expect("a free slot");
        let mut served = slots.serve(slot, numbers(&probe, Duration::from_millis(10)));
        assert!(matches!(served.next().await, Some(Ok(0))));
        assert!(matches!(
            slots.try_open(),
            Err(RouterError::TooManyStreams { .. })
        ));

        tokio::time::advance(IDLE - Duration::from_millis(1)).await;
        settle().await;
        assert_eq!(
            probe.dropped.load(Ordering::SeqCst),
            0,
            "not cut before the deadline"
        );
        tokio::time::advance(Duration::from_millis(2)).await;
        settle().await;
        assert_eq!(probe.dropped.load(Ordering::SeqCst), 1, "state freed at the cut");
        assert_eq!(slots.open_streams(), 0, "slot freed at the cut");
        assert!(slots.try_open().is_ok());

        match served.next().await {
            Some(Err(status)) => {
                assert_eq!(status.code(), Code::DeadlineExceeded);
                assert!(
                    status.message().contains("stream_idle_timeout_ms"),
                    "{}",
                    status.message()
                );
            }
            other => panic!("expected the cut, got {other:?}"),
        }
        assert!(served.next().await.is_none());
    }

    /// A reader that keeps reading is never cut for idleness, but a stream is cut at its
    /// total deadline, even while it is making a message.
    #[tokio::test(start_paused = true)]
    async fn a_stream_is_cut_at_its_total_deadline() {
        let slots = slots(1);
        let probe = Arc::new(Probe::default());
        let slot = slots.try_open().expect("a free slot");
        // A message every 7 s: well within the idle deadline, 85 of them before the end.
        let mut served = slots.serve(slot, numbers(&probe, Duration::from_secs(7)));
        let opened = Instant::now();
        let mut received = 0u64;
        let status = loop {
            match served.next().await {
                Some(Ok(number)) => {
                    assert_eq!(number, received);
                    received += 1;
                }
                Some(Err(status)) => break status,
                None => panic!("the stream ended without being cut"),
            }
        };
        assert_eq!(Instant::now() - opened, TOTAL);
        assert_eq!(received, 85);
        assert_eq!(status.code(), Code::DeadlineExceeded);
        assert!(
            status.message().contains("stream_total_timeout_ms"),
            "{}",
            status.message()
        );
        settle().await;
        assert_eq!(probe.dropped.load(Ordering::SeqCst), 1);
        assert_eq!(slots.open_streams(), 0);
    }

    /// A stream that ends, fails or whose reader goes away frees its slot and state.
    #[tokio::test(start_paused = true)]
    async fn slots_are_freed_when_streams_end() {
        let slots = slots(2);
        let finite: ResponseStream<u64> = Box::pin(stream::iter(vec![Ok(1), Ok(2)]));
        let mut ended = slots.serve(slots.try_open().expect("slot"), finite);
        assert!(matches!(ended.next().await, Some(Ok(1))));
        assert!(matches!(ended.next().await, Some(Ok(2))));
        assert!(ended.next().await.is_none());

        let failing: ResponseStream<u64> =
            Box::pin(stream::iter(vec![Err(Status::unavailable("shard 3")), Ok(9)]));
        let mut failed = slots.serve(slots.try_open().expect("slot"), failing);
        assert!(matches!(failed.next().await, Some(Err(_))));
        assert!(failed.next().await.is_none(), "nothing after an error");

        let probe = Arc::new(Probe::default());
        let abandoned = slots.serve(slots.try_open().expect("slot"), numbers(&probe, Duration::ZERO));
        drop(abandoned);
        settle().await;
        assert_eq!(probe.dropped.load(Ordering::SeqCst), 1);
        assert_eq!(slots.open_streams(), 0);
        slots.shutdown(Duration::from_secs(1)).await;
    }
}
