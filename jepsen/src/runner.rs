//! One harness run: start the cluster, run the workloads while the nemesis injects faults,
//! heal, check liveness, take final reads, check the history and write the results
//! directory (history as EDN and JSON, nemesis schedule, verdict, summary, latency plot,
//! node logs).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::append::{checked_level, AppendShared};
use crate::checker::{self, Anomaly, Validity, Verdict};
use crate::cluster::{Cluster, ClusterSpec, Placement};
use crate::history::{History, OpType, Process, Recorder, F};
use crate::nemesis::{self, NemesisKind, Schedule};
use crate::plot;
use crate::workload::{self, DirectReads, RegisterShared, SetShared, SnapshotShared, Workload};

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub nodes: usize,
    pub shards: u32,
    pub replication_factor: u32,
    pub duration: Duration,
    pub seed: u64,
    pub workloads: Vec<Workload>,
    pub nemeses: Vec<NemesisKind>,
    /// Client processes per workload (the snapshot workload's alternate between writers and
    /// readers, starting with a writer).
    pub concurrency: usize,
    /// Registers in the register workload.
    pub keys: u64,
    pub schedule: Schedule,
    /// Largest jump of the `clock-bump` nemesis (whole minutes, at least one).
    pub clock_bump_max: Duration,
    /// The nodes' de-duplication window (`--dedup-window-ms`; `None`: the nodes' default, 5
    /// minutes). Below `clock_bump_max`, clock bumps jump past it.
    pub dedup_window_ms: Option<u64>,
    /// Parent of the run directory.
    pub out_dir: PathBuf,
    pub bin_dir: PathBuf,
    /// Tiny snapshot and purge thresholds, so lagging nodes must install snapshots.
    pub snapshot_pressure: bool,
    /// Register values are padded to this many bytes (0: just the number), e.g. so entries
    /// take the state machine's large-batch path.
    pub value_bytes: usize,
    /// Send a share of register reads straight to random nodes (catches stale reads).
    pub direct_reads: bool,
    /// Negative controls: run the cluster in a deliberately unsafe mode.
    pub unsafe_skip_read_index: bool,
    /// Nodes trust a leader lease this many ms long (0: off), longer than followers keep it.
    pub unsafe_read_lease_ms: u64,
    /// Not catchable by process faults alone (a killed process loses nothing the kernel
    /// has); needs a fault that drops the page cache (future disk nemesis).
    pub unsafe_skip_fsync: bool,
    pub unsafe_ack_before_commit: bool,
    /// Shard leaders commit writes at local timestamps (caught by the snapshot workload).
    pub unsafe_local_commit_ts: bool,
    /// Nodes treat a failed sync or write of their storage as success instead of stopping
    /// (`--unsafe-ignore-sync-errors`); caught with `fail_syncs_keep_unsynced` and
    /// `fail-syncs-all`, whose reboot loses what the nodes acknowledged meanwhile.
    pub unsafe_ignore_sync_errors: bool,
    /// The fail-syncs nemeses keep the unsynced data of a failed sync readable until the
    /// reboot that heals them (the page cache, what Linux usually does) instead of losing it
    /// at once (its worst case).
    pub fail_syncs_keep_unsynced: bool,
    /// Isolation level of the append, rw-register and bank workloads' transactions.
    pub isolation: ringkv_client::Isolation,
    /// The router commits repeatable-read transactions without the write-conflict check
    /// (lost updates; caught by the append workload).
    pub unsafe_skip_write_conflict: bool,
    /// The router commits serializable transactions without validating their reads
    /// (write skew; caught by the append workload at serializable).
    pub unsafe_skip_read_validation: bool,
    /// Nodes serve reads at a timestamp past the transaction locks below it (fractured
    /// reads; caught by the append workload at repeatable read).
    pub unsafe_ignore_locks: bool,
    /// The routers roll back every lock they meet without asking its primary's record
    /// (committed transactions lose writes; caught by the append workload).
    pub unsafe_resolve_without_primary: bool,
    /// Each router hands out timestamps from a range of this many it took ahead (0: off;
    /// with two routers or more, real-time order breaks: caught at serializable).
    pub unsafe_tso_prefetch: u32,
    /// The routers give every attempt of a shard write a fresh request id
    /// (`--unsafe-fresh-request-id-per-attempt`): a retry after an attempt that applied
    /// unanswered applies again (caught by the register workload).
    pub unsafe_fresh_request_ids: bool,
    /// The lock workload's resource accepts every fencing token
    /// (`--unsafe-unfenced-resource`): a stale holder's write lands after a newer holder's
    /// (caught by the lock workload).
    pub unsafe_unfenced_resource: bool,
    /// Watchers resume every watch from now instead of from their position, while
    /// recording the position (caught by the watch workload: lost events).
    pub unsafe_watch_resume_from_now: bool,
    /// The routers' timeout of one attempt to a node (`--rpc-timeout-ms`; `None`: theirs).
    pub router_rpc_timeout_ms: Option<u64>,
    /// Routers; clients start at each in turn and fail over to the others.
    pub routers: usize,
    /// Client request timeout.
    pub op_timeout: Duration,
    /// After healing, the cluster must serve again within this bound.
    pub liveness_timeout: Duration,
    /// Keep node data directories after the run.
    pub keep_data: bool,
    /// How many violations the verdict lists: a sample per kind (default) or all.
    pub listing: checker::Listing,
    /// Mutual TLS between every process and from the harness (the default; `--security
    /// insecure` turns it off).
    pub tls: bool,
}

