//! The timestamp oracle (TSO): strictly increasing 64-bit timestamps for transactions,
//! handed out by the system group's leader.
//!
//! - `window` is the arithmetic (format, per-term window, when to persist a higher bound),
//!   pure and table-tested.
//! - [`Oracle`] (this file) serves requests on every node: one task per node takes every
//!   request waiting in a bounded queue as one batch, allocates one contiguous range for the
//!   batch, confirms the system group's leadership once for the whole batch (from the last
//!   lease check's proof while it holds, else a lease check or a ReadIndex round:
//!   `read_index.rs`), and splits the range among the requests. A node that does not lead
//!   the system group answers "not leader" with a hint; nothing is pre-allocated for later.
//!   The node's own requests go to the leader as frames of its `Raft.Pipeline` stream
//!   (`peers::Forwarded` is the answer).
//!
//! Why timestamps increase across leaders, whatever the clocks do: a leader hands out only
//! timestamps below a bound committed in the system group (`Command::TsoAdvance`); a new
//! leader confirms its leadership (so everything committed before its term is applied),
//! reads the bound and starts above it. A deposed leader cannot hand out anything after a
//! new leader started: its batch's leadership check fails once a newer term holds a quorum,
//! and the term is checked again after the confirmation. Clocks only move the physical part
//! forward (a clock far ahead raises the bound; one behind is ignored).

mod window;

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use openraft::ServerState;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::concurrency::TimestampSource;
use crate::error::NodeError;
use crate::node::{now_ms, Node};
use crate::peers::Peer;
use crate::proposal::leader_hint;
use crate::raft::types::{Command, CommandResult, GroupId};

pub use window::{compose, logical, physical_ms, LOGICAL_BITS};
use window::{Step, Window};

/// Most timestamps one request may ask for.
pub const MAX_TIMESTAMPS_PER_REQUEST: u32 = 1 << 16;
/// Most requests waiting for the oracle on one node; more are refused as overloaded.
const QUEUE_CAPACITY: usize = 4096;
/// Most requests served by one batch (one leadership confirmation).
const MAX_BATCH: usize = 1024;
/// Most bound commits one batch may need (the clock can move while one commits).
const MAX_ADVANCES_PER_BATCH: usize = 3;

struct Request {
    count: u32,
    /// Whether a node that does not lead the system group passes the request on to the
    /// leader (calls from inside this node) or answers "not leader" with a hint (calls from
    /// routers, which follow hints themselves: no chains of forwards between nodes).
    forward: bool,
    reply: oneshot::Sender<Result<Range<u64>, NodeError>>,
}

/// Counters of the oracle on this node (reported in `NodeStatus`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OracleCounters {
    /// Requests answered with timestamps.
    pub requests: u64,
    /// Batches served (each one leadership confirmation).
    pub batches: u64,
    /// Bounds committed to the system group.
    pub advances: u64,
    /// Batches passed on to the system leader (this node did not lead).
    pub forwarded: u64,
    /// Other nodes' requests answered as `Raft.Pipeline` frames (also in `requests`).
    pub framed: u64,
}

/// The node's timestamp oracle: a queue and the task that serves it.
pub struct Oracle {
    queue: mpsc::Sender<Request>,
    counters: Arc<Mutex<OracleCounters>>,
    cancel: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Oracle {
    /// Starts the oracle's task; [`Oracle::shutdown`] stops it.
    pub fn start(node: Node) -> Arc<Oracle> {
        let (queue, requests) = mpsc::channel(QUEUE_CAPACITY);
        let counters = Arc::new(Mutex::new(OracleCounters::default()));
        let cancel = CancellationToken::new();
        let task = tokio::spawn(serve(node, requests, counters.clone(), cancel.clone()));
        Arc::new(Oracle {
            queue,
            counters,
            cancel,
            task: Mutex::new(Some(task)),
        })
    }

    /// `count` consecutive timestamps, each above every timestamp the cluster handed out
    /// before this call began: from this node when it leads the system group, else from the
    /// leader (one call per batch).
    pub async fn timestamps(&self, count: u32) -> Result<Range<u64>, NodeError> {
        self.request(count, true).await
    }

    /// Like [`Oracle::timestamps`], but a node that does not lead the system group answers
    /// "not leader" (with a hint) instead of asking the leader: what the `Tso` service does.
    pub async fn timestamps_here(&self, count: u32) -> Result<Range<u64>, NodeError> {
        self.request(count, false).await
    }

    /// [`Oracle::timestamps_here`] for another node's oracle, asking on its `Raft.Pipeline`
    /// stream (counted apart).
    pub async fn timestamps_for_peer(&self, count: u32) -> Result<Range<u64>, NodeError> {
        let answer = self.request(count, false).await;
        if answer.is_ok() {
            self.counters
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .framed += 1;
        }
        answer
    }

    async fn request(&self, count: u32, forward: bool) -> Result<Range<u64>, NodeError> {
        if count == 0 || count > MAX_TIMESTAMPS_PER_REQUEST {
            return Err(NodeError::InvalidArgument(format!(
                "count must be between 1 and {MAX_TIMESTAMPS_PER_REQUEST}, got {count}"
            )));
        }
        let (reply, answer) = oneshot::channel();
        self.queue
            .try_send(Request {
                count,
                forward,
                reply,
            })
            .map_err(|err| match err {
                mpsc::error::TrySendError::Full(_) => {
                    NodeError::Overloaded(format!("{QUEUE_CAPACITY} timestamp requests are already waiting"))
                }
                mpsc::error::TrySendError::Closed(_) => stopped(),
            })?;
        answer.await.map_err(|_| stopped())?
    }

    pub fn counters(&self) -> OracleCounters {
        *self.counters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops the task; requests still waiting are refused.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(task) = task {
            if let Err(err) = task.await {
                warn!(%err, "timestamp oracle task failed");
            }
        }
    }
}

impl TimestampSource for Oracle {
    fn timestamp(&self) -> Pin<Box<dyn Future<Output = Result<u64, NodeError>> + Send + '_>> {
        Box::pin(async move { Ok(self.timestamps(1).await?.start) })
    }
}

