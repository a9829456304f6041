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
/// `slow-disk-*`: every sync of a victim takes a delay drawn from this range (one draw per
/// victim and fault): 2–10 heartbeat intervals of the runs' 100 ms, and up to twice their
/// minimum election timeout.
const SLOW_DISK_DELAY_MS: std::ops::RangeInclusive<u64> = 200..=1000;
/// `disk-full-one`: the disk fills once the victim has written this much more (one draw per
/// fault; 0: at once), so a write batch can be half-written when it fills. A debug build
/// under the smoke run's load writes a few tens of KiB a second per node: more headroom
/// would outlast a fault.
const DISK_FULL_HEADROOM_BYTES: std::ops::RangeInclusive<u64> = 0..=64 << 10;
/// `disk-full-one` at heal: how long a victim still running gets to stop by itself (at its
/// next write) before it is killed.
const DISK_FULL_STOP_WAIT: Duration = Duration::from_secs(10);
/// `partition-during-membership`: how long to watch for a replica set in flight (learners
/// catching up or a joint configuration) after the change was asked for.
const MEMBERSHIP_IN_FLIGHT_WAIT: Duration = Duration::from_secs(3);
/// `kill-during-snapshot` without a free slot: the victim stays down until the others applied
/// this many more entries on some shard (more than snapshot pressure's 30 per snapshot) …
const SNAPSHOT_LAG_ENTRIES: u64 = 60;
/// … or at most this long …
const SNAPSHOT_LAG_WAIT: Duration = Duration::from_secs(5);
/// … and how long after its start the harness watches its log for the first install.
const SNAPSHOT_INSTALL_WAIT: Duration = Duration::from_secs(8);
/// The line a node logs when a group finished installing a snapshot.
const SNAPSHOT_INSTALLED_LINE: &str = "installed snapshot";

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
    /// Jump the wall clock of the node leading the most groups (`clock_victim`) by whole
    /// minutes, forward or back: 1 up to the run's `clock_bump_max` (5 minutes unless set;
    /// past the nodes' de-duplication window when they run a shorter `--dedup-window-ms`).
    ClockBump,
    /// Flip the wall clock of the node leading the most groups back and forth every 200 ms.
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
    /// Every fsync/fdatasync of one node takes 200–1000 ms (faultfs; reads and writes stay
    /// fast); fast again at heal.
    SlowDiskOne,
    /// The syncs of a minority of the nodes take 200–1000 ms each (one draw per node).
    SlowDiskMinority,
    /// One node's disk fills up, after 0–64 KiB more of writes (faultfs: `ENOSPC` for
    /// writes that need new space). The node must stop by itself at its next write
    /// (fail-stop, exit code 74); healed as `fail-syncs-*` are: the node gets up to 10 s more
    /// to stop, one still running is then killed, the disk gets space again, the node
    /// restarts.
    DiskFullOne,
    /// Issue 14, defect 8: `kill -9` a member, empty its data directory and start it again
    /// under the same node id and address (after adding a fresh node, as `replace-node`
    /// does). It must not come back as a voter with no log or vote: it answers without the
    /// cluster's id, the cluster declares it dead after the dead-node timeout and re-creates
    /// its replicas elsewhere, and the harness stops it once the ring says so.
    WipeNode,
    /// Isolate a follower of a random shard, then ask the shard's leader to `TransferLeader`
    /// to it: the transfer must fail or time out cleanly and the old leader keep serving.
    TransferToPartitioned,
    /// Start an add-node or a decommission (as `add-node` / `decommission-node` choose), wait
    /// (up to 3 s) until some group has learners or a joint configuration, and isolate one of
    /// that group's nodes while the change is in flight.
    PartitionDuringMembership,
    /// Add a fresh node (snapshot pressure is switched on, so its new replicas start from
    /// snapshots) and `kill -9` it the moment its log shows its first snapshot install (the
    /// other groups' installs are in flight), or after 8 s; restarted at heal. With no free
    /// slot, a member killed for 2 s and restarted is the victim instead.
    KillDuringSnapshot,
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
                // A wiped node must come back at its old address, which on loopback its
                // data directory kept.
                | NemesisKind::WipeNode
                | NemesisKind::TransferToPartitioned
                | NemesisKind::PartitionDuringMembership
        )
    }

    /// Whether the nemesis changes membership (needs spare network slots and a short
    /// dead-node timeout).
    pub fn changes_membership(self) -> bool {
        matches!(
            self,
            NemesisKind::AddNode
                | NemesisKind::DecommissionNode
                | NemesisKind::ReplaceNode
                | NemesisKind::WipeNode
                | NemesisKind::PartitionDuringMembership
                | NemesisKind::KillDuringSnapshot
        )
    }

    /// Whether the nemesis needs the nodes to snapshot and purge their logs often, so that new
    /// replicas start from snapshots.
    pub fn needs_snapshot_pressure(self) -> bool {
        self == NemesisKind::KillDuringSnapshot
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
                | NemesisKind::SlowDiskOne
                | NemesisKind::SlowDiskMinority
                | NemesisKind::DiskFullOne
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
            NemesisKind::SlowDiskOne => "slow-disk-one",
            NemesisKind::SlowDiskMinority => "slow-disk-minority",
            NemesisKind::DiskFullOne => "disk-full-one",
            NemesisKind::WipeNode => "wipe-node",
            NemesisKind::TransferToPartitioned => "transfer-to-partitioned",
            NemesisKind::PartitionDuringMembership => "partition-during-membership",
            NemesisKind::KillDuringSnapshot => "kill-during-snapshot",
        }
    }

    /// Every nemesis but the power cuts and failing disks (`lose-unsynced-*`,
    /// `fail-syncs-*`), which runs name explicitly. The slow and full disks are in, so a run
    /// of `all` puts every node's data directory on a FUSE mount (slower; needs `/dev/fuse`).
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
            SlowDiskOne,
            SlowDiskMinority,
            DiskFullOne,
            WipeNode,
            TransferToPartitioned,
            PartitionDuringMembership,
            KillDuringSnapshot,
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
    /// Nodes whose syncs are slow: make them fast again.
    DisksSlow(Vec<usize>),
    /// Nodes whose disks are full: reap (or kill) them, give the disks space, restart them.
    DisksFull(Vec<usize>),
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