impl RunOptions {
    /// Defaults for a run of `duration` with `nemeses`.
    pub fn new(
        duration: Duration,
        nemeses: Vec<NemesisKind>,
        bin_dir: PathBuf,
        out_dir: PathBuf,
    ) -> RunOptions {
        RunOptions {
            nodes: 3,
            shards: 4,
            replication_factor: 3,
            duration,
            seed: rand::random(),
            workloads: vec![Workload::Register, Workload::Set],
            nemeses,
            concurrency: 5,
            keys: 8,
            schedule: Schedule {
                quiet: Duration::from_secs(3),
                fault: Duration::from_secs(5),
            },
            clock_bump_max: Duration::from_secs(5 * 60),
            dedup_window_ms: None,
            out_dir,
            bin_dir,
            snapshot_pressure: false,
            value_bytes: 0,
            direct_reads: true,
            unsafe_skip_read_index: false,
            unsafe_read_lease_ms: 0,
            unsafe_skip_fsync: false,
            unsafe_ack_before_commit: false,
            unsafe_local_commit_ts: false,
            unsafe_ignore_sync_errors: false,
            fail_syncs_keep_unsynced: false,
            isolation: ringkv_client::Isolation::RepeatableRead,
            unsafe_skip_write_conflict: false,
            unsafe_skip_read_validation: false,
            unsafe_ignore_locks: false,
            unsafe_resolve_without_primary: false,
            unsafe_tso_prefetch: 0,
            unsafe_fresh_request_ids: false,
            unsafe_unfenced_resource: false,
            unsafe_watch_resume_from_now: false,
            router_rpc_timeout_ms: None,
            routers: 1,
            op_timeout: Duration::from_secs(2),
            liveness_timeout: Duration::from_secs(30),
            keep_data: false,
            listing: checker::Listing::Sample,
            tls: true,
        }
    }
}

/// What a run produced.
#[derive(Debug, Serialize)]
pub struct RunReport {
    pub dir: PathBuf,
    pub seed: u64,
    pub verdict: Verdict,
    pub ops: usize,
    pub nemesis_log: Vec<String>,
}

