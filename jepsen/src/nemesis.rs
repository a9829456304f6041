//! Nemeses: faults injected on a seeded schedule, each recorded in the history as a
//! `:nemesis` op when it starts and when it is healed, and all healed at the end.
//!
//! Network faults beyond drops — slow, jittered (reordering) and lossy links — are the
//! userspace emulator's ([`crate::netem`], driven through [`crate::net::Network::emulate`]);
//! the links they pick are pure functions here ([`links_of_node`], [`every_link`]). A router
//! is cut off from nodes with [`crate::net::Network::cut_router`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;
use ringkv_proto::v1;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cluster::{Cluster, Fate};
use crate::history::{OpValue, Recorder, F};
use crate::net::Network;
use crate::netem::LinkFault;

/// `slow-link-one`: every link of the victim gets a delay drawn from this range …
const SLOW_LINK_DELAY_MS: std::ops::RangeInclusive<u64> = 50..=200;
/// … with a jitter of this fraction of the delay (so its packets reorder too).
const SLOW_LINK_JITTER_FRACTION: f64 = 0.25;
/// `slow-network`: every link gets a delay drawn from this range …
const SLOW_NETWORK_DELAY_MS: std::ops::RangeInclusive<u64> = 20..=100;
/// … and a jitter of this fraction of it: packets sent within the jitter overtake each other.
const SLOW_NETWORK_JITTER_FRACTION: f64 = 0.5;
/// … and this share of its packets skip the delay, overtaking the ones held.
const SLOW_NETWORK_REORDER_PROBABILITY: f64 = 0.05;
/// `lossy-network`: every link loses a share of its packets drawn from this range (percent).
const LOSSY_NETWORK_PERCENT: std::ops::RangeInclusive<u32> = 5..=20;

/// The faults the harness can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum NemesisKind {
    /// Cut one random node off from the others (silent drops).
    PartitionOne,
    /// Split into a majority and a minority.
    PartitionMajority,
    /// Every node sees a majority, but no two nodes see the same one (needs ≥ 5 nodes;
    /// with fewer it is a bridge).
    PartitionRing,
    /// Two majorities that share one node.
    PartitionBridge,
    /// Cut off the leader of a random shard or of the system group.
    PartitionLeader,
    /// Drop traffic in one direction only, from one node to another.
    PartitionOneWay,
    /// `kill -9` one node, restart it at heal.
    KillOne,
    /// `kill -9` a minority.
    KillMinority,
    /// `kill -9` a majority.
    KillMajority,
    /// `kill -9` every node.
    KillAll,
    /// SIGSTOP one node (a shard or system leader when one is known) for longer than an
    /// election timeout, SIGCONT at heal.
    Pause,
    /// Skew the wall clocks of a minority of nodes by up to ±30 s (libfaketime).
    ClockSkew,
    /// Jump one node's wall clock by whole minutes, forward or back: 1 up to the run's
    /// `clock_bump_max` (5 minutes unless set; past the nodes' de-duplication window when
    /// they run a shorter `--dedup-window-ms`).
    ClockBump,
    /// Flip one node's wall clock back and forth every 200 ms.
    ClockStrobe,
    /// Start a node with a fresh id and add it to the ring (`AddNode`); the shards rebalance
    /// onto it while the next faults run. With no free slot left, decommissions instead.
    AddNode,
    /// Decommission a random ring member; it is stopped once the cluster records it removed
    /// and it holds no replica. With only RF members left, adds a node instead.
    DecommissionNode,
    /// Add a fresh node and `kill -9` a member for good; after the dead-node timeout the
    /// cluster declares it dead and restores RF elsewhere. The harness then restarts the dead
    /// node, which must delete its stale replicas and serve nothing (direct reads still go
    /// to it), and finally stops it.
    ReplaceNode,
    /// Move a random shard's leadership to another of its voters (`TransferLeader`).
    TransferLeader,
    /// A power cut of one node: `kill -9`, then drop everything it wrote since its last
    /// fsync (its data directory is a `ringkv-faultfs` mount); restarted at heal.
    LoseUnsyncedOne,
    /// A power cut of a minority of the nodes.
    LoseUnsyncedMinority,
    /// A power cut of every node at once.
    LoseUnsyncedAll,
    /// One node's disk starts failing: every fsync/fdatasync answers `EIO` and loses the
    /// file's unsynced data (its data directory is a `ringkv-faultfs` mount). The node must
    /// stop by itself (fail-stop, exit code 74) at its next sync; healed as a reboot that
    /// fixes the disk: a node still running is killed, unsynced data is dropped, the disk
    /// works again and the node restarts.
    FailSyncsOne,
    /// The disks of a majority fail at once: the cluster must stop acknowledging rather
    /// than acknowledge what no quorum holds.
    FailSyncsMajority,
    /// Every node's disk fails at once.
    FailSyncsAll,
    /// `kill -9` one router (its clients fail over to the others, or wait when it is the
    /// only one), restarted on its old address at heal. A router keeps nothing: a commit it
    /// was coordinating is left to readers.
    KillRouter,
    /// SIGSTOP one router, SIGCONT at heal: its calls in flight stall, then go on late.
    PauseRouter,
    /// Cut a random router off from a random non-empty proper subset of the nodes (every
    /// node when there is only one): what it sends them is dropped silently. Its clients
    /// fail over to the other routers (`--routers 2` or more).
    PartitionRouter,
    /// Every link of one random node gets 50–200 ms of latency (one draw per fault) with a
    /// jitter of a quarter of it, both ways (the userspace emulator, `netem.rs`).
    SlowLinkOne,
    /// Every link between nodes gets 20–100 ms of latency with a jitter of half of it, so
    /// packets reorder; 5 % of the packets skip the delay and overtake the others.
    SlowNetwork,
    /// Every link between nodes loses 5–20 % of its packets (one draw per fault).
    LossyNetwork,
}