fn stopped() -> NodeError {
    NodeError::Fatal("the timestamp oracle stopped (the node is shutting down)".to_string())
}

/// The oracle's task: one batch at a time until cancelled.
async fn serve(
    node: Node,
    mut requests: mpsc::Receiver<Request>,
    counters: Arc<Mutex<OracleCounters>>,
    cancel: CancellationToken,
) {
    let mut window: Option<Window> = None;
    let mut held: Option<Request> = None;
    loop {
        let first = match held.take() {
            Some(request) => request,
            None => tokio::select! {
                () = cancel.cancelled() => break,
                request = requests.recv() => match request {
                    Some(request) => request,
                    None => break,
                },
            },
        };
        // One batch: at most MAX_BATCH requests and one request's worth of timestamps (what
        // one forwarded call may ask for).
        let mut total = first.count;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match requests.try_recv() {
                Ok(request) if total + request.count > MAX_TIMESTAMPS_PER_REQUEST => {
                    held = Some(request);
                    break;
                }
                Ok(request) => {
                    total += request.count;
                    batch.push(request);
                }
                Err(_) => break,
            }
        }
        // Callers that gave up (their deadline passed while the queue waited) get nothing.
        batch.retain(|request| !request.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let total: u32 = batch.iter().map(|request| request.count).sum();
        let outcome = tokio::select! {
            () = cancel.cancelled() => Err(stopped()),
            outcome = allocate(&node, &mut window, u64::from(total), &counters) => outcome,
        };
        match outcome {
            Ok(range) => {
                {
                    let mut counters = counters.lock().unwrap_or_else(PoisonError::into_inner);
                    counters.batches += 1;
                    counters.requests += batch.len() as u64;
                }
                hand_out(batch, range);
                renew(&node, &mut window, &counters).await;
            }
            // The window stays on every error: what it handed out and the bound it committed
            // are still true in its term, and a window of another term is replaced at the
            // next batch. Dropping it would start the next batch at the bound, seconds ahead
            // of the clock, after every transient failure.
            Err(NodeError::NotLeader {
                leader: Some((leader, addr)),
                ..
            }) if leader != node.node_id() && batch.iter().any(|request| request.forward) => {
                let (forward, refuse): (Vec<Request>, Vec<Request>) =
                    batch.into_iter().partition(|request| request.forward);
                let not_leader = NodeError::NotLeader {
                    group: GroupId::System,
                    leader: Some((leader, addr.clone())),
                    proposed: false,
                };
                for request in refuse {
                    let _ = request.reply.send(Err(not_leader.duplicate()));
                }
                let count: u32 = forward.iter().map(|request| request.count).sum();
                let peer = Peer {
                    node: leader,
                    addr: &addr,
                };
                let answer = tokio::select! {
                    () = cancel.cancelled() => Err(stopped()),
                    answer = node.peers().timestamps(peer, count) => answer,
                };
                match answer {
                    Ok(range) => {
                        counters.lock().unwrap_or_else(PoisonError::into_inner).forwarded += 1;
                        hand_out(forward, range);
                    }
                    Err(err) => fail_all(forward, &err),
                }
            }
            Err(err) => fail_all(batch, &err),
        }
    }
    requests.close();
    for request in held
        .into_iter()
        .chain(std::iter::from_fn(|| requests.try_recv().ok()))
    {
        let _ = request.reply.send(Err(stopped()));
    }
}

