//! The topology refresher: a background task, owned by the router, that polls `NodeStatus`
//! on every known node (seeds and ring members) every `refresh_interval_ms` — or sooner
//! when a request asks — in parallel (at most `max_fanout` at once, each bounded by
//! `rpc_timeout_ms`), and feeds the answers to the [`TopologyHandle`].
//!
//! Shutdown: cancel the token given to [`Refresher::spawn`], then join with
//! [`Refresher::shutdown`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::error::clip;
use crate::node_api::NodeApi;
use crate::topology::{NodeObservation, TopologyHandle};

/// Shortest gap between two passes, however often requests ask for one (or the refresh
/// interval, when shorter).
const MIN_PASS_GAP: Duration = Duration::from_millis(50);

/// What the refresher needs to know.
#[derive(Debug, Clone)]
pub struct RefreshSettings {
    pub seeds: Vec<String>,
    pub interval: Duration,
    pub rpc_timeout: Duration,
    pub max_fanout: usize,
}

/// The running refresher task.
#[derive(Debug)]
pub struct Refresher {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Refresher {
    /// Starts the task; it runs a first pass at once and stops when `cancel` fires.
    pub fn spawn<N: NodeApi>(
        nodes: Arc<N>,
        topology: TopologyHandle,
        settings: RefreshSettings,
        cancel: CancellationToken,
    ) -> Self {
        let task = tokio::spawn(run(nodes, topology, settings, cancel.clone()));
        Refresher { cancel, task }
    }

    /// Stops the task and waits for it to end.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        if let Err(err) = self.task.await {
            warn!(%err, "topology refresher task failed");
        }
    }
}

async fn run<N: NodeApi>(
    nodes: Arc<N>,
    topology: TopologyHandle,
    settings: RefreshSettings,
    cancel: CancellationToken,
) {
    let mut reachable: HashMap<String, bool> = HashMap::new();
    loop {
        let started = Instant::now();
        tokio::select! {
            () = cancel.cancelled() => break,
            () = refresh_once(nodes.as_ref(), &topology, &settings, &mut reachable) => {}
        }
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep_until(started + settings.interval) => {}
            () = topology.refresh_requested() => {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep_until(started + MIN_PASS_GAP.min(settings.interval)) => {}
                }
            }
        }
    }
    debug!("topology refresher stopped");
}

/// One pass: poll every known node and apply what they said.
pub(crate) async fn refresh_once<N: NodeApi>(
    nodes: &N,
    topology: &TopologyHandle,
    settings: &RefreshSettings,
    reachable: &mut HashMap<String, bool>,
) {
    let pass = topology.begin_pass();
    let targets = topology.poll_targets(&settings.seeds);
    // Forget addresses no longer polled, so the map stays bounded by the poll targets.
    let polled: HashSet<&String> = targets.iter().collect();
    reachable.retain(|addr, _| polled.contains(addr));
    let answers: Vec<_> = stream::iter(targets)
        .map(|addr| async move {
            let answer = nodes.node_status(&addr, settings.rpc_timeout).await;
            (addr, answer)
        })
        .buffer_unordered(settings.max_fanout.max(1))
        .collect()
        .await;

    let mut observations = Vec::with_capacity(answers.len());
    for (addr, answer) in answers {
        let now_reachable = answer.is_ok();
        let was_reachable = reachable.insert(addr.clone(), now_reachable);
        match answer {
            Ok(status) => {
                if was_reachable == Some(false) {
                    info!(%addr, node_id = status.node_id, "node reachable again");
                }
                observations.push(NodeObservation { addr, status });
            }
            Err(status) => {
                let error = clip(status.message());
                if was_reachable != Some(false) {
                    warn!(%addr, code = ?status.code(), %error, "node status poll failed");
                } else {
                    debug!(%addr, code = ?status.code(), %error, "node status poll failed");
                }
            }
        }
    }
    let outcome = topology.finish_pass(pass, &observations);
    if let Some((cluster_id, epoch)) = &outcome.new_ring {
        info!(%cluster_id, epoch, "adopted ring");
    }
    if let Some(error) = &outcome.ring_error {
        warn!(%error, "ignoring a ring a node reported");
    }
    if outcome.leaders_changed > 0 {
        debug!(leaders_changed = outcome.leaders_changed, "shard leaders updated");
    }
}

#[cfg(test)]
mod tests {
    use ringkv_proto::v1::NodeStatusResponse;
    use tonic::Status;

    use super::*;
    use crate::convert::tests::ring_info;
    use crate::forward::tests::FakeNodes;

    fn settings() -> RefreshSettings {
        RefreshSettings {
            seeds: vec!["seed:1".into()],
            interval: Duration::from_millis(100),
            rpc_timeout: Duration::from_millis(50),
            max_fanout: 4,
        }
    }

    /// A pass learns the ring from a seed, then polls the ring members too.
    #[tokio::test(start_paused = true)]
    async fn learns_ring_from_seed_then_members() {
        let nodes = FakeNodes::default();
        let topology = TopologyHandle::new();
        let mut reachable = HashMap::new();
        if let Ok(mut statuses) = nodes.statuses.lock() {
            statuses.insert(
                "seed:1".into(),
                Ok(NodeStatusResponse {
                    node_id: 1,
                    cluster_id: "test-cluster".into(),
                    ring: Some(ring_info(3, 8, 3)),
                    ..NodeStatusResponse::default()
                }),
            );
        }
        refresh_once(&nodes, &topology, &settings(), &mut reachable).await;
        assert!(topology.ring().is_some());
        assert_eq!(
            topology.poll_targets(&settings().seeds),
            vec!["seed:1", "n1:7001", "n2:7001", "n3:7001"]
        );
        // Second pass: the seed is gone, members unreachable; the ring is kept.
        if let Ok(mut statuses) = nodes.statuses.lock() {
            statuses.insert("seed:1".into(), Err(Status::unavailable("down")));
        }
        refresh_once(&nodes, &topology, &settings(), &mut reachable).await;
        assert!(topology.ring().is_some());
        assert_eq!(reachable.get("seed:1"), Some(&false));
    }

    /// The refresher task stops promptly when cancelled.
    #[tokio::test(start_paused = true)]
    async fn stops_on_cancel() {
        let refresher = Refresher::spawn(
            Arc::new(FakeNodes::default()),
            TopologyHandle::new(),
            settings(),
            CancellationToken::new(),
        );
        tokio::task::yield_now().await;
        refresher.shutdown().await;
    }
}