impl NemesisKind {
    pub fn needs_network(self) -> bool {
        matches!(
            self,
            NemesisKind::PartitionOne
                | NemesisKind::PartitionMajority
                | NemesisKind::PartitionRing
                | NemesisKind::PartitionBridge
                | NemesisKind::PartitionLeader
                | NemesisKind::PartitionOneWay
                | NemesisKind::PartitionRouter
                | NemesisKind::SlowLinkOne
                | NemesisKind::SlowNetwork
                | NemesisKind::LossyNetwork
        )
    }

    /// Whether the nemesis changes membership (needs spare network slots and a short
    /// dead-node timeout).
    pub fn changes_membership(self) -> bool {
        matches!(
            self,
            NemesisKind::AddNode | NemesisKind::DecommissionNode | NemesisKind::ReplaceNode
        )
    }

    /// Whether the nemesis needs the nodes' data directories on faultfs mounts.
    pub fn needs_disk_faults(self) -> bool {
        matches!(
            self,
            NemesisKind::LoseUnsyncedOne
                | NemesisKind::LoseUnsyncedMinority
                | NemesisKind::LoseUnsyncedAll
                | NemesisKind::FailSyncsOne
                | NemesisKind::FailSyncsMajority
                | NemesisKind::FailSyncsAll
        )
    }

    pub fn needs_fake_clock(self) -> bool {
        matches!(
            self,
            NemesisKind::ClockSkew | NemesisKind::ClockBump | NemesisKind::ClockStrobe
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            NemesisKind::PartitionOne => "partition-one",
            NemesisKind::PartitionMajority => "partition-majority",
            NemesisKind::PartitionRing => "partition-ring",
            NemesisKind::PartitionBridge => "partition-bridge",
            NemesisKind::PartitionLeader => "partition-leader",
            NemesisKind::PartitionOneWay => "partition-one-way",
            NemesisKind::KillOne => "kill-one",
            NemesisKind::KillMinority => "kill-minority",
            NemesisKind::KillMajority => "kill-majority",
            NemesisKind::KillAll => "kill-all",
            NemesisKind::Pause => "pause",
            NemesisKind::ClockSkew => "clock-skew",
            NemesisKind::ClockBump => "clock-bump",
            NemesisKind::ClockStrobe => "clock-strobe",
            NemesisKind::AddNode => "add-node",
            NemesisKind::DecommissionNode => "decommission-node",
            NemesisKind::ReplaceNode => "replace-node",
            NemesisKind::TransferLeader => "transfer-leader",
            NemesisKind::LoseUnsyncedOne => "lose-unsynced-one",
            NemesisKind::LoseUnsyncedMinority => "lose-unsynced-minority",
            NemesisKind::LoseUnsyncedAll => "lose-unsynced-all",
            NemesisKind::FailSyncsOne => "fail-syncs-one",
            NemesisKind::FailSyncsMajority => "fail-syncs-majority",
            NemesisKind::FailSyncsAll => "fail-syncs-all",
            NemesisKind::KillRouter => "kill-router",
            NemesisKind::PauseRouter => "pause-router",
            NemesisKind::PartitionRouter => "partition-router",
            NemesisKind::SlowLinkOne => "slow-link-one",
            NemesisKind::SlowNetwork => "slow-network",
            NemesisKind::LossyNetwork => "lossy-network",
        }
    }

    /// Every nemesis but the disk faults: `lose-unsynced-*` put every node on a FUSE mount
    /// (slower, and needs `/dev/fuse`), so runs name them explicitly.
    pub fn all() -> Vec<NemesisKind> {
        use NemesisKind::*;
        vec![
            PartitionOne,
            PartitionMajority,
            PartitionRing,
            PartitionBridge,
            PartitionLeader,
            PartitionOneWay,
            KillOne,
            KillMinority,
            KillMajority,
            KillAll,
            Pause,
            ClockSkew,
            ClockBump,
            ClockStrobe,
            AddNode,
            DecommissionNode,
            ReplaceNode,
            TransferLeader,
            KillRouter,
            PauseRouter,
            PartitionRouter,
            SlowLinkOne,
            SlowNetwork,
            LossyNetwork,
        ]
    }
}