/// Where `clock-bump` and `clock-strobe` move the clock: the node leading the most groups
/// (every shard's, plus the system group's, whose leader serves the timestamp oracle) — the
/// leader is where de-duplication records are aged, expiries judged and leases held, so its
/// clock is the one that must go past every window (issue 14). A random one of those tied;
/// a random node when no leader is known. Also says what the victim led, for the log.
async fn clock_victim(cluster: &Cluster, nodes: &[usize], rng: &mut StdRng) -> (usize, String) {
    let mut leaders: Vec<usize> = cluster.leaders().await.into_values().collect();
    leaders.extend(cluster.system_leader().await);
    let groups = leaders.len();
    let busiest = leading_the_most(&leaders);
    match busiest.choose(rng).copied() {
        Some(victim) => {
            let led = leaders.iter().filter(|leader| **leader == victim).count();
            (victim, format!("leading {led} of {groups} groups"))
        }
        None => (
            nodes[rng.random_range(0..nodes.len())],
            "no leader known: a random node".to_string(),
        ),
    }
}

/// The nodes that appear most often in `leaders` (one entry per group led), in id order.
fn leading_the_most(leaders: &[usize]) -> Vec<usize> {
    let mut led: BTreeMap<usize, usize> = BTreeMap::new();
    for leader in leaders {
        *led.entry(*leader).or_default() += 1;
    }
    let most = led.values().copied().max().unwrap_or(0);
    led.into_iter()
        .filter(|(_, count)| *count == most)
        .map(|(node, _)| node)
        .collect()
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
        NemesisKind::SlowDiskOne | NemesisKind::SlowDiskMinority => {
            let count = if kind == NemesisKind::SlowDiskOne {
                1
            } else {
                ((n - 1) / 2).max(1)
            };
            let victims = random_nodes(&nodes, count, rng);
            let mut delays = Vec::new();
            for id in &victims {
                let delay = Duration::from_millis(rng.random_range(SLOW_DISK_DELAY_MS));
                cluster.slow_syncs(*id, delay)?;
                delays.push(format!("{id}: {delay:?}"));
            }
            Ok((
                Active::DisksSlow(victims),
                format!("syncs slowed ({})", delays.join(", ")),
            ))
        }
        NemesisKind::DiskFullOne => {
            let victim = nodes[rng.random_range(0..n)];
            let headroom = rng.random_range(DISK_FULL_HEADROOM_BYTES);
            cluster.fill_disk(victim, headroom)?;
            Ok((
                Active::DisksFull(vec![victim]),
                format!("disk of {victim} full after {headroom} more bytes"),
            ))
        }
        NemesisKind::WipeNode => Ok((Active::Membership, wipe_node(cluster, rng).await)),
        NemesisKind::TransferToPartitioned => {
            let detail = transfer_to_partitioned(cluster, rng).await?;
            Ok((Active::Partition, detail))
        }
        NemesisKind::PartitionDuringMembership => {
            let change = if rng.random_bool(0.5) {
                NemesisKind::AddNode
            } else {
                NemesisKind::DecommissionNode
            };
            let mut detail = change_membership(cluster, change, rng).await;
            detail.push_str("; ");
            detail.push_str(&partition_in_flight(cluster, rng).await?);
            Ok((Active::Partition, detail))
        }
        NemesisKind::KillDuringSnapshot => kill_during_snapshot(cluster, rng).await,
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
            let (victim, led) = clock_victim(cluster, &nodes, rng).await;
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
                format!("clock of {victim} ({led}) bumped {minutes:+} min"),
            ))
        }
        NemesisKind::ClockStrobe => {
            let (victim, led) = clock_victim(cluster, &nodes, rng).await;
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
                format!("clock of {victim} ({led}) strobing between +0 and +{delta} s"),
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
        _ if replacement_pending(cluster) => {
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

/// Whether a node killed for good or wiped is not declared dead yet: one replacement at a
/// time, as a second victim could take a quorum of some shard (or of the system group, which
/// declares nodes dead) down with the first.
fn replacement_pending(cluster: &Cluster) -> bool {
    cluster
        .fates()
        .values()
        .any(|fate| matches!(fate, Fate::Replaced | Fate::Wiped))
}

/// `wipe-node`: adds a fresh node first (so that declaring the victim dead keeps RF owners),
/// then wipes a running owner and restarts it under its id; the detail says what the wiped
/// node answers (it must have no cluster id and no replica). Refusals are the detail.
async fn wipe_node(cluster: &mut Cluster, rng: &mut StdRng) -> String {
    if replacement_pending(cluster) {
        return "a replaced or wiped node is not declared dead yet: no second victim".to_string();
    }
    let owners = cluster.ring_owners().await;
    let candidates: Vec<usize> = cluster
        .node_ids()
        .into_iter()
        .filter(|id| owners.contains(id) && cluster.is_running(*id))
        .collect();
    let (added, mut detail) = if cluster.has_free_slot() {
        add_node(cluster).await
    } else {
        (None, "no free slot".to_string())
    };
    if owners.len() + usize::from(added.is_some()) <= cluster.replication_factor() {
        detail.push_str("; too few owners to wipe one");
        return detail;
    }
    let Some(victim) = candidates.choose(rng).copied() else {
        return detail;
    };
    if let Err(err) = cluster.wipe_node(victim).await {
        return format!("{detail}; wiping node {victim} failed: {err:#}");
    }
    let answer = match cluster.node_status(victim).await {
        Some(status)
            if status.cluster_id.is_empty()
                && status.replicas.iter().all(|replica| replica.shard_id.is_none()) =>
        {
            "it answers without a cluster id, holding no shard".to_string()
        }
        Some(status) => {
            let shards: Vec<u32> = status
                .replicas
                .iter()
                .filter_map(|replica| replica.shard_id)
                .collect();
            warn!(node = victim, cluster_id = %status.cluster_id, ?shards, "a wiped node answers as a member");
            format!(
                "it answers as a member (must not): cluster id {:?}, shards {shards:?}",
                status.cluster_id
            )
        }
        None => "it does not answer its status".to_string(),
    };
    format!("{detail}; wiped node {victim} and restarted it: {answer}")
}

/// Shards with a leader among the running nodes: (shard, leader, its other voters).
fn led_shards(statuses: &BTreeMap<usize, v1::NodeStatusResponse>) -> Vec<(u32, usize, Vec<usize>)> {
    let mut led = Vec::new();
    for (id, status) in statuses {
        for replica in &status.replicas {
            if let (Some(shard), v1::ReplicaRole::Leader) = (replica.shard_id, replica.role()) {
                let others = replica
                    .voters
                    .iter()
                    .map(|voter| *voter as usize)
                    .filter(|voter| voter != id)
                    .collect();
                led.push((shard, *id, others));
            }
        }
    }
    led
}

/// `transfer-to-partitioned`: isolates a follower of a random shard and asks the leader to
/// hand it the leadership; the detail is the transfer's outcome and who leads afterwards.
async fn transfer_to_partitioned(cluster: &Cluster, rng: &mut StdRng) -> Result<String> {
    // Targets are members: a leader may still list a replaced or wiped node as a voter.
    let members = cluster.node_ids();
    let led: Vec<(u32, usize, Vec<usize>)> = led_shards(&cluster.statuses().await)
        .into_iter()
        .map(|(shard, leader, others)| {
            let others = others.into_iter().filter(|id| members.contains(id)).collect();
            (shard, leader, others)
        })
        .filter(|(_, _, others): &(u32, usize, Vec<usize>)| !others.is_empty())
        .collect();
    let Some((shard, from, others)) = led.choose(rng).cloned() else {
        return Ok("no shard leader with a follower known".to_string());
    };
    let Some(target) = others.choose(rng).copied() else {
        return Ok(format!("shard {shard} has no other voter"));
    };
    let rest: Vec<usize> = members.iter().copied().filter(|id| *id != target).collect();
    cluster.block(&pairs_between(&[vec![target], rest]))?;
    let outcome = match cluster.transfer_leader(shard, from, target).await {
        Ok(term) => format!("transfer {from} -> {target} succeeded (term {term})"),
        Err(err) => format!("transfer {from} -> {target} failed: {err:#}"),
    };
    let leader = match cluster.leaders().await.get(&shard) {
        Some(leader) if *leader == from => format!("{from} still leads"),
        Some(leader) => format!("now led by {leader}"),
        None => "no leader known".to_string(),
    };
    Ok(format!(
        "isolated {target}, a follower of shard {shard}; {outcome}; {leader}"
    ))
}

/// The first group found with a replica set in flight — a shard with learners catching up,
/// or any group in a joint configuration (the system group always has learners: every member
/// beyond its voters) — as (shard, every voter and learner, joint); `None` when all are
/// settled.
fn membership_in_flight(
    statuses: &BTreeMap<usize, v1::NodeStatusResponse>,
) -> Option<(Option<u32>, Vec<usize>, bool)> {
    statuses
        .values()
        .flat_map(|status| &status.replicas)
        .find_map(|replica| {
            let learning = replica.shard_id.is_some() && !replica.learners.is_empty();
            if replica.role() != v1::ReplicaRole::Leader || !(learning || replica.joint) {
                return None;
            }
            let mut nodes: Vec<usize> = replica
                .voters
                .iter()
                .chain(&replica.learners)
                .map(|id| *id as usize)
                .collect();
            nodes.sort_unstable();
            nodes.dedup();
            Some((replica.shard_id, nodes, replica.joint))
        })
}

/// `partition-during-membership`, after the change was asked for: watches (bounded) for a
/// group in flight and isolates one of its nodes — or, when none shows, a random member.
async fn partition_in_flight(cluster: &Cluster, rng: &mut StdRng) -> Result<String> {
    let in_flight =
        ringkv_launcher::wait_for("a replica set in flight", MEMBERSHIP_IN_FLIGHT_WAIT, || async {
            membership_in_flight(&cluster.statuses().await)
        })
        .await
        .ok();
    let members = cluster.node_ids();
    let (victim, what) = match &in_flight {
        Some((group, nodes, joint)) => {
            let in_group: Vec<usize> = nodes.iter().copied().filter(|id| members.contains(id)).collect();
            let group = group.map_or("the system group".to_string(), |shard| format!("shard {shard}"));
            let state = if *joint { "joint" } else { "with learners" };
            (
                in_group.choose(rng).copied(),
                format!("{group} {state} {nodes:?}"),
            )
        }
        None => (
            None,
            format!("no group in flight within {MEMBERSHIP_IN_FLIGHT_WAIT:?}"),
        ),
    };
    let Some(victim) = victim.or_else(|| members.choose(rng).copied()) else {
        return Ok(format!("{what}; no member to isolate"));
    };
    let rest: Vec<usize> = members.iter().copied().filter(|id| *id != victim).collect();
    cluster.block(&pairs_between(&[vec![victim], rest]))?;
    Ok(format!("{what}: isolated {victim}"))
}

/// How many snapshot installs a node's log shows after byte `from`, and the log's length.
fn snapshot_installs_since(log: &Path, from: u64) -> (usize, u64) {
    use std::io::{Read, Seek};
    let Ok(mut file) = std::fs::File::open(log) else {
        return (0, from);
    };
    let mut text = String::new();
    if file.seek(std::io::SeekFrom::Start(from)).is_err() || file.read_to_string(&mut text).is_err() {
        return (0, from);
    }
    (
        text.matches(SNAPSHOT_INSTALLED_LINE).count(),
        from + text.len() as u64,
    )
}

/// `kill-during-snapshot`: finds a node about to install snapshots and `kill -9`s it as soon
/// as its log shows the first install (the other groups' installs are then in flight), or at
/// the end of a bounded wait. The node is a fresh one added now (its new replicas start from
/// snapshots, the logs being purged under snapshot pressure); with no free slot, a member
/// killed, kept down for a while and restarted (a leader postpones its purge while a
/// replication to the node is in flight, so this finds fewer installs). Restarted at heal.
async fn kill_during_snapshot(cluster: &mut Cluster, rng: &mut StdRng) -> Result<(Active, String)> {
    let (victim, log_start, mut detail) = if cluster.has_free_slot() {
        match cluster.add_node().await {
            Ok(id) => (id, 0, format!("added node {id}")),
            Err(err) => return Ok((Active::Membership, format!("add failed: {err:#}"))),
        }
    } else {
        let running: Vec<usize> = cluster
            .node_ids()
            .into_iter()
            .filter(|id| cluster.is_running(*id))
            .collect();
        let Some(victim) = running.choose(rng).copied() else {
            return Ok((Active::Membership, "no member running".to_string()));
        };
        let before = applied_indexes(&cluster.statuses().await);
        cluster.kill_node(victim)?;
        let down = tokio::time::Instant::now();
        // Down until the others applied more entries on some shard than a snapshot covers
        // (bounded): its logs are purged past the victim, which must install a snapshot.
        let lagging = ringkv_launcher::wait_for(
            "the others to move past the victim",
            SNAPSHOT_LAG_WAIT,
            || async {
                let now = applied_indexes(&cluster.statuses().await);
                now.iter()
                    .any(|(shard, index)| {
                        *index >= before.get(shard).copied().unwrap_or(0) + SNAPSHOT_LAG_ENTRIES
                    })
                    .then_some(())
            },
        )
        .await
        .is_ok();
        let log_start = std::fs::metadata(cluster.node_log(victim)).map_or(0, |meta| meta.len());
        cluster.start_node(victim).await?;
        let detail = format!(
            "no free slot: killed {victim}, restarted it {:?} later ({})",
            down.elapsed(),
            if lagging { "lagging" } else { "not lagging yet" }
        );
        (victim, log_start, detail)
    };
    let log = cluster.node_log(victim);
    let started = tokio::time::Instant::now();
    let installs = ringkv_launcher::wait_for("a snapshot install", SNAPSHOT_INSTALL_WAIT, || {
        let (installs, _) = snapshot_installs_since(&log, log_start);
        std::future::ready((installs > 0).then_some(installs))
    })
    .await
    .unwrap_or(0);
    cluster.kill_node(victim)?;
    if installs > 0 {
        detail.push_str(&format!(
            "; killed {victim} {:?} later, {installs} snapshot install(s) done",
            started.elapsed()
        ));
    } else {
        detail.push_str(&format!(
            "; no snapshot install within {SNAPSHOT_INSTALL_WAIT:?}: killed {victim} anyway"
        ));
    }
    Ok((Active::Killed(vec![victim]), detail))
}

/// Moves a random shard's leadership to a random other voter; a refusal is the detail.
async fn transfer_leader(cluster: &Cluster, rng: &mut StdRng) -> String {
    let led = led_shards(&cluster.statuses().await);
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
        Active::DisksSlow(victims) => {
            for id in victims {
                cluster.slow_syncs(id, Duration::ZERO)?;
            }
        }
        Active::DisksFull(victims) => {
            // As with failing disks: every victim down first, then the disks get space again
            // (a node started on a full disk stops at once) and the nodes restart.
            let mut outcomes = Vec::new();
            for &id in &victims {
                match stopped_by_itself(cluster, id, DISK_FULL_STOP_WAIT).await? {
                    Some(code) => outcomes.push(format!("{id} stopped itself (exit code {code:?})")),
                    None if cluster.is_running(id) => {
                        warn!(node = id, "the node still runs on its full disk; killing it");
                        cluster.kill_node(id)?;
                        outcomes.push(format!("{id} still ran (killed)"));
                    }
                    None => outcomes.push(format!("{id} was down")),
                }
            }
            for id in victims {
                cluster.unfill_disk(id)?;
                cluster.start_node(id).await?;
            }
            return Ok(format!("healed; {}", outcomes.join(", ")));
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

/// Reaps node `id` once it has exited by itself, waiting up to `wait` for it: its exit code
/// (`None` inside when a signal ended it); `None` when it is down already or still runs.
async fn stopped_by_itself(cluster: &mut Cluster, id: usize, wait: Duration) -> Result<Option<Option<i32>>> {
    let stopped = ringkv_launcher::wait_for("the node to stop by itself", wait, || {
        let probe = match cluster.reap_node(id) {
            Ok(Some(code)) => Some(Ok(Some(code))),
            Ok(None) if !cluster.is_running(id) => Some(Ok(None)),
            Ok(None) => None,
            Err(err) => Some(Err(err)),
        };
        std::future::ready(probe)
    })
    .await;
    // Still running when the wait ran out.
    stopped.unwrap_or(Ok(None))
}

/// The highest applied index of each shard over `statuses` (the system group left out).
fn applied_indexes(statuses: &BTreeMap<usize, v1::NodeStatusResponse>) -> BTreeMap<u32, u64> {
    let mut applied = BTreeMap::new();
    for replica in statuses.values().flat_map(|status| &status.replicas) {
        if let Some(shard) = replica.shard_id {
            let entry = applied.entry(shard).or_insert(0);
            *entry = (*entry).max(replica.applied_index);
        }
    }
    applied
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
    // Disks work again before any node starts: a node started on a full disk stops at once.
    cluster.heal_disks()?;
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

    /// Clock faults go to the node leading the most groups; ties are all candidates; with no
    /// leader known there is none (the caller then picks a random node).
    #[test]
    fn clock_faults_target_the_node_leading_the_most_groups() {
        assert_eq!(leading_the_most(&[2, 1, 2, 3, 2, 1]), vec![2]);
        assert_eq!(leading_the_most(&[3, 1, 1, 3]), vec![1, 3]);
        assert!(leading_the_most(&[]).is_empty());
    }

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

    /// The disk and membership-under-fault nemeses are part of `all`; the disk ones mount
    /// faultfs, the ones that restart a node at its address or partition need the network,
    /// the ones that add nodes get spare slots, and only kill-during-snapshot forces snapshot
    /// pressure.
    #[test]
    fn disk_and_membership_fault_nemeses_are_in_all() {
        use NemesisKind::*;
        let all = NemesisKind::all();
        for kind in [
            SlowDiskOne,
            SlowDiskMinority,
            DiskFullOne,
            WipeNode,
            TransferToPartitioned,
            PartitionDuringMembership,
            KillDuringSnapshot,
        ] {
            assert!(all.contains(&kind), "{}", kind.name());
            assert_eq!(
                kind.needs_disk_faults(),
                matches!(kind, SlowDiskOne | SlowDiskMinority | DiskFullOne),
                "{}",
                kind.name()
            );
            assert_eq!(
                kind.needs_network(),
                matches!(kind, WipeNode | TransferToPartitioned | PartitionDuringMembership),
                "{}",
                kind.name()
            );
            assert_eq!(
                kind.changes_membership(),
                matches!(kind, WipeNode | PartitionDuringMembership | KillDuringSnapshot),
                "{}",
                kind.name()
            );
            assert_eq!(
                kind.needs_snapshot_pressure(),
                kind == KillDuringSnapshot,
                "{}",
                kind.name()
            );
        }
        let names: std::collections::BTreeSet<&str> = all.iter().map(|kind| kind.name()).collect();
        assert_eq!(names.len(), all.len(), "names are unique");
    }

    fn replica(shard: Option<u32>, role: v1::ReplicaRole, voters: &[u64]) -> v1::ReplicaInfo {
        let mut replica = v1::ReplicaInfo {
            shard_id: shard,
            voters: voters.to_vec(),
            ..Default::default()
        };
        replica.set_role(role);
        replica
    }

    fn statuses(nodes: Vec<(usize, Vec<v1::ReplicaInfo>)>) -> BTreeMap<usize, v1::NodeStatusResponse> {
        nodes
            .into_iter()
            .map(|(id, replicas)| {
                (
                    id,
                    v1::NodeStatusResponse {
                        node_id: id as u64,
                        replicas,
                        ..Default::default()
                    },
                )
            })
            .collect()
    }

    /// A shard is in flight when its leader reports learners or a joint configuration, the
    /// system group only when joint; the nodes to isolate are its voters and learners.
    /// Followers' views and settled groups are not.
    #[test]
    fn membership_in_flight_is_a_leader_with_learners_or_joint() {
        use v1::ReplicaRole::{Follower, Leader};
        let settled = statuses(vec![
            (1, vec![replica(Some(0), Leader, &[1, 2, 3])]),
            (2, vec![replica(Some(0), Follower, &[1, 2, 3])]),
        ]);
        assert_eq!(membership_in_flight(&settled), None);
        let mut system_with_learners = replica(None, Leader, &[1, 2, 3]);
        system_with_learners.learners = vec![4, 5];
        assert_eq!(
            membership_in_flight(&statuses(vec![(1, vec![system_with_learners])])),
            None,
            "the system group always has learners"
        );

        let mut follower_with_learner = replica(Some(1), Follower, &[1, 2, 3]);
        follower_with_learner.learners = vec![4];
        let mut leader_with_learner = replica(Some(2), Leader, &[2, 3, 1]);
        leader_with_learner.learners = vec![4];
        let learning = statuses(vec![
            (1, vec![follower_with_learner]),
            (2, vec![leader_with_learner]),
        ]);
        assert_eq!(
            membership_in_flight(&learning),
            Some((Some(2), vec![1, 2, 3, 4], false))
        );

        let mut joint = replica(None, Leader, &[1, 2, 3, 4]);
        joint.joint = true;
        assert_eq!(
            membership_in_flight(&statuses(vec![(3, vec![joint])])),
            Some((None, vec![1, 2, 3, 4], true))
        );
    }

    /// The shards a transfer can start from: each leader with its other voters; the system
    /// group and followers are not listed.
    #[test]
    fn led_shards_lists_leaders_and_their_other_voters() {
        use v1::ReplicaRole::{Follower, Leader};
        let led = led_shards(&statuses(vec![
            (
                1,
                vec![
                    replica(Some(0), Leader, &[1, 2, 3]),
                    replica(None, Leader, &[1, 2, 3]),
                ],
            ),
            (
                2,
                vec![
                    replica(Some(0), Follower, &[1, 2, 3]),
                    replica(Some(1), Leader, &[2]),
                ],
            ),
        ]));
        assert_eq!(led, vec![(0, 1, vec![2, 3]), (1, 2, vec![])]);
    }

    /// Snapshot installs are counted only after the given offset of the log.
    #[test]
    fn snapshot_installs_are_counted_from_an_offset() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("node-1.log");
        std::fs::write(&log, "x installed snapshot group=s1\n").unwrap();
        let (before, length) = snapshot_installs_since(&log, 0);
        assert_eq!(before, 1);
        let mut text = std::fs::read_to_string(&log).unwrap();
        text.push_str("started\ninstalled snapshot group=s2\ninstalled snapshot group=system\n");
        std::fs::write(&log, text).unwrap();
        assert_eq!(snapshot_installs_since(&log, length).0, 2);
        assert_eq!(
            snapshot_installs_since(&dir.path().join("missing.log"), 0),
            (0, 0)
        );
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