/// Splits `range` among `batch`, in order.
fn hand_out(batch: Vec<Request>, range: Range<u64>) {
    let mut next = range.start;
    for request in batch {
        let end = next + u64::from(request.count);
        let _ = request.reply.send(Ok(next..end));
        next = end;
    }
    debug_assert_eq!(next, range.end);
}

fn fail_all(batch: Vec<Request>, err: &NodeError) {
    for request in batch {
        let _ = request.reply.send(Err(err.duplicate()));
    }
}

/// One batch: `total` timestamps, confirmed by the system group's leadership.
async fn allocate(
    node: &Node,
    window: &mut Option<Window>,
    total: u64,
    counters: &Mutex<OracleCounters>,
) -> Result<Range<u64>, NodeError> {
    let system = node.system_group();
    let term = leader_term(node)?;
    if window.as_ref().map(Window::term) != Some(term) {
        *window = None;
        // Everything committed before this term is applied after the confirmation, so the
        // bound read next is the last one any earlier leader used.
        node.ensure_linearizable(&system).await?;
        let limit_ms = system.state.tso_limit_ms()?;
        debug!(term, limit_ms, "timestamp oracle starts a window");
        *window = Some(if node.config().unsafe_tso_ignore_bound {
            warn!("NEGATIVE CONTROL: the timestamp oracle ignores its persisted bound");
            let mut window = Window::new(term, 0);
            window.raise_limit(limit_ms);
            window
        } else {
            Window::new(term, limit_ms)
        });
    }
    let Some(current) = window.as_mut() else {
        return Err(NodeError::Fatal(
            "the timestamp oracle lost its window".to_string(),
        ));
    };
    let mut advances = 0;
    let range = loop {
        match current.allocate(now_ms(), total) {
            Step::Issue(range) => break range,
            Step::Advance { limit_ms } if advances < MAX_ADVANCES_PER_BATCH => {
                advances += 1;
                current.raise_limit(advance(node, limit_ms, counters).await?);
            }
            Step::Advance { limit_ms } => {
                return Err(NodeError::Timeout {
                    what: format!("the timestamp oracle's bound to reach {limit_ms} ms"),
                    timeout_ms: 0,
                    proposed: false,
                })
            }
        }
    };
    // The range was allocated under `term`; it is handed out only if this node still led
    // in that term after allocating it (no other leader, no other oracle, then). The last
    // lease check's proof answers without a message while it holds.
    node.confirm_leading(&system, term).await?;
    if leader_term(node)? != term {
        return Err(NodeError::NotLeader {
            group: GroupId::System,
            leader: leader_hint(&system.raft),
            proposed: false,
        });
    }
    Ok(range)
}

/// Commits a higher bound before the current one runs out, so requests rarely wait for one.
async fn renew(node: &Node, window: &mut Option<Window>, counters: &Mutex<OracleCounters>) {
    let Some(limit_ms) = window.as_ref().and_then(|current| current.renewal(now_ms())) else {
        return;
    };
    match advance(node, limit_ms, counters).await {
        Ok(committed) => {
            if let Some(current) = window.as_mut() {
                current.raise_limit(committed);
            }
        }
        // The bound in force stays valid; the next batch commits a higher one if it needs it.
        Err(err) => debug!(%err, "timestamp oracle could not renew its bound"),
    }
}

/// Commits a bound of at least `limit_ms`; returns the bound in force.
async fn advance(node: &Node, limit_ms: u64, counters: &Mutex<OracleCounters>) -> Result<u64, NodeError> {
    let system = node.system_group();
    match node.propose(&system, Command::TsoAdvance(limit_ms)).await? {
        CommandResult::TsoLimit(committed) => {
            counters.lock().unwrap_or_else(PoisonError::into_inner).advances += 1;
            Ok(committed)
        }
        other => Err(NodeError::Fatal(format!(
            "the system group answered a bound of the timestamp oracle with {other:?}"
        ))),
    }
}

/// The system group's term, if this node leads it.
fn leader_term(node: &Node) -> Result<u64, NodeError> {
    let system = node.system_group();
    let led_term = {
        let metrics = system.raft.metrics();
        let metrics = metrics.borrow();
        (metrics.state == ServerState::Leader && metrics.current_leader == Some(node.node_id()))
            .then_some(metrics.current_term)
    };
    led_term.ok_or_else(|| NodeError::NotLeader {
        group: GroupId::System,
        leader: leader_hint(&system.raft),
        proposed: false,
    })
}