/// An active fault and how to heal it.
#[derive(Debug)]
enum Active {
    /// Any fault of the namespace network (partitions, cut routers, emulated links): healed
    /// by [`Network::heal`].
    Partition,
    Killed(Vec<usize>),
    Paused(Vec<usize>),
    /// Router index (from 0) to restart.
    RouterKilled(usize),
    /// Router index (from 0) to resume.
    RouterPaused(usize),
    /// Nodes whose syncs fail: heal their disks, then restart them.
    DisksFailing(Vec<usize>),
    /// A membership change: nothing to heal (the cluster carries it out in the background;
    /// [`Cluster::reap`] follows up at every step).
    Membership,
    /// Clock offsets to reset, and the strobe task to stop.
    Clock {
        nodes: Vec<usize>,
        strobe: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
    },
}

/// Timing of the schedule.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Quiet time before each fault.
    pub quiet: Duration,
    /// How long each fault lasts.
    pub fault: Duration,
}

/// Pairs of nodes (1-based) to block so that `groups` cannot talk to each other.
pub fn pairs_between(groups: &[Vec<usize>]) -> Vec<(usize, usize)> {
    let mut pairs = Vec::new();
    for (i, a) in groups.iter().enumerate() {
        for b in groups.iter().skip(i + 1) {
            for x in a {
                for y in b {
                    pairs.push((*x, *y));
                }
            }
        }
    }
    pairs
}

/// Blocked pairs for a majorities ring of `n` nodes (n ≥ 5): node i talks to the nodes
/// within ring distance `n/4` rounded so that each sees a majority; for n < 5 a bridge.
pub fn majorities_ring(nodes: &[usize]) -> Vec<(usize, usize)> {
    let n = nodes.len();
    if n < 5 {
        return bridge(nodes);
    }
    let reach = (n / 2).div_ceil(2);
    let mut pairs = Vec::new();
    for i in 0..n {
        for j in (i + 1)..n {
            let distance = (j - i).min(n - (j - i));
            if distance > reach {
                pairs.push((nodes[i], nodes[j]));
            }
        }
    }
    pairs
}

/// Blocked pairs for a bridge: two majorities sharing the middle node.
pub fn bridge(nodes: &[usize]) -> Vec<(usize, usize)> {
    let n = nodes.len();
    let middle = n / 2;
    let left: Vec<usize> = nodes[..middle].to_vec();
    let right: Vec<usize> = nodes[middle + 1..].to_vec();
    pairs_between(&[left, right])
}

/// Every directed link between `node` and the other `nodes`, both ways.
pub fn links_of_node(node: usize, nodes: &[usize]) -> Vec<(usize, usize)> {
    nodes
        .iter()
        .filter(|other| **other != node)
        .flat_map(|&other| [(node, other), (other, node)])
        .collect()
}

/// Every directed link between two different `nodes`.
pub fn every_link(nodes: &[usize]) -> Vec<(usize, usize)> {
    nodes
        .iter()
        .flat_map(|&from| {
            nodes
                .iter()
                .filter(move |to| **to != from)
                .map(move |&to| (from, to))
        })
        .collect()
}

/// The nodes a router is cut off from: a random non-empty proper subset of `nodes` (all of
/// them when there is only one), sorted.
pub fn router_cut_nodes(nodes: &[usize], rng: &mut impl Rng) -> Vec<usize> {
    let count = if nodes.len() <= 1 {
        nodes.len()
    } else {
        rng.random_range(1..nodes.len())
    };
    let mut chosen: Vec<usize> = nodes.choose_multiple(rng, count).copied().collect();
    chosen.sort_unstable();
    chosen
}

/// A link fault of `delay` with a jitter of `jitter_fraction` of it.
fn jittered(delay: Duration, jitter_fraction: f64) -> LinkFault {
    LinkFault::slow(delay, delay.mul_f64(jitter_fraction))
}

/// Runs the nemesis schedule until `stop` fires, then heals everything. `clock_bump_max`
/// bounds `clock-bump`'s jumps.
#[allow(clippy::too_many_arguments)]
pub async fn run_schedule(
    cluster: &tokio::sync::Mutex<Cluster>,
    kinds: &[NemesisKind],
    schedule: Schedule,
    clock_bump_max: Duration,
    rng: &mut StdRng,
    recorder: &Recorder,
    stop: &CancellationToken,
) -> Result<Vec<String>> {
    let mut log = Vec::new();
    if kinds.is_empty() {
        stop.cancelled().await;
        return Ok(log);
    }
    // A shuffled bag: every kind runs once before any runs twice.
    let mut bag: Vec<NemesisKind> = Vec::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(schedule.quiet) => {}
        }
        if bag.is_empty() {
            bag = kinds.to_vec();
            bag.shuffle(rng);
        }
        let Some(kind) = bag.pop() else { break };
        let (active, detail) = {
            let mut cluster = cluster.lock().await;
            let actions = cluster
                .reap()
                .await
                .unwrap_or_else(|err| vec![format!("following the ring failed: {err:#}")]);
            for action in actions {
                info!(%action, "membership");
                recorder.nemesis(
                    F::Nemesis("membership".to_string()),
                    OpValue::Text(action.clone()),
                );
                log.push(format!("membership {action}"));
            }
            start(&mut cluster, kind, clock_bump_max, rng).await?
        };
        let line = format!("start {} {detail}", kind.name());
        info!(nemesis = kind.name(), %detail, "fault started");
        recorder.nemesis(
            F::Nemesis(format!("start-{}", kind.name())),
            OpValue::Text(detail.clone()),
        );
        log.push(line);
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(schedule.fault) => {}
        }
        let healed = {
            let mut cluster = cluster.lock().await;
            heal(&mut cluster, active).await
        };
        let outcome = match &healed {
            Ok(detail) => detail.clone(),
            Err(err) => format!("heal failed: {err}"),
        };
        recorder.nemesis(
            F::Nemesis(format!("stop-{}", kind.name())),
            OpValue::Text(outcome.clone()),
        );
        log.push(format!("stop {} {outcome}", kind.name()));
        healed?;
        if stop.is_cancelled() {
            break;
        }
    }
    Ok(log)
}

