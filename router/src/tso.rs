//! Timestamps for clients: `Tso.GetTimestamps`, answered by the system group's leader.
//!
//! One task per router ([`TsoClient`]) calls the system leader: requests that arrive while a
//! call is in flight wait in a bounded queue and are served together by the next call (one
//! range, split among them). A request never joins a call that began before it arrived, so
//! every timestamp it gets is above every timestamp handed out before it began. Nothing is
//! allocated ahead: a range kept by one router for later would let another router's client,
//! starting later, receive a smaller timestamp.
//!
//! The system leader is found by asking ring members in turn and following the not-leader
//! hints they answer with; the leader found is remembered until it stops answering.

use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ringkv_proto::metadata;
use ringkv_proto::v1::{GetTimestampsRequest, MemberState};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tracing::{debug, warn};

use crate::error::RouterError;
use crate::node_api::NodeApi;
use crate::topology::TopologyHandle;

/// Most timestamps one request may ask for (the node's limit too).
pub const MAX_TIMESTAMPS_PER_REQUEST: u32 = 1 << 16;
/// Most requests waiting for a call; more are refused as overloaded.
const QUEUE_CAPACITY: usize = 4096;
/// Most attempts of one call (not-leader hints followed and nodes tried); the request's
/// deadline usually ends the attempts first (an election takes about a second).
const MAX_ATTEMPTS: u32 = 32;
/// First and longest pause between attempts that found no leader.
const INITIAL_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_millis(400);

struct Waiter {
    count: u32,
    deadline: Instant,
    reply: oneshot::Sender<Result<Range<u64>, RouterError>>,
}

/// What the router's oracle client has done (for tests and status).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TsoCounters {
    /// Requests answered with timestamps.
    pub requests: u64,
    /// Calls to the system leader that answered.
    pub calls: u64,
}

/// The router's client of the timestamp oracle.
pub struct TsoClient {
    queue: mpsc::Sender<Waiter>,
    counters: Arc<Mutex<TsoCounters>>,
    cancel: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl TsoClient {
    /// Starts the client's task; [`TsoClient::shutdown`] stops it.
    #[cfg(test)]
    pub fn spawn<N: NodeApi>(nodes: Arc<N>, topology: TopologyHandle, rpc_timeout: Duration) -> TsoClient {
        TsoClient::spawn_prefetching(nodes, topology, rpc_timeout, 0)
    }

    /// [`TsoClient::spawn`], except that with `unsafe_prefetch > 0` — the
    /// `--unsafe-tso-prefetch` NEGATIVE CONTROL — each call takes at least that many
    /// timestamps (at most [`MAX_TIMESTAMPS_PER_REQUEST`]) and later requests are served from
    /// what is left, without a call: exactly the per-router range the module docs rule out.
    pub fn spawn_prefetching<N: NodeApi>(
        nodes: Arc<N>,
        topology: TopologyHandle,
        rpc_timeout: Duration,
        unsafe_prefetch: u32,
    ) -> TsoClient {
        let (queue, waiters) = mpsc::channel(QUEUE_CAPACITY);
        let counters = Arc::new(Mutex::new(TsoCounters::default()));
        let cancel = CancellationToken::new();
        let caller = Caller {
            nodes,
            topology,
            rpc_timeout,
            leader: None,
            next_member: 0,
        };
        let prefetch = unsafe_prefetch.min(MAX_TIMESTAMPS_PER_REQUEST);
        let task = tokio::spawn(run(caller, waiters, counters.clone(), cancel.clone(), prefetch));
        TsoClient {
            queue,
            counters,
            cancel,
            task: Mutex::new(Some(task)),
        }
    }

    /// `count` consecutive timestamps (1..=[`MAX_TIMESTAMPS_PER_REQUEST`]), before `deadline`.
    pub async fn timestamps(&self, count: u32, deadline: Instant) -> Result<Range<u64>, RouterError> {
        if count == 0 || count > MAX_TIMESTAMPS_PER_REQUEST {
            return Err(RouterError::InvalidArgument(format!(
                "count must be between 1 and {MAX_TIMESTAMPS_PER_REQUEST}, got {count}"
            )));
        }
        let (reply, answer) = oneshot::channel();
        self.queue
            .try_send(Waiter {
                count,
                deadline,
                reply,
            })
            .map_err(|err| match err {
                mpsc::error::TrySendError::Full(_) => RouterError::Unavailable(format!(
                    "{QUEUE_CAPACITY} timestamp requests are already waiting; retry later"
                )),
                mpsc::error::TrySendError::Closed(_) => stopped(),
            })?;
        // A call serving several requests runs until the latest of their deadlines; this
        // one answers at its own.
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(answer) => answer.map_err(|_| stopped())?,
            Err(_elapsed) => Err(RouterError::Unavailable(
                "deadline passed while waiting for a timestamp".to_string(),
            )),
        }
    }