fn run_dir(out_dir: &Path, seed: u64) -> Result<PathBuf> {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0);
    let dir = out_dir.join(format!("{stamp}-{seed:016x}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Checks what partitions need; as root, installs missing tools with the project's own
/// script (`jepsen/scripts/install-deps.sh`) first.
fn ensure_network_tools() -> Result<()> {
    match crate::net::check_prerequisites() {
        Ok(()) => Ok(()),
        Err(crate::net::NetError::MissingTool { .. }) => {
            run_install_script()?;
            Ok(crate::net::check_prerequisites()?)
        }
        Err(err) => Err(err.into()),
    }
}

/// Runs `jepsen/scripts/install-deps.sh` (iproute2, iptables, faketime; needs root).
fn run_install_script() -> Result<()> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-deps.sh");
    info!(script = %script.display(), "installing the tools the nemeses need");
    let status = std::process::Command::new(&script)
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    if !status.success() {
        anyhow::bail!("{} failed ({status})", script.display());
    }
    Ok(())
}

/// Network slots beyond the initial nodes, for nodes the membership nemeses add.
fn spare_slots(options: &RunOptions) -> usize {
    if options.nemeses.iter().any(|kind| kind.changes_membership()) {
        3
    } else {
        0
    }
}

/// The routers' flags: the negative controls asked for, and transaction record collection
/// every 10 s of records older than 20 s, so that a run collects under its faults (a record
/// collected too early shows as a broken transaction).
fn router_args(options: &RunOptions) -> Vec<String> {
    let mut args: Vec<String> = ["--txn-gc-interval-ms", "10000", "--txn-gc-age-ms", "20000"]
        .into_iter()
        .map(str::to_string)
        .collect();
    if options.unsafe_skip_write_conflict {
        args.push("--unsafe-skip-write-conflict".to_string());
    }
    if options.unsafe_skip_read_validation {
        args.push("--unsafe-skip-read-validation".to_string());
    }
    if options.unsafe_resolve_without_primary {
        args.push("--unsafe-resolve-without-primary".to_string());
    }
    if options.unsafe_tso_prefetch > 0 {
        args.push("--unsafe-tso-prefetch".to_string());
        args.push(options.unsafe_tso_prefetch.to_string());
    }
    if options.unsafe_fresh_request_ids {
        args.push("--unsafe-fresh-request-id-per-attempt".to_string());
    }
    if let Some(ms) = options.router_rpc_timeout_ms {
        args.push("--rpc-timeout-ms".to_string());
        args.push(ms.to_string());
    }
    args
}

fn node_args(options: &RunOptions) -> Vec<String> {
    let mut args: Vec<String> = [
        "--heartbeat-interval-ms",
        "100",
        "--election-timeout-min-ms",
        "500",
        // Small segments: the log rotates every few seconds under the workloads, so kills
        // and power cuts meet rotations (a segment cut to its frames, synced, the next
        // created) and recovery reads many segments.
        "--wal-segment-bytes",
        "1048576",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let snapshot_pressure =
        options.snapshot_pressure || options.nemeses.iter().any(|kind| kind.needs_snapshot_pressure());
    if snapshot_pressure {
        args.extend(
            [
                "--snapshot-logs-since-last",
                "30",
                "--logs-to-keep-after-snapshot",
                "0",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
    }
    if options.nemeses.iter().any(|kind| kind.changes_membership()) {
        // Long enough that no single partition, kill or pause (one fault duration) gets a
        // node declared dead; short enough that replaced nodes are declared dead in a run.
        let dead_after = (options.schedule.fault * 3).max(Duration::from_secs(10));
        args.push("--dead-node-timeout-ms".to_string());
        args.push(dead_after.as_millis().to_string());
    }
    if options.unsafe_skip_read_index {
        args.push("--unsafe-skip-read-index".to_string());
    }
    if options.unsafe_read_lease_ms > 0 {
        args.push("--unsafe-read-lease-ms".to_string());
        args.push(options.unsafe_read_lease_ms.to_string());
    }
    if options.unsafe_skip_fsync {
        args.push("--unsafe-skip-fsync".to_string());
    }
    if options.unsafe_ack_before_commit {
        args.push("--unsafe-ack-before-commit".to_string());
    }
    if options.unsafe_local_commit_ts {
        args.push("--unsafe-local-commit-ts".to_string());
    }
    if options.unsafe_ignore_locks {
        args.push("--unsafe-ignore-locks".to_string());
    }
    if options.unsafe_ignore_sync_errors {
        args.push("--unsafe-ignore-sync-errors".to_string());
    }
    if let Some(window_ms) = options.dedup_window_ms {
        args.push("--dedup-window-ms".to_string());
        args.push(window_ms.to_string());
    }
    args
}

/// One key per shard (of `shards`) for the liveness probe: the first
/// `jepsen/liveness/<n>` that lands on each (a key's shard depends on the shard count only).
fn liveness_keys(shards: u32) -> Vec<Vec<u8>> {
    let mut keys: Vec<Option<Vec<u8>>> = vec![None; shards as usize];
    let mut missing = keys.len();
    let mut n = 0u64;
    // A key lands on each shard with probability 1/shards: a few thousand tries are plenty.
    while missing > 0 && n < 1_000_000 {
        let key = format!("jepsen/liveness/{n}").into_bytes();
        let shard = ringkv_ring::shard::shard_of_hash(ringkv_ring::key_hash(&key), shards).0 as usize;
        if let Some(slot @ None) = keys.get_mut(shard) {
            *slot = Some(key);
            missing -= 1;
        }
        n += 1;
    }
    keys.into_iter().flatten().collect()
}

/// Whether a write and then a linearizable read of it succeed on the shard of every key.
async fn serves_every_shard(client: &ringkv_client::Client, keys: &[Vec<u8>]) -> bool {
    for key in keys {
        let Ok(version) = client.put(key, b"1".to_vec()).await else {
            return false;
        };
        match client.get(key).await {
            Ok(Some(read)) if read.version >= version => {}
            _ => return false,
        }
    }
    true
}

async fn ring_of(cluster: &Cluster) -> Option<ringkv_ring::Ring> {
    let status = cluster.node_status(1).await?;
    let info = status.ring?;
    let members = info
        .members
        .iter()
        .map(|member| ringkv_ring::RingMember {
            node_id: member.node_id,
            addr: member.addr.clone(),
            state: ringkv_ring::MemberState::Active,
        })
        .collect();
    ringkv_ring::Ring::new(
        ringkv_ring::RingConfig {
            shards: info.shards,
            replication_factor: info.replication_factor,
            vnodes_per_node: info.vnodes_per_node,
        },
        members,
    )
    .ok()
}

/// Runs the harness once.
pub async fn run(options: RunOptions) -> Result<RunReport> {
    let dir = run_dir(&options.out_dir, options.seed)?;
    let cluster_dir = dir.join("cluster");
    std::fs::create_dir_all(&cluster_dir)?;
    info!(dir = %dir.display(), seed = options.seed, "starting run");
    // A machine that loses power keeps its address: nodes under disk faults get fixed
    // addresses in namespaces too (on loopback a node whose lost data held its port would
    // come back on another one).
    let needs_network = options
        .nemeses
        .iter()
        .any(|kind| kind.needs_network() || kind.needs_disk_faults());
    let slots = options.nodes + spare_slots(&options);
    let placement = if needs_network {
        ensure_network_tools()?;
        let run_id = format!("{:x}", options.seed & 0xffff_ffff);
        Placement::Namespaces(Box::new(crate::net::Network::create(&run_id, slots)?))
    } else {
        Placement::Loopback
    };
    let fake_clock = options.nemeses.iter().any(|kind| kind.needs_fake_clock());
    if fake_clock && crate::cluster::libfaketime().is_err() {
        run_install_script()?;
        crate::cluster::libfaketime()?;
    }
    let spec = ClusterSpec {
        nodes: options.nodes,
        slots,
        shards: options.shards,
        replication_factor: options.replication_factor,
        node_args: node_args(&options),
        routers: options.routers,
        router_args: router_args(&options),
        bin_dir: options.bin_dir.clone(),
        fake_clock,
        disk_faults: options.nemeses.iter().any(|kind| kind.needs_disk_faults()),
        tls: options.tls,
    };
    if spec.disk_faults {
        ringkv_faultfs::fuse_available().context("the lose-unsynced nemeses need FUSE")?;
    }
    let mut cluster = Cluster::start(spec, &cluster_dir, placement).await?;
    if options.fail_syncs_keep_unsynced {
        cluster.set_failed_sync_data(ringkv_faultfs::FailedSyncData::Kept);
    }
    let recorder = Recorder::new(Instant::now());
    let stop = CancellationToken::new();
    let mut rng = StdRng::seed_from_u64(options.seed);
    let mut clients = tokio::task::JoinSet::new();
    let mut process = 0u64;

    let direct = if options.direct_reads {
        ring_of(&cluster).await.map(|ring| DirectReads {
            node_addrs: cluster.addr_book(),
            ring,
            tls: cluster.client_tls(),
        })
    } else {
        None
    };
    let register = RegisterShared::new(options.keys, options.value_bytes, direct);
    let set = Arc::new(SetShared::default());
    let snapshot = Arc::new(SnapshotShared::default());
    let append = Arc::new(AppendShared::default());
    let rw_register = Arc::new(crate::rw_register::RwShared::default());
    if options.workloads.contains(&Workload::Bank) {
        let client = cluster.client(options.op_timeout).await?;
        crate::bank::set_up(&client, options.liveness_timeout).await?;
    }
    let batch = crate::batch::BatchShared::new(options.shards, options.value_bytes);
    let scan = crate::scan::ScanShared::new(options.value_bytes);
    let ranges = crate::delete_range::RangeShared::new(options.value_bytes);
    let ttl = crate::ttl::TtlShared::new(
        cluster.router_addrs.clone(),
        cluster.client_tls(),
        options.op_timeout,
    );
    // Watchers start after a timestamp taken before any writer starts, and outlive the
    // writers: they catch up after the heal.
    let mut watchers = tokio::task::JoinSet::new();
    let watch = if options.workloads.contains(&Workload::Watch) {
        let client = cluster.client(options.op_timeout).await?;
        Some(
            crate::watch::WatchShared::set_up(
                options.workloads.len() as u64 * options.concurrency as u64,
                &client,
                &recorder,
                options.shards,
                liveness_keys(options.shards.max(1)),
                options.liveness_timeout,
                options.unsafe_watch_resume_from_now,
            )
            .await?,
        )
    } else {
        None
    };
    if options.workloads.contains(&Workload::Scan) {
        // The keys present for the whole run, written (and recorded) before any scan.
        let client = cluster.client(options.op_timeout).await?;
        let setup_process = options.workloads.len() as u64 * options.concurrency as u64;
        crate::scan::set_up(setup_process, &client, &scan, &recorder, options.liveness_timeout).await?;
    }
    for workload in &options.workloads {
        for index in 0..options.concurrency {
            let client = cluster.client(options.op_timeout).await?;
            let recorder = recorder.clone();
            let stop = stop.clone();
            match workload {
                Workload::Register => {
                    let seed = rng.random();
                    clients.spawn(workload::register_client(
                        process,
                        client,
                        register.clone(),
                        recorder,
                        seed,
                        stop,
                    ));
                }
                Workload::Set => {
                    clients.spawn(workload::set_client(process, client, set.clone(), recorder, stop));
                }
                Workload::Timestamp => {
                    clients.spawn(workload::timestamp_client(process, client, recorder, stop));
                }
                // Writers and readers alternate, starting with a writer.
                Workload::Snapshot if index % 2 == 0 => {
                    clients.spawn(workload::snapshot_writer(
                        process,
                        client,
                        snapshot.clone(),
                        recorder,
                        stop,
                    ));
                }
                Workload::Append => {
                    let seed = rng.random();
                    clients.spawn(crate::append::append_client(
                        process,
                        client,
                        append.clone(),
                        options.isolation,
                        recorder,
                        seed,
                        stop,
                    ));
                }
                Workload::RwRegister => {
                    let seed = rng.random();
                    clients.spawn(crate::rw_register::rw_register_client(
                        process,
                        client,
                        rw_register.clone(),
                        options.isolation,
                        recorder,
                        seed,
                        stop,
                    ));
                }
                Workload::Batch => {
                    let seed = rng.random();
                    clients.spawn(crate::batch::batch_client(
                        process,
                        client,
                        batch.clone(),
                        recorder,
                        seed,
                        stop,
                    ));
                }
                Workload::Scan => {
                    let seed = rng.random();
                    clients.spawn(crate::scan::scan_client(
                        process,
                        client,
                        scan.clone(),
                        recorder,
                        seed,
                        stop,
                    ));
                }
                Workload::DeleteRange => {
                    let seed = rng.random();
                    clients.spawn(crate::delete_range::range_client(
                        process,
                        client,
                        ranges.clone(),
                        recorder,
                        seed,
                        stop,
                    ));
                }
                Workload::Lock => {
                    let seed = rng.random();
                    clients.spawn(crate::lock::lock_client(
                        process,
                        client,
                        options.unsafe_unfenced_resource,
                        recorder,
                        seed,
                        stop,
                    ));
                }
                Workload::Watch => {
                    let Some(watch) = watch.clone() else { continue };
                    if crate::watch::WatchShared::is_watcher(index, options.concurrency) {
                        watchers.spawn(crate::watch::watcher(
                            process,
                            client,
                            watch,
                            recorder,
                            options.liveness_timeout,
                        ));
                    } else {
                        let seed = rng.random();
                        clients.spawn(crate::watch::writer(process, client, watch, recorder, seed, stop));
                    }
                }
                Workload::Ttl => {
                    let seed = rng.random();
                    clients.spawn(crate::ttl::ttl_client(
                        process,
                        client,
                        ttl.clone(),
                        recorder,
                        seed,
                        stop,
                    ));
                }
                Workload::Bank => {
                    let seed = rng.random();
                    clients.spawn(crate::bank::bank_client(
                        process,
                        client,
                        options.isolation,
                        recorder,
                        seed,
                        stop,
                    ));
                }
                Workload::Snapshot => {
                    let seed = rng.random();
                    clients.spawn(workload::snapshot_reader(
                        process,
                        client,
                        snapshot.clone(),
                        recorder,
                        seed,
                        stop,
                    ));
                }
            }
            process += 1;
        }
    }

    let cluster = tokio::sync::Mutex::new(cluster);
    let started = Instant::now();
    let nemesis_stop = stop.clone();
    let duration = options.duration;
    let timer = async {
        tokio::time::sleep(duration).await;
        nemesis_stop.cancel();
    };
    let (nemesis_log, ()) = tokio::join!(
        nemesis::run_schedule(
            &cluster,
            &options.nemeses,
            options.schedule,
            options.clock_bump_max,
            &mut rng,
            &recorder,
            &stop
        ),
        timer
    );
    let mut nemesis_log = nemesis_log?;
    while clients.join_next().await.is_some() {}
    info!(elapsed_s = started.elapsed().as_secs(), "workload done; healing");

    // Heal, then the cluster must serve again within the liveness bound.
    let mut cluster = cluster.into_inner();
    nemesis::heal_all(&mut cluster).await?;
    recorder.nemesis(
        F::Nemesis("heal-all".to_string()),
        crate::history::OpValue::Text("healed".to_string()),
    );
    nemesis_log.push("heal-all".to_string());
    let mut liveness = Verdict {
        validity: Validity::Unknown,
        checker: "liveness".to_string(),
        ops_checked: 0,
        anomalies: Vec::new(),
        notes: Vec::new(),
    };
    for (id, disk) in cluster.disk_stats() {
        liveness.notes.push(format!(
            "disk of node {id}: {} fsyncs, {} fdatasyncs, {} directory fsyncs; {} of {} written bytes synced; {} bytes lost in {} drops and {} failed syncs",
            disk.fsyncs, disk.fdatasyncs, disk.dir_fsyncs, disk.synced_bytes, disk.written_bytes, disk.dropped_bytes, disk.drops, disk.failed_syncs
        ));
    }
    let healed_at = Instant::now();
    let probe = cluster.client(Duration::from_secs(2)).await?;
    let shards = cluster.ring().await.map_or(1, |ring| ring.shards.max(1));
    let keys = liveness_keys(shards);
    let live = ringkv_launcher::wait_for(
        "every shard to serve a write and a linearizable read after healing",
        options.liveness_timeout,
        || async { serves_every_shard(&probe, &keys).await.then_some(()) },
    )
    .await;
    match live {
        Ok(_) => {
            liveness.validity = Validity::Valid;
            liveness.notes.push(format!(
                "served again {:.1}s after healing (a write and a linearizable read on each of {} shards)",
                healed_at.elapsed().as_secs_f64(),
                keys.len()
            ));
        }
        Err(err) => {
            liveness.validity = Validity::Invalid;
            liveness.anomalies.push(Anomaly {
                kind: "liveness".to_string(),
                key: None,
                description: err.to_string(),
                ops: Vec::new(),
            });
        }
    }

    if options.nemeses.iter().any(|kind| kind.changes_membership()) {
        let members = cluster
            .ring()
            .await
            .map(|ring| {
                let members: Vec<String> = ring
                    .members
                    .iter()
                    .map(|member| format!("{}={}", member.node_id, member.state))
                    .collect();
                format!("ring epoch {}: {}", ring.epoch, members.join(" "))
            })
            .unwrap_or_else(|| "ring unknown".to_string());
        nemesis_log.push(format!("membership at end: {members}"));
    }

    if options.workloads.contains(&Workload::Set) {
        let reader = cluster.client(Duration::from_secs(10)).await?;
        let mut done = false;
        for _ in 0..5 {
            if workload::set_final_read(process, &reader, &set, &recorder).await {
                done = true;
                break;
            }
        }
        if !done {
            warn!("final set read failed five times");
        }
    }

    if options.workloads.contains(&Workload::Bank) {
        // One more read, a snapshot, after the faults: under a snapshot level it must sum to
        // the total too.
        let reader = cluster.client(Duration::from_secs(10)).await?;
        let mut done = false;
        for _ in 0..5 {
            if crate::bank::record_read(
                process,
                &reader,
                ringkv_client::Isolation::RepeatableRead,
                &recorder,
            )
            .await
            {
                done = true;
                break;
            }
        }
        if !done {
            warn!("final bank read failed five times");
        }
    }

    if let Some(watch) = &watch {
        // Every writer stopped and the cluster serves again: the watchers take their final
        // timestamp and watch until they passed it (each within the liveness bound).
        watch.finish();
        while watchers.join_next().await.is_some() {}
    }

    let history = recorder.history();
    let mut verdicts = vec![liveness];
    verdicts.extend(check_workloads(
        &history,
        &options.workloads,
        options.isolation,
        options.listing,
    ));
    let verdict = checker::combine(verdicts);
    drop(cluster);
    let report = RunReport {
        dir: dir.clone(),
        seed: options.seed,
        verdict,
        ops: history.ops.len(),
        nemesis_log,
    };
    write_results(&dir, &options, &history, &report)?;
    if !options.keep_data {
        for entry in std::fs::read_dir(&cluster_dir)?.flatten() {
            if entry.file_name().to_string_lossy().starts_with("node-") && entry.path().is_dir() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    Ok(report)
}

/// The verdict of each checker of `workloads` on `history` (transactions checked at
/// `isolation`), listing as many violations as `listing` says.
pub fn check_workloads(
    history: &History,
    workloads: &[Workload],
    isolation: ringkv_client::Isolation,
    listing: checker::Listing,
) -> Vec<Verdict> {
    let level = checked_level(isolation);
    let mut verdicts = Vec::new();
    for (position, workload) in workloads.iter().enumerate() {
        if workloads[..position].contains(workload) {
            continue;
        }
        match workload {
            Workload::Register => {
                let config = checker::linearizable::LinearizableConfig {
                    listing,
                    ..Default::default()
                };
                verdicts.push(checker::linearizable::check(history, &config));
                verdicts.push(checker::stale::check(history, listing));
            }
            Workload::Set => verdicts.push(checker::set::check_with(history, listing)),
            Workload::Timestamp => verdicts.push(checker::timestamps::check_with(history, listing)),
            Workload::Snapshot => verdicts.push(checker::snapshot::check_with(history, listing)),
            Workload::Append => verdicts.push(checker::elle::check_with(history, level, listing)),
            Workload::RwRegister => {
                verdicts.push(checker::elle::rw_register::check_with(history, level, listing));
            }
            Workload::Bank => verdicts.push(checker::bank::check_with(history, level, listing)),
            Workload::Batch => verdicts.push(checker::batch::check(history, listing)),
            Workload::Scan => verdicts.push(checker::scan::check(history, listing)),
            Workload::DeleteRange => verdicts.push(checker::delete_range::check(history, listing)),
            Workload::Lock => verdicts.push(checker::lock::check(history, listing)),
            Workload::Watch => verdicts.push(checker::watch::check(history, listing)),
            Workload::Ttl => verdicts.push(checker::ttl::check(history, listing)),
        }
    }
    verdicts
}

fn write_results(dir: &Path, options: &RunOptions, history: &History, report: &RunReport) -> Result<()> {
    std::fs::write(dir.join("history.edn"), crate::edn::history_to_edn(history))?;
    std::fs::write(dir.join("history.json"), history.to_json()?)?;
    std::fs::write(
        dir.join("verdict.json"),
        serde_json::to_string_pretty(&report.verdict)?,
    )?;
    let mut schedule = format!(
        "seed {}\nnemeses {:?}\nquiet {:?} fault {:?}\n",
        options.seed, options.nemeses, options.schedule.quiet, options.schedule.fault
    );
    for line in &report.nemesis_log {
        schedule.push_str(line);
        schedule.push('\n');
    }
    std::fs::write(dir.join("schedule.txt"), schedule)?;
    std::fs::write(dir.join("summary.txt"), summary(options, history, report))?;
    let (points, windows) = plot_data(history);
    let nemeses = if options.nemeses.len() > 3 {
        format!("{} nemeses", options.nemeses.len())
    } else {
        options
            .nemeses
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let title = format!(
        "ringkv {:?} under {nemeses}, seed {} — valid: {} ({} ops)",
        options.workloads,
        options.seed,
        validity_str(report.verdict.validity),
        report.ops
    );
    std::fs::write(
        dir.join("latency.svg"),
        plot::latency_svg(&title, &points, &windows),
    )?;
    Ok(())
}

/// `true`, `false` or `unknown`, as in the verdict file.
pub fn validity_str(validity: Validity) -> &'static str {
    match validity {
        Validity::Valid => "true",
        Validity::Invalid => "false",
        Validity::Unknown => "unknown",
    }
}

/// The summary's value size: what `--value-bytes` asked for, and what the workloads that cap
/// it used.
fn value_bytes(asked: usize) -> String {
    if asked == 0 {
        return "0 (the numbers alone)".to_string();
    }
    let batch = asked.min(crate::batch::MAX_VALUE_BYTES);
    let ranges = asked.min(crate::delete_range::MAX_VALUE_BYTES);
    format!("{asked} (register, scan); batch {batch}, delete-range {ranges}")
}

fn summary(options: &RunOptions, history: &History, report: &RunReport) -> String {
    let mut counts = std::collections::BTreeMap::new();
    for op in &history.ops {
        if matches!(op.process, Process::Client(_)) && op.op_type != OpType::Invoke {
            *counts
                .entry(format!("{:?} {:?}", op.f, op.op_type))
                .or_insert(0usize) += 1;
        }
    }
    let mut text = format!(
        "ringkv jepsen run\nseed: {}\nduration: {:?}\nnodes: {}, shards: {}, rf: {}, routers: {}\nworkloads: {:?}\nvalue bytes: {}\nnemeses: {:?}\nclock-bump max: {:?}, dedup window: {}\nunsafe: skip-read-index={} read-lease-ms={} skip-fsync={} ack-before-commit={} local-commit-ts={} skip-write-conflict={} skip-read-validation={} ignore-locks={} resolve-without-primary={} tso-prefetch={} ignore-sync-errors={} fresh-request-ids={} watch-resume-from-now={} unfenced-resource={}\nfailed syncs keep their data: {}, routers' attempt timeout: {}\nisolation: {:?}\nops recorded: {}\nvalid: {}\n\ncompletions:\n",
        options.seed,
        options.duration,
        options.nodes,
        options.shards,
        options.replication_factor,
        options.routers,
        options.workloads,
        value_bytes(options.value_bytes),
        options.nemeses.iter().map(|k| k.name()).collect::<Vec<_>>(),
        options.clock_bump_max,
        options
            .dedup_window_ms
            .map_or_else(|| "the nodes' default".to_string(), |ms| format!("{ms} ms")),
        options.unsafe_skip_read_index,
        options.unsafe_read_lease_ms,
        options.unsafe_skip_fsync,
        options.unsafe_ack_before_commit,
        options.unsafe_local_commit_ts,
        options.unsafe_skip_write_conflict,
        options.unsafe_skip_read_validation,
        options.unsafe_ignore_locks,
        options.unsafe_resolve_without_primary,
        options.unsafe_tso_prefetch,
        options.unsafe_ignore_sync_errors,
        options.unsafe_fresh_request_ids,
        options.unsafe_watch_resume_from_now,
        options.unsafe_unfenced_resource,
        options.fail_syncs_keep_unsynced,
        options
            .router_rpc_timeout_ms
            .map_or_else(|| "the routers' default".to_string(), |ms| format!("{ms} ms")),
        options.isolation,
        report.ops,
        validity_str(report.verdict.validity),
    );
    for (kind, count) in counts {
        text.push_str(&format!("  {kind}: {count}\n"));
    }
    text.push_str("\nanomalies:\n");
    if report.verdict.anomalies.is_empty() {
        text.push_str("  none\n");
    }
    for anomaly in &report.verdict.anomalies {
        text.push_str(&format!("  {}: {}\n", anomaly.kind, anomaly.description));
    }
    text.push_str("\nnotes:\n");
    for note in &report.verdict.notes {
        text.push_str(&format!("  {note}\n"));
    }
    text.push_str("\nnemesis:\n");
    for line in &report.nemesis_log {
        text.push_str(&format!("  {line}\n"));
    }
    text
}

fn plot_data(history: &History) -> (Vec<plot::Point>, Vec<plot::Window>) {
    let mut invokes = std::collections::HashMap::new();
    let mut points = Vec::new();
    let mut windows = Vec::new();
    let mut open: Vec<(String, f64, String)> = Vec::new();
    for op in &history.ops {
        // A watch op is a whole stream, not a request: its length is no latency.
        if op.f == F::Watch {
            continue;
        }
        let t = op.time_ns as f64 / 1e9;
        match (&op.process, op.op_type) {
            (Process::Client(p), OpType::Invoke) => {
                invokes.insert(*p, op.time_ns);
            }
            (Process::Client(p), done) => {
                if let Some(start) = invokes.remove(p) {
                    points.push(plot::Point {
                        time_s: start as f64 / 1e9,
                        latency_ms: (op.time_ns.saturating_sub(start)) as f64 / 1e6,
                        outcome: match done {
                            OpType::Ok => "ok",
                            OpType::Fail => "fail",
                            _ => "info",
                        },
                    });
                }
            }
            (Process::Nemesis, _) => {
                if let F::Nemesis(name) = &op.f {
                    if let Some(kind) = name.strip_prefix("start-") {
                        let detail = match &op.value {
                            crate::history::OpValue::Text(text) => text.clone(),
                            _ => String::new(),
                        };
                        open.push((kind.to_string(), t, detail));
                    } else if let Some(kind) = name.strip_prefix("stop-") {
                        if let Some(pos) = open.iter().position(|(k, _, _)| k == kind) {
                            let (kind, start, detail) = open.remove(pos);
                            windows.push(plot::Window {
                                start_s: start,
                                end_s: t,
                                label: format!("{kind} {detail}"),
                            });
                        }
                    }
                }
            }
        }
    }
    (downsample(points), windows)
}

/// Most points drawn: an SVG with hundreds of thousands of dots is unreadable and huge.
const MAX_PLOT_POINTS: usize = 20_000;

/// Keeps every failed and unknown op (up to half the budget) and an even sample of the rest.
fn downsample(points: Vec<plot::Point>) -> Vec<plot::Point> {
    if points.len() <= MAX_PLOT_POINTS {
        return points;
    }
    let (ok, other): (Vec<plot::Point>, Vec<plot::Point>) =
        points.into_iter().partition(|p| p.outcome == "ok");
    let other_budget = MAX_PLOT_POINTS / 2;
    let other_step = other.len().div_ceil(other_budget).max(1);
    let mut kept: Vec<plot::Point> = other.into_iter().step_by(other_step).collect();
    let ok_budget = MAX_PLOT_POINTS - kept.len();
    let ok_step = ok.len().div_ceil(ok_budget).max(1);
    kept.extend(ok.into_iter().step_by(ok_step));
    kept
}

#[cfg(test)]
mod liveness_tests {
    use super::*;

    /// The liveness probe has one key on every shard.
    #[test]
    fn liveness_keys_cover_every_shard() {
        for shards in [1u32, 4, 16, 64] {
            let keys = liveness_keys(shards);
            let mut covered: Vec<u32> = keys
                .iter()
                .map(|key| ringkv_ring::shard::shard_of_hash(ringkv_ring::key_hash(key), shards).0)
                .collect();
            covered.sort_unstable();
            assert_eq!(covered, (0..shards).collect::<Vec<_>>(), "{shards} shards");
        }
    }
}