fn random_nodes(nodes: &[usize], count: usize, rng: &mut StdRng) -> Vec<usize> {
    let mut shuffled = nodes.to_vec();
    shuffled.shuffle(rng);
    shuffled.truncate(count);
    shuffled.sort_unstable();
    shuffled
}

async fn start(
    cluster: &mut Cluster,
    kind: NemesisKind,
    clock_bump_max: Duration,
    rng: &mut StdRng,
) -> Result<(Active, String)> {
    let nodes = cluster.node_ids();
    let n = nodes.len();
    let block = |cluster: &Cluster, pairs: &[(usize, usize)]| cluster.block(pairs);
    match kind {
        NemesisKind::PartitionOne | NemesisKind::PartitionLeader => {
            let isolated = if kind == NemesisKind::PartitionLeader {
                let leaders = cluster.leading_nodes().await;
                leaders.choose(rng).copied().unwrap_or(nodes[0])
            } else {
                nodes[rng.random_range(0..n)]
            };
            let rest: Vec<usize> = nodes.iter().copied().filter(|id| *id != isolated).collect();
            block(cluster, &pairs_between(&[vec![isolated], rest.clone()]))?;
            Ok((Active::Partition, format!("isolated {isolated} from {rest:?}")))
        }
        NemesisKind::PartitionMajority => {
            let minority = random_nodes(&nodes, (n - 1) / 2, rng);
            let majority: Vec<usize> = nodes
                .iter()
                .copied()
                .filter(|id| !minority.contains(id))
                .collect();
            block(cluster, &pairs_between(&[minority.clone(), majority.clone()]))?;
            Ok((Active::Partition, format!("{minority:?} | {majority:?}")))
        }
        NemesisKind::PartitionRing => {
            let mut order = nodes.clone();
            order.shuffle(rng);
            let pairs = majorities_ring(&order);
            block(cluster, &pairs)?;
            Ok((Active::Partition, format!("ring {order:?}, blocked {pairs:?}")))
        }
        NemesisKind::PartitionBridge => {
            let mut order = nodes.clone();
            order.shuffle(rng);
            let pairs = bridge(&order);
            block(cluster, &pairs)?;
            Ok((Active::Partition, format!("bridge {order:?}, blocked {pairs:?}")))
        }
        NemesisKind::PartitionOneWay => {
            let pair = random_nodes(&nodes, 2, rng);
            cluster.isolate_one_way(pair[0], pair[1])?;
            Ok((Active::Partition, format!("dropping {} -> {}", pair[0], pair[1])))
        }
        NemesisKind::KillOne
        | NemesisKind::KillMinority
        | NemesisKind::KillMajority
        | NemesisKind::KillAll => {
            let count = match kind {
                NemesisKind::KillOne => 1,
                NemesisKind::KillMinority => ((n - 1) / 2).max(1),
                NemesisKind::KillMajority => n / 2 + 1,
                _ => n,
            };
            let victims = random_nodes(&nodes, count, rng);
            for id in &victims {
                cluster.kill_node(*id)?;
            }
            Ok((Active::Killed(victims.clone()), format!("killed {victims:?}")))
        }
        NemesisKind::LoseUnsyncedOne | NemesisKind::LoseUnsyncedMinority | NemesisKind::LoseUnsyncedAll => {
            let count = match kind {
                NemesisKind::LoseUnsyncedOne => 1,
                NemesisKind::LoseUnsyncedMinority => ((n - 1) / 2).max(1),
                _ => n,
            };
            let victims = random_nodes(&nodes, count, rng);
            let mut lost = Vec::new();
            for id in &victims {
                cluster.kill_node(*id)?;
                lost.push(cluster.lose_unsynced(*id)?);
            }
            Ok((
                Active::Killed(victims.clone()),
                format!("power cut {victims:?}: {}", lost.join("; ")),
            ))
        }
        NemesisKind::FailSyncsOne | NemesisKind::FailSyncsMajority | NemesisKind::FailSyncsAll => {
            let count = match kind {
                NemesisKind::FailSyncsOne => 1,
                NemesisKind::FailSyncsMajority => n / 2 + 1,
                _ => n,
            };
            let victims = random_nodes(&nodes, count, rng);
            for id in &victims {
                cluster.fail_syncs(*id, true)?;
            }
            Ok((
                Active::DisksFailing(victims.clone()),
                format!("syncs of {victims:?} fail with EIO"),
            ))
        }
        NemesisKind::ClockSkew => {
            let victims = random_nodes(&nodes, ((n - 1) / 2).max(1), rng);
            let mut offsets = Vec::new();
            for id in &victims {
                let offset = rng.random_range(-30..=30i64);
                cluster.set_clock_offset(*id, offset)?;
                offsets.push((*id, offset));
            }
            Ok((
                Active::Clock {
                    nodes: victims,
                    strobe: None,
                },
                format!("clock offsets (node, s) {offsets:?}"),
            ))
        }
        NemesisKind::ClockBump => {
            let victim = nodes[rng.random_range(0..n)];
            let max_minutes = i64::try_from(clock_bump_max.as_secs() / 60)
                .unwrap_or(i64::MAX)
                .max(1);
            let minutes = rng.random_range(1..=max_minutes) * if rng.random_bool(0.5) { 1 } else { -1 };
            cluster.set_clock_offset(victim, minutes * 60)?;
            Ok((
                Active::Clock {
                    nodes: vec![victim],
                    strobe: None,
                },
                format!("clock of {victim} bumped {minutes:+} min"),
            ))
        }
        NemesisKind::ClockStrobe => {
            let victim = nodes[rng.random_range(0..n)];
            let delta = rng.random_range(5..=60i64);
            let clock_file = cluster.clock_file(victim);
            let stop = CancellationToken::new();
            let strobe_stop = stop.clone();
            let handle = tokio::spawn(async move {
                let mut high = false;
                while !strobe_stop.is_cancelled() {
                    high = !high;
                    let offset = if high { delta } else { 0 };
                    let _ = std::fs::write(&clock_file, format!("{offset:+}\n"));
                    tokio::select! {
                        _ = strobe_stop.cancelled() => {}
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                }
            });
            Ok((
                Active::Clock {
                    nodes: vec![victim],
                    strobe: Some((stop, handle)),
                },
                format!("clock of {victim} strobing between +0 and +{delta} s"),
            ))
        }
        NemesisKind::AddNode | NemesisKind::DecommissionNode | NemesisKind::ReplaceNode => {
            let detail = change_membership(cluster, kind, rng).await;
            Ok((Active::Membership, detail))
        }
        NemesisKind::TransferLeader => {
            let detail = transfer_leader(cluster, rng).await;
            Ok((Active::Membership, detail))
        }
        NemesisKind::KillRouter | NemesisKind::PauseRouter => {
            let running: Vec<usize> = (0..cluster.router_count())
                .filter(|index| cluster.router_running(*index))
                .collect();
            let Some(victim) = running.choose(rng).copied() else {
                return Ok((Active::Membership, "no router running".to_string()));
            };
            if kind == NemesisKind::KillRouter {
                cluster.kill_router(victim)?;
                Ok((
                    Active::RouterKilled(victim),
                    format!("killed router {}", victim + 1),
                ))
            } else {
                cluster.signal_router(victim, libc::SIGSTOP)?;
                Ok((
                    Active::RouterPaused(victim),
                    format!("paused router {}", victim + 1),
                ))
            }
        }
        NemesisKind::SlowLinkOne | NemesisKind::SlowNetwork | NemesisKind::LossyNetwork => {
            let (links, fault, detail) = match kind {
                NemesisKind::SlowLinkOne => {
                    let victim = nodes[rng.random_range(0..n)];
                    let delay = Duration::from_millis(rng.random_range(SLOW_LINK_DELAY_MS));
                    let fault = jittered(delay, SLOW_LINK_JITTER_FRACTION);
                    let detail = format!("links of {victim} delayed {delay:?} ± {:?}", fault.jitter);
                    (links_of_node(victim, &nodes), fault, detail)
                }
                NemesisKind::SlowNetwork => {
                    let delay = Duration::from_millis(rng.random_range(SLOW_NETWORK_DELAY_MS));
                    let fault = LinkFault {
                        reorder_probability: SLOW_NETWORK_REORDER_PROBABILITY,
                        ..jittered(delay, SLOW_NETWORK_JITTER_FRACTION)
                    };
                    let detail = format!(
                        "every link delayed {delay:?} ± {:?}, {} % of packets overtaking",
                        fault.jitter,
                        SLOW_NETWORK_REORDER_PROBABILITY * 100.0
                    );
                    (every_link(&nodes), fault, detail)
                }
                _ => {
                    let percent = rng.random_range(LOSSY_NETWORK_PERCENT);
                    let fault = LinkFault::lossy(f64::from(percent) / 100.0);
                    (every_link(&nodes), fault, format!("every link loses {percent} %"))
                }
            };
            let net = network_of(cluster)?;
            let mut slot_links = BTreeMap::new();
            for (from, to) in links {
                slot_links.insert(
                    (node_slot(cluster, net, from)?, node_slot(cluster, net, to)?),
                    fault,
                );
            }
            net.emulate(&slot_links, rng.random())?;
            Ok((Active::Partition, detail))
        }
        NemesisKind::PartitionRouter => {
            let running: Vec<usize> = (0..cluster.router_count())
                .filter(|index| cluster.router_running(*index))
                .collect();
            let Some(router) = running.choose(rng).copied() else {
                return Ok((Active::Membership, "no router running".to_string()));
            };
            let running_nodes: Vec<usize> = nodes
                .iter()
                .copied()
                .filter(|id| cluster.is_running(*id))
                .collect();
            let cut = router_cut_nodes(&running_nodes, rng);
            let net = network_of(cluster)?;
            let slots = cut
                .iter()
                .map(|id| node_slot(cluster, net, *id))
                .collect::<Result<Vec<_>>>()?;
            let pid = router_pid(cluster, router)?;
            net.cut_router(router, pid, &slots)?;
            Ok((
                Active::Partition,
                format!("router {} cut off from {cut:?}", router + 1),
            ))
        }
        NemesisKind::Pause => {
            let leaders = cluster.leading_nodes().await;
            let candidates: Vec<usize> = if leaders.is_empty() {
                nodes.clone()
            } else {
                leaders
            };
            let victim = candidates.choose(rng).copied().unwrap_or(nodes[0]);
            cluster.signal(victim, libc::SIGSTOP)?;
            Ok((Active::Paused(vec![victim]), format!("paused {victim}")))
        }
    }
}

fn network_of(cluster: &Cluster) -> Result<&Network> {
    cluster
        .network()
        .ok_or_else(|| anyhow!("network faults need the namespace network (run as root)"))
}

/// The network slot of node `id`: the last octet of its address.
fn node_slot(cluster: &Cluster, net: &Network, id: usize) -> Result<usize> {
    let addr = cluster.node_addr(id).ok_or_else(|| anyhow!("no node {id}"))?;
    net.nodes()
        .iter()
        .find(|host| addr.starts_with(&format!("{}:", host.ip)))
        .map(|host| host.index)
        .ok_or_else(|| anyhow!("node {id} ({addr}) is in no network slot"))
}

/// The pid of router `index` (from 0): the `ringkv-router` process started with the
/// cluster's address file of that router (`<cluster dir>/router-<index>.addr`, the directory
/// of its log), found in `/proc`.
fn router_pid(cluster: &Cluster, index: usize) -> Result<u32> {
    let cluster_dir = cluster
        .log_files()
        .into_iter()
        .find(|path| path.file_name().is_some_and(|name| name == "router.log"))
        .and_then(|log| log.parent().map(Path::to_path_buf))
        .ok_or_else(|| anyhow!("the cluster has no router log"))?;
    let addr_file = cluster_dir.join(format!("router-{index}.addr"));
    find_process_with_arg(Path::new("/proc"), &addr_file)
        .with_context(|| format!("looking for router {} in /proc", index + 1))?
        .ok_or_else(|| {
            anyhow!(
                "no running process has `{}` on its command line",
                addr_file.display()
            )
        })
}

/// The pid of a process under `proc_dir` one of whose arguments is exactly `arg`.
fn find_process_with_arg(proc_dir: &Path, arg: &Path) -> std::io::Result<Option<u32>> {
    let wanted = arg.as_os_str().as_encoded_bytes();
    for entry in std::fs::read_dir(proc_dir)? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let cmdline_path: PathBuf = entry.path().join("cmdline");
        // A process may exit between the listing and the read.
        let Ok(cmdline) = std::fs::read(&cmdline_path) else {
            continue;
        };
        if cmdline.split(|byte| *byte == 0).any(|word| word == wanted) {
            return Ok(Some(pid));
        }
    }
    Ok(None)
}