    pub fn counters(&self) -> TsoCounters {
        *self.counters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops the task; waiting requests are refused.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(task) = task {
            if let Err(err) = task.await {
                warn!(%err, "timestamp client task failed");
            }
        }
    }
}

impl std::fmt::Debug for TsoClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsoClient")
            .field("counters", &self.counters())
            .finish_non_exhaustive()
    }
}

/// The error of a call, for each request it served (a broken answer stays internal, the
/// rest is unavailability).
fn copy_error(err: &RouterError) -> RouterError {
    match err {
        RouterError::InvalidArgument(message) => RouterError::InvalidArgument(message.clone()),
        RouterError::BadField { field, message } => RouterError::BadField {
            field: field.clone(),
            message: message.clone(),
        },
        RouterError::Internal(message) => RouterError::Internal(message.clone()),
        other => RouterError::Unavailable(other.to_string()),
    }
}

fn stopped() -> RouterError {
    RouterError::Unavailable("the router is shutting down".to_string())
}

async fn run<N: NodeApi>(
    mut caller: Caller<N>,
    mut waiters: mpsc::Receiver<Waiter>,
    counters: Arc<Mutex<TsoCounters>>,
    cancel: CancellationToken,
    prefetch: u32,
) {
    let mut held: Option<Waiter> = None;
    // What a prefetching (unsafe) client has left of its last call.
    let mut spare: Range<u64> = 0..0;
    loop {
        let first = match held.take() {
            Some(waiter) => waiter,
            None => tokio::select! {
                () = cancel.cancelled() => break,
                waiter = waiters.recv() => match waiter {
                    Some(waiter) => waiter,
                    None => break,
                },
            },
        };
        let mut total = first.count;
        let mut batch = vec![first];
        while let Ok(waiter) = waiters.try_recv() {
            if total + waiter.count > MAX_TIMESTAMPS_PER_REQUEST {
                held = Some(waiter);
                break;
            }
            total += waiter.count;
            batch.push(waiter);
        }
        // Requests whose callers gave up (deadline passed) are not served.
        let now = Instant::now();
        let live: Vec<Waiter> = batch
            .into_iter()
            .filter(|waiter| waiter.deadline > now && !waiter.reply.is_closed())
            .collect();
        let Some(deadline) = live.iter().map(|waiter| waiter.deadline).max() else {
            continue;
        };
        let total: u32 = live.iter().map(|waiter| waiter.count).sum();
        let outcome = if spare.end - spare.start >= u64::from(total) {
            let start = spare.start;
            spare.start += u64::from(total);
            Ok(start..spare.start)
        } else {
            let asked = total.max(prefetch);
            let outcome = tokio::select! {
                () = cancel.cancelled() => Err(stopped()),
                outcome = caller.call(asked, deadline) => outcome,
            };
            outcome.map(|range| {
                let served = range.start..range.start + u64::from(total);
                spare = served.end..range.end;
                served
            })
        };
        match outcome {
            Ok(range) => {
                {
                    let mut counters = counters.lock().unwrap_or_else(PoisonError::into_inner);
                    counters.calls += 1;
                    counters.requests += live.len() as u64;
                }
                let mut next = range.start;
                for waiter in live {
                    let end = next + u64::from(waiter.count);
                    let _ = waiter.reply.send(Ok(next..end));
                    next = end;
                }
            }
            Err(err) => {
                for waiter in live {
                    let _ = waiter.reply.send(Err(copy_error(&err)));
                }
            }
        }
    }
    waiters.close();
    for waiter in held
        .into_iter()
        .chain(std::iter::from_fn(|| waiters.try_recv().ok()))
    {
        let _ = waiter.reply.send(Err(stopped()));
    }
}