/// What a membership nemesis does, given the ring: it adds when it cannot remove (only RF
/// owners left) and removes when it cannot add (no free slot). Failures are part of the
/// detail, not errors: the cluster may refuse a change (e.g. while a previous one is
/// still settling), and the run goes on.
async fn change_membership(cluster: &mut Cluster, kind: NemesisKind, rng: &mut StdRng) -> String {
    let owners = cluster.ring_owners().await;
    let candidates: Vec<usize> = cluster
        .node_ids()
        .into_iter()
        .filter(|id| owners.contains(id) && cluster.is_running(*id))
        .collect();
    let can_add = cluster.has_free_slot();
    let can_remove = owners.len() > cluster.replication_factor() && !candidates.is_empty();
    match kind {
        NemesisKind::AddNode | NemesisKind::DecommissionNode
            if (kind == NemesisKind::AddNode && can_add) || !can_remove =>
        {
            add_node(cluster).await.1
        }
        NemesisKind::AddNode | NemesisKind::DecommissionNode => {
            let Some(victim) = candidates.choose(rng).copied() else {
                return "no member to decommission".to_string();
            };
            match cluster.decommission(victim).await {
                Ok(()) => format!("decommissioning node {victim}"),
                Err(err) => format!("decommission failed: {err:#}"),
            }
        }
        _ if cluster.fates().values().any(|fate| *fate == Fate::Replaced) => {
            // One replacement at a time: a second victim could take a quorum of some shard
            // (or of the system group, which declares nodes dead) down with the first.
            let (_, detail) = add_node(cluster).await;
            format!("{detail} (a replaced node is not declared dead yet: no second victim)")
        }
        _ => {
            // Add first, so that declaring the victim dead keeps at least RF owners.
            let (added, mut detail) = if can_add {
                add_node(cluster).await
            } else {
                (None, "no free slot".to_string())
            };
            let owners_after = owners.len() + usize::from(added.is_some());
            if owners_after <= cluster.replication_factor() {
                detail.push_str("; too few owners to replace one");
                return detail;
            }
            let Some(victim) = candidates.choose(rng).copied() else {
                return detail;
            };
            match cluster.abandon(victim) {
                Ok(()) => format!("{detail}; killed node {victim} for good"),
                Err(err) => format!("{detail}; kill failed: {err:#}"),
            }
        }
    }
}

/// Moves a random shard's leadership to a random other voter; a refusal is the detail.
async fn transfer_leader(cluster: &Cluster, rng: &mut StdRng) -> String {
    let mut led: Vec<(u32, usize, Vec<usize>)> = Vec::new();
    for (id, status) in cluster.statuses().await {
        for replica in status.replicas {
            if let (Some(shard), v1::ReplicaRole::Leader) = (replica.shard_id, replica.role()) {
                let others = replica
                    .voters
                    .iter()
                    .map(|voter| *voter as usize)
                    .filter(|voter| *voter != id)
                    .collect();
                led.push((shard, id, others));
            }
        }
    }
    let Some((shard, from, others)) = led.choose(rng).cloned() else {
        return "no shard leader known".to_string();
    };
    let Some(to) = others.choose(rng).copied() else {
        return format!("shard {shard} has no other voter");
    };
    match cluster.transfer_leader(shard, from, to).await {
        Ok(term) => format!("shard {shard}: leader {from} -> {to} (term {term})"),
        Err(err) => format!("shard {shard}: transfer {from} -> {to} failed: {err:#}"),
    }
}

async fn add_node(cluster: &mut Cluster) -> (Option<usize>, String) {
    match cluster.add_node().await {
        Ok(id) => (Some(id), format!("added node {id}")),
        Err(err) => (None, format!("add failed: {err:#}")),
    }
}