/// Calls the system leader, finding it first when needed.
struct Caller<N> {
    nodes: Arc<N>,
    topology: TopologyHandle,
    rpc_timeout: Duration,
    /// The system leader's address, as last learnt.
    leader: Option<String>,
    /// Which ring member to ask next when no leader is known.
    next_member: usize,
}

impl<N: NodeApi> Caller<N> {
    async fn call(&mut self, count: u32, deadline: Instant) -> Result<Range<u64>, RouterError> {
        let mut backoff = INITIAL_BACKOFF;
        let mut hints_in_a_row = 0;
        let mut last_error = String::from("no node to ask");
        for _ in 0..MAX_ATTEMPTS {
            let Some(addr) = self.target(deadline).await? else {
                break;
            };
            let timeout = self
                .rpc_timeout
                .min(deadline.saturating_duration_since(Instant::now()));
            if timeout.is_zero() {
                break;
            }
            match self
                .nodes
                .timestamps(&addr, GetTimestampsRequest { count }, timeout)
                .await
            {
                Ok(response) => {
                    let end = response.first.checked_add(u64::from(count));
                    let (true, Some(end)) = (response.first > 0 && response.count == count, end) else {
                        return Err(RouterError::Internal(format!(
                            "node at {addr} answered {} timestamps from {} for {count}",
                            response.count, response.first
                        )));
                    };
                    self.leader = Some(addr);
                    return Ok(response.first..end);
                }
                Err(status) if status.code() == Code::InvalidArgument => {
                    return Err(RouterError::InvalidArgument(status.message().to_string()));
                }
                Err(status) => {
                    last_error = format!("{addr}: {}", status.message());
                    let hint = metadata::leader_hint(&status).and_then(|hint| hint.leader_addr);
                    debug!(%addr, code = ?status.code(), ?hint, "timestamp call not served");
                    // Hints are followed at once, except when they keep pointing elsewhere
                    // (stale hints during an election): then back off as after a failure.
                    let follow = match hint {
                        Some(hinted) if hinted != addr => {
                            self.leader = Some(hinted);
                            hints_in_a_row += 1;
                            hints_in_a_row < 2
                        }
                        _ => {
                            self.leader = None;
                            hints_in_a_row = 0;
                            false
                        }
                    };
                    if !follow {
                        let pause = backoff.min(deadline.saturating_duration_since(Instant::now()));
                        tokio::time::sleep(pause).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        }
        Err(RouterError::Unavailable(format!(
            "no system leader handed out timestamps: {last_error}"
        )))
    }

    /// The address to ask: the known leader, or the next ring member in turn.
    async fn target(&mut self, deadline: Instant) -> Result<Option<String>, RouterError> {
        if let Some(leader) = &self.leader {
            return Ok(Some(leader.clone()));
        }
        let view = self.topology.wait_for_ring(deadline).await?;
        let members: Vec<&str> = view
            .info
            .members
            .iter()
            .filter(|member| matches!(member.state(), MemberState::Active | MemberState::Joining))
            .map(|member| member.addr.as_str())
            .collect();
        if members.is_empty() {
            return Ok(None);
        }
        self.next_member = (self.next_member + 1) % members.len();
        Ok(Some(members[self.next_member].to_string()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use ringkv_proto::v1::GetTimestampsResponse;
    use tonic::Status;

    use super::*;
    use crate::forward::tests::topology_3_nodes;

    /// Node 1 (`n1:7001`) leads the system group; the others answer "not leader" with a
    /// hint to it. The leader answers a call only once the test lets it through `gate` (one
    /// permit per call), so the test decides what queues up behind a call in flight.
    struct FakeOracle {
        next: AtomicU64,
        calls: Mutex<Vec<(String, u32)>>,
        /// The leader answers a range that would overflow.
        broken: std::sync::atomic::AtomicBool,
        gate: tokio::sync::Semaphore,
        /// Notified when a call reaches the leader.
        arrived: tokio::sync::Notify,
    }

    impl FakeOracle {
        /// A fake whose leader lets `permits` calls through before it holds the next.
        fn with_permits(permits: usize) -> FakeOracle {
            FakeOracle {
                next: AtomicU64::default(),
                calls: Mutex::default(),
                broken: std::sync::atomic::AtomicBool::default(),
                gate: tokio::sync::Semaphore::new(permits),
                arrived: tokio::sync::Notify::new(),
            }
        }

        fn open() -> FakeOracle {
            FakeOracle::with_permits(tokio::sync::Semaphore::MAX_PERMITS)
        }
    }

    impl NodeApi for FakeOracle {
        async fn read(
            &self,
            _: &str,
            _: ringkv_proto::v1::ShardReadRequest,
            _: Duration,
        ) -> Result<ringkv_proto::v1::ShardReadResponse, Status> {
            Err(Status::unimplemented("read"))
        }
        async fn write(
            &self,
            _: &str,
            _: ringkv_proto::v1::ShardWriteRequest,
            _: Duration,
        ) -> Result<ringkv_proto::v1::ShardWriteResponse, Status> {
            Err(Status::unimplemented("write"))
        }
        async fn scan(
            &self,
            _: &str,
            _: ringkv_proto::v1::ShardScanRequest,
            _: Duration,
        ) -> Result<ringkv_proto::v1::ShardScanResponse, Status> {
            Err(Status::unimplemented("scan"))
        }
        async fn count(
            &self,
            _: &str,
            _: ringkv_proto::v1::ShardCountRequest,
            _: Duration,
        ) -> Result<ringkv_proto::v1::ShardCountResponse, Status> {
            Err(Status::unimplemented("count"))
        }
        async fn delete_range(
            &self,
            _: &str,
            _: ringkv_proto::v1::ShardDeleteRangeRequest,
            _: Duration,
        ) -> Result<ringkv_proto::v1::ShardDeleteRangeResponse, Status> {
            Err(Status::unimplemented("delete range"))
        }
        async fn node_status(
            &self,
            _: &str,
            _: Duration,
        ) -> Result<ringkv_proto::v1::NodeStatusResponse, Status> {
            Err(Status::unimplemented("status"))
        }
        async fn timestamps(
            &self,
            addr: &str,
            request: GetTimestampsRequest,
            _: Duration,
        ) -> Result<GetTimestampsResponse, Status> {
            self.calls
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((addr.to_string(), request.count));
            if addr != "n1:7001" {
                let mut status = Status::unavailable("not the leader of the system group");
                metadata::set_leader_hint(&mut status, 1, Some("n1:7001"));
                return Err(status);
            }
            self.arrived.notify_one();
            match self.gate.acquire().await {
                Ok(permit) => permit.forget(),
                Err(_closed) => return Err(Status::unavailable("the fake is closed")),
            }
            if self.broken.load(Ordering::SeqCst) {
                return Ok(GetTimestampsResponse {
                    first: u64::MAX - 1,
                    count: request.count,
                });
            }
            let first = self.next.fetch_add(u64::from(request.count), Ordering::SeqCst) + 1;
            Ok(GetTimestampsResponse {
                first,
                count: request.count,
            })
        }
    }

    #[tokio::test]
    async fn requests_follow_the_hint_and_share_calls() {
        let nodes = Arc::new(FakeOracle::with_permits(0));
        let client = Arc::new(TsoClient::spawn(
            Arc::clone(&nodes),
            topology_3_nodes(),
            Duration::from_secs(1),
        ));
        let deadline = Instant::now() + Duration::from_secs(5);
        let first = tokio::spawn({
            let client = Arc::clone(&client);
            async move { client.timestamps(1, deadline).await }
        });
        // The first call is at the leader and held there.
        tokio::time::timeout(Duration::from_secs(5), nodes.arrived.notified())
            .await
            .expect("the first call reaches the leader");
        // 40 requests queue up behind it (each enqueues when first polled), then the
        // leader answers.
        let (ranges, ()) = futures::join!(
            futures::future::join_all((1..=40).map(|count| {
                let client = Arc::clone(&client);
                async move { client.timestamps(count, deadline).await }
            })),
            async { nodes.gate.add_permits(1_000) },
        );
        let first = first.await.expect("first request task").expect("a timestamp");
        let mut ranges: Vec<Range<u64>> = ranges.into_iter().map(|r| r.expect("timestamps")).collect();
        for (range, count) in ranges.iter().zip(1u64..) {
            assert_eq!(range.end - range.start, count);
            assert!(range.start >= first.end, "later requests get later timestamps");
        }
        ranges.sort_by_key(|range| range.start);
        for pair in ranges.windows(2) {
            assert!(pair[0].end <= pair[1].start, "ranges never overlap: {pair:?}");
        }
        let calls = nodes.calls.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let served: Vec<&(String, u32)> = calls.iter().filter(|(addr, _)| addr == "n1:7001").collect();
        assert_eq!(
            served.len(),
            2,
            "the first request, then one call for the 40 that queued behind it: {calls:?}"
        );
        assert!(
            calls.iter().filter(|(addr, _)| addr != "n1:7001").count() == 1,
            "the hint is followed and remembered: {calls:?}"
        );
        let counters = client.counters();
        assert_eq!(counters.requests, 41);
        assert_eq!(counters.calls as usize, served.len());
        client.shutdown().await;
        assert!(
            client.timestamps(1, deadline).await.is_err(),
            "a stopped client refuses"
        );
    }

    /// The `--unsafe-tso-prefetch` negative control does what it must break: a router that
    /// took a range ahead serves a later request below what another router already handed
    /// out; without it, the later request is always higher.
    #[tokio::test]
    async fn a_prefetched_range_goes_back_in_time_across_routers() {
        for prefetch in [0, 1_000] {
            let nodes = Arc::new(FakeOracle::with_permits(1_000));
            let spawn = || {
                TsoClient::spawn_prefetching(
                    Arc::clone(&nodes),
                    topology_3_nodes(),
                    Duration::from_secs(1),
                    prefetch,
                )
            };
            let (first_router, second_router) = (spawn(), spawn());
            let deadline = Instant::now() + Duration::from_secs(5);
            let early = first_router.timestamps(1, deadline).await.expect("a timestamp");
            let other = second_router.timestamps(1, deadline).await.expect("a timestamp");
            let later = first_router.timestamps(1, deadline).await.expect("a timestamp");
            assert!(other.start > early.start);
            if prefetch == 0 {
                assert!(later.start > other.start, "real-time order across routers");
            } else {
                assert!(
                    later.start < other.start,
                    "served from the first router's own range: {later:?} below {other:?}"
                );
            }
            first_router.shutdown().await;
            second_router.shutdown().await;
        }
    }

    /// A node's answer that does not fit is an error for its requests, and the client
    /// goes on serving; a request answers at its own deadline even while a call runs.
    #[tokio::test]
    async fn bad_answers_and_short_deadlines_leave_the_client_serving() {
        // Two calls go through; the third is held until the test ends.
        let nodes = Arc::new(FakeOracle::with_permits(2));
        let client = TsoClient::spawn(Arc::clone(&nodes), topology_3_nodes(), Duration::from_secs(1));
        let deadline = Instant::now() + Duration::from_secs(5);
        nodes.broken.store(true, Ordering::SeqCst);
        match client.timestamps(5, deadline).await {
            Err(RouterError::Internal(message)) => assert!(message.contains("answered"), "{message}"),
            other => panic!("an overflowing range must be refused: {other:?}"),
        }
        nodes.broken.store(false, Ordering::SeqCst);
        assert!(
            client.timestamps(5, deadline).await.is_ok(),
            "the client still serves"
        );
        // The leader now holds the call (and ignores the call's timeout): the request
        // answers at its own deadline all the same.
        let short = client
            .timestamps(1, Instant::now() + Duration::from_millis(5))
            .await;
        match short {
            Err(RouterError::Unavailable(message)) => assert!(message.contains("deadline"), "{message}"),
            other => panic!("expected the request's deadline to pass: {other:?}"),
        }
        client.shutdown().await;
    }

    #[tokio::test]
    async fn bad_counts_are_refused_without_a_call() {
        let nodes = Arc::new(FakeOracle::open());
        let client = TsoClient::spawn(Arc::clone(&nodes), topology_3_nodes(), Duration::from_secs(1));
        let deadline = Instant::now() + Duration::from_secs(5);
        for count in [0, MAX_TIMESTAMPS_PER_REQUEST + 1] {
            match client.timestamps(count, deadline).await {
                Err(RouterError::InvalidArgument(message)) => assert!(message.contains("65536"), "{message}"),
                other => panic!("count {count}: {other:?}"),
            }
        }
        assert!(nodes
            .calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty());
        client.shutdown().await;
    }
}