/// Heals `active`; what the schedule records (`healed`, plus what the link emulator did).
async fn heal(cluster: &mut Cluster, active: Active) -> Result<String> {
    match active {
        Active::Membership => {}
        Active::Partition => {
            if let Some(net) = cluster.network() {
                let router_drops = if net.active_router_drops().is_empty() {
                    None
                } else {
                    Some(match net.router_packets_dropped() {
                        Ok(dropped) => dropped.to_string(),
                        Err(err) => format!("(count unknown: {err})"),
                    })
                };
                let emulated = net.stop_emulation()?;
                net.heal()?;
                if let Some(stats) = emulated {
                    return Ok(format!(
                        "healed; emulator: {} packets queued, {} released ({} overtaking), {} lost, {} dropped on a full queue",
                        stats.queued, stats.released, stats.reordered, stats.dropped_by_loss, stats.dropped_full
                    ));
                }
                if let Some(dropped) = router_drops {
                    return Ok(format!("healed; {dropped} packets of the cut router dropped"));
                }
            }
        }
        Active::Killed(victims) => {
            for id in victims {
                cluster.start_node(id).await?;
            }
        }
        Active::Paused(victims) => {
            for id in victims {
                if let Err(err) = cluster.signal(id, libc::SIGCONT) {
                    warn!(node = id, %err, "cannot resume node");
                }
            }
        }
        Active::DisksFailing(victims) => {
            // The machines are rebooted to fix their disks: a node still running is killed,
            // and whatever was never synced is lost, as at a power cut. Every victim is down
            // before any restarts: a restarted node would otherwise catch up from a victim
            // still running on its page cache, and what the victims lost would survive.
            for &id in &victims {
                match cluster.reap_node(id)? {
                    Some(code) => info!(node = id, exit_code = ?code, "the node stopped on its failed disk"),
                    None if cluster.is_running(id) => {
                        warn!(node = id, "the node still runs after its disk failed; killing it");
                        cluster.kill_node(id)?;
                    }
                    None => {}
                }
            }
            for id in victims {
                let lost = cluster.lose_unsynced(id)?;
                info!(node = id, %lost, "disk fixed");
                cluster.fail_syncs(id, false)?;
                cluster.start_node(id).await?;
            }
        }
        Active::RouterKilled(index) => cluster.start_router(index).await?,
        Active::RouterPaused(index) => cluster.signal_router(index, libc::SIGCONT)?,
        Active::Clock { nodes, strobe } => {
            if let Some((stop, handle)) = strobe {
                stop.cancel();
                let _ = handle.await;
            }
            for id in nodes {
                cluster.set_clock_offset(id, 0)?;
            }
        }
    }
    Ok("healed".to_string())
}

/// Heals every fault that could still be active (used at the end of a run).
pub async fn heal_all(cluster: &mut Cluster) -> Result<()> {
    if let Some(net) = cluster.network() {
        net.heal()?;
    }
    let ids: Vec<usize> = cluster
        .fates()
        .into_iter()
        .filter(|(_, fate)| *fate != Fate::Retired)
        .map(|(id, _)| id)
        .collect();
    if cluster.has_fake_clock() {
        for id in &ids {
            cluster.set_clock_offset(*id, 0)?;
        }
    }
    // Nodes killed for good come back too: whether or not the cluster declared them dead
    // yet, they must rejoin or clean up without serving anything stale.
    for id in ids {
        if cluster.is_running(id) {
            let _ = cluster.signal(id, libc::SIGCONT);
        } else {
            cluster.start_node(id).await?;
        }
    }
    for index in 0..cluster.router_count() {
        if cluster.router_running(index) {
            let _ = cluster.signal_router(index, libc::SIGCONT);
        } else {
            cluster.start_router(index).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A majorities ring of 5 lets every node see exactly a majority (itself + 2).
    #[test]
    fn ring_gives_each_node_a_majority() {
        let nodes = vec![1, 2, 3, 4, 5];
        let blocked = majorities_ring(&nodes);
        for node in &nodes {
            let cut = blocked.iter().filter(|(a, b)| a == node || b == node).count();
            assert_eq!(5 - cut, 3, "node {node} sees a majority");
        }
    }

    /// A slow node's links are every link to and from it, and no other.
    #[test]
    fn links_of_a_node_go_both_ways() {
        assert_eq!(links_of_node(2, &[1, 2, 3]), vec![(2, 1), (1, 2), (2, 3), (3, 2)]);
        assert!(links_of_node(1, &[1]).is_empty());
    }

    /// Every link is every ordered pair of distinct nodes: n × (n − 1).
    #[test]
    fn every_link_is_every_ordered_pair() {
        let links = every_link(&[1, 2, 3, 4]);
        assert_eq!(links.len(), 12);
        assert!(links.iter().all(|(from, to)| from != to));
        let unique: std::collections::BTreeSet<_> = links.iter().collect();
        assert_eq!(unique.len(), 12);
    }

    /// A router is never cut off from every node when there are several, and always from
    /// at least one; every size from 1 to n − 1 occurs.
    #[test]
    fn router_cuts_are_non_empty_proper_subsets() {
        use rand::SeedableRng;
        let mut rng = StdRng::seed_from_u64(3);
        let nodes = [1, 2, 3, 4, 5];
        let mut sizes = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let cut = router_cut_nodes(&nodes, &mut rng);
            assert!((1..nodes.len()).contains(&cut.len()), "{cut:?}");
            assert!(cut.windows(2).all(|pair| pair[0] < pair[1]), "{cut:?}");
            sizes.insert(cut.len());
        }
        assert_eq!(sizes.into_iter().collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        assert_eq!(router_cut_nodes(&[7], &mut rng), vec![7]);
    }

    /// The slow nemeses' faults: jitter is the given share of the delay; every draw is
    /// within the emulator's bounds.
    #[test]
    fn slow_faults_are_valid_link_faults() {
        let slow_link = jittered(
            Duration::from_millis(*SLOW_LINK_DELAY_MS.end()),
            SLOW_LINK_JITTER_FRACTION,
        );
        assert_eq!(slow_link.jitter, Duration::from_millis(50));
        assert!(slow_link.validate().is_ok());
        let slow_network = jittered(
            Duration::from_millis(*SLOW_NETWORK_DELAY_MS.end()),
            SLOW_NETWORK_JITTER_FRACTION,
        );
        assert!(slow_network.validate().is_ok());
        assert!(LinkFault::lossy(f64::from(*LOSSY_NETWORK_PERCENT.end()) / 100.0)
            .validate()
            .is_ok());
    }

    /// The new network nemeses are part of `all` and need the namespace network.
    #[test]
    fn network_nemeses_are_in_all() {
        for kind in [
            NemesisKind::PartitionRouter,
            NemesisKind::SlowLinkOne,
            NemesisKind::SlowNetwork,
            NemesisKind::LossyNetwork,
        ] {
            assert!(NemesisKind::all().contains(&kind), "{}", kind.name());
            assert!(kind.needs_network(), "{}", kind.name());
        }
    }

    /// A process is found by one exact argument of its command line.
    #[test]
    fn finds_a_process_by_an_argument() {
        let proc_dir = tempfile::tempdir().unwrap();
        for (pid, args) in [
            ("12", "ringkv-router\0--addr-file\0/run/x/router-0.addr\0"),
            ("34", "bash\0/run/x/router-1.addr\0"),
        ] {
            std::fs::create_dir(proc_dir.path().join(pid)).unwrap();
            std::fs::write(proc_dir.path().join(pid).join("cmdline"), args).unwrap();
        }
        std::fs::create_dir(proc_dir.path().join("self")).unwrap();
        let find = |arg: &str| find_process_with_arg(proc_dir.path(), Path::new(arg)).unwrap();
        assert_eq!(find("/run/x/router-1.addr"), Some(34));
        assert_eq!(find("/run/x/router-0.addr"), Some(12));
        assert_eq!(find("/run/x/router-0"), None);
    }

    /// A bridge of 3 blocks only the two ends; of 5, the two sides of the middle node.
    #[test]
    fn bridge_shares_the_middle_node() {
        assert_eq!(bridge(&[1, 2, 3]), vec![(1, 3)]);
        let five = bridge(&[1, 2, 3, 4, 5]);
        assert_eq!(five.len(), 4);
        assert!(five.iter().all(|(a, b)| *a != 3 && *b != 3));
    }
}
