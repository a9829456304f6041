//! The CI smoke run and the negative controls: short harness runs against real processes.
//!
//! Partitions need root (network namespaces + iptables, installed by
//! `jepsen/scripts/install-deps.sh`); without them these tests fail with a readable error.

use std::path::PathBuf;
use std::time::Duration;

use ringkv_jepsen::checker::Validity;
use ringkv_jepsen::nemesis::{NemesisKind, Schedule};
use ringkv_jepsen::runner::{self, RunOptions};
use ringkv_jepsen::testing;
use ringkv_jepsen::workload::Workload;

/// The runs take turns: three clusters at once on a 2-core machine would measure the
/// machine, not ringkv.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `$RINGKV_BIN_DIR`, else the profile directory above this test's `deps/`.
fn bin_dir() -> PathBuf {
    ringkv_launcher::binaries::env_bin_dir()
        .unwrap_or_else(|| ringkv_launcher::binaries::executable_dir().expect("locating the test executable"))
}

fn options(seconds: u64, nemeses: Vec<NemesisKind>, out: &tempfile::TempDir, seed: u64) -> RunOptions {
    let mut options = RunOptions::new(
        Duration::from_secs(seconds),
        nemeses,
        bin_dir(),
        out.path().to_path_buf(),
    );
    // Distinct seeds: the seed also names the run's network namespaces.
    options.seed = seed;
    options.concurrency = 4;
    options.schedule = Schedule {
        quiet: Duration::from_secs(2),
        fault: Duration::from_secs(5),
    };
    options
}

/// A short run with a majority/minority partition, a node kill and two router faults (two
/// routers: one killed, one paused), register, set, timestamp, snapshot, list-append and
/// bank workloads, comes out valid; its EDN history parses back to the same operations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_partition_and_kill_is_valid() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let out = tempfile::tempdir()?;
    // Four faults of 2 + 5 s each, with room for restarts: every kind runs once.
    let mut options = options(
        36,
        vec![
            NemesisKind::PartitionMajority,
            NemesisKind::KillOne,
            NemesisKind::KillRouter,
            NemesisKind::PauseRouter,
        ],
        &out,
        0x5eed_0001,
    );
    options.snapshot_pressure = true;
    options.routers = 2;
    options.workloads = vec![
        Workload::Register,
        Workload::Set,
        Workload::Timestamp,
        Workload::Snapshot,
        Workload::Append,
        Workload::Bank,
    ];
    let report = runner::run(options).await?;
    let summary = std::fs::read_to_string(report.dir.join("summary.txt"))?;
    assert_eq!(report.verdict.validity, Validity::Valid, "{summary}");
    assert!(report.ops > 100, "the workload ran: {summary}");
    assert!(
        report.verdict.checker.contains("timestamps")
            && report.verdict.checker.contains("snapshot")
            && report.verdict.checker.contains("list-append")
            && report.verdict.checker.contains("bank"),
        "the timestamps, snapshot reads and transactions were checked: {summary}"
    );
    assert!(
        report
            .nemesis_log
            .iter()
            .any(|line| line.starts_with("start partition"))
            && report
                .nemesis_log
                .iter()
                .any(|line| line.starts_with("start kill-one"))
            && report
                .nemesis_log
                .iter()
                .any(|line| line.starts_with("start kill-router killed router")),
        "the faults were injected: {:?}",
        report.nemesis_log
    );
    let edn = std::fs::read_to_string(report.dir.join("history.edn"))?;
    let parsed = ringkv_jepsen::edn::parse_history(&edn)?;
    assert_eq!(parsed.ops.len(), report.ops, "the EDN history parses back whole");
    for file in [
        "history.json",
        "verdict.json",
        "schedule.txt",
        "latency.svg",
        "cluster/node-1.log",
    ] {
        assert!(report.dir.join(file).exists(), "{file} written");
    }
    Ok(())
}

/// The same faults with mutual TLS between every process and from the harness (`--security
/// tls`; issue 15): nodes in network namespaces with certificates for their addresses,
/// authenticated gossip, workload clients, direct reads and probes presenting the client
/// certificate; a partition and a node kill, register and set workloads, come out valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_with_tls_is_valid() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let out = tempfile::tempdir()?;
    let mut options = options(
        16,
        vec![NemesisKind::PartitionMajority, NemesisKind::KillOne],
        &out,
        0x5eed_0015,
    );
    options.tls = true;
    options.workloads = vec![Workload::Register, Workload::Set];
    let report = runner::run(options).await?;
    let summary = std::fs::read_to_string(report.dir.join("summary.txt"))?;
    assert_eq!(report.verdict.validity, Validity::Valid, "{summary}");
    assert!(report.ops > 100, "the workload ran over TLS: {summary}");
    Ok(())
}

/// The watch and TTL workloads (issue 16) under a majority/minority partition, a node kill,
/// a leader transfer, a paused leader and a clock bump, one each: every acknowledged write
/// is delivered exactly once to watchers that resume from their position, in commit order;
/// no value is read past its expiry or comes back after it expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_watch_and_ttl_are_valid() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let out = tempfile::tempdir()?;
    // Five faults of 1 + 5 s each.
    let mut options = options(
        30,
        vec![
            NemesisKind::PartitionMajority,
            NemesisKind::KillOne,
            NemesisKind::TransferLeader,
            NemesisKind::Pause,
            NemesisKind::ClockBump,
        ],
        &out,
        0x5eed_0016,
    );
    options.schedule.quiet = Duration::from_secs(1);
    options.workloads = vec![Workload::Watch, Workload::Ttl];
    let report = runner::run(options).await?;
    let summary = std::fs::read_to_string(report.dir.join("summary.txt"))?;
    assert_eq!(report.verdict.validity, Validity::Valid, "{summary}");
    assert!(
        report.verdict.checker.contains("watch") && report.verdict.checker.contains("ttl"),
        "both were checked: {summary}"
    );
    let delivered = report
        .verdict
        .notes
        .iter()
        .any(|note| note.starts_with("watch: watcher") && !note.contains(" 0 events"));
    assert!(delivered, "the watchers delivered events: {summary}");
    let expired = report.verdict.notes.iter().any(|note| {
        note.starts_with("ttl: ") && note.contains(" found the key absent") && !note.contains(", 0 found")
    });
    assert!(expired, "some reads found a key expired: {summary}");
    let log = report.nemesis_log.join("\n");
    for fault in [
        "start partition",
        "start kill-one",
        "start transfer-leader",
        "start pause",
        "start clock-bump",
    ] {
        assert!(log.contains(fault), "{fault} ran:\n{log}");
    }
    let edn = std::fs::read_to_string(report.dir.join("history.edn"))?;
    let parsed = ringkv_jepsen::edn::parse_history(&edn)?;
    assert_eq!(parsed.ops.len(), report.ops, "the EDN history parses back whole");
    Ok(())
}

/// Large values under faults (issue 14): register (with CAS), batch and scan values of
/// 256 KiB through a node kill, a majority/minority partition and a clock bump of the node
/// leading the most groups, one each, come out valid. Every reply stays within its budget
/// (scan pages end on bytes before their limit; failed CAS replies carry the value only
/// within theirs), and the summary records the value size. The bump names the groups its
/// victim led when it struck.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_large_values_under_kills_and_partitions_are_valid() -> anyhow::Result<()> {
    const VALUE_BYTES: usize = 256 * 1024;
    let _turn = ONE_AT_A_TIME.lock().await;
    let out = tempfile::tempdir()?;
    // Three faults of 2 + 5 s each, with room for a restart.
    let mut options = options(
        26,
        vec![
            NemesisKind::KillOne,
            NemesisKind::PartitionMajority,
            NemesisKind::ClockBump,
        ],
        &out,
        0x5eed_0140,
    );
    options.value_bytes = VALUE_BYTES;
    options.concurrency = 3;
    options.workloads = vec![Workload::Register, Workload::Batch, Workload::Scan];
    let report = runner::run(options).await?;
    let summary = std::fs::read_to_string(report.dir.join("summary.txt"))?;
    assert_eq!(report.verdict.validity, Validity::Valid, "{summary}");
    assert!(report.ops > 100, "the workload ran: {summary}");
    assert!(
        summary.contains(&format!(
            "value bytes: {VALUE_BYTES} (register, scan); batch {VALUE_BYTES}"
        )),
        "the summary records the value size: {summary}"
    );
    let log = report.nemesis_log.join("\n");
    for fault in ["start kill-one", "start partition", "start clock-bump"] {
        assert!(log.contains(fault), "{fault} ran:\n{log}");
    }
    assert!(
        report
            .nemesis_log
            .iter()
            .any(|line| line.starts_with("start clock-bump clock of") && line.contains(" groups) bumped")),
        "the bump went to a node leading groups:\n{log}"
    );
    Ok(())
}

/// Negative control: watchers that resume every watch from now instead of from their
/// position (a client that forgot where it was) lose what committed while they were
/// away; the watch checker must find it (`lost`), without any fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_watch_resumed_from_now_is_caught() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let out = tempfile::tempdir()?;
    let mut options = options(15, Vec::new(), &out, 0x5eed_0017);
    options.workloads = vec![Workload::Watch];
    options.unsafe_watch_resume_from_now = true;
    let report = runner::run(options).await?;
    assert_eq!(
        report.verdict.validity,
        Validity::Invalid,
        "events lost on resume must be caught: {:?}",
        report.verdict
    );
    assert!(
        report
            .verdict
            .anomalies
            .iter()
            .any(|anomaly| anomaly.kind == "lost" || anomaly.kind == "lost-delete"),
        "{:?}",
        report.verdict
    );
    Ok(())
}

/// Membership changes under load and faults: nodes are added, decommissioned and replaced
/// (killed for good, declared dead, restarted to clean up) while a partition and kills run;
/// the register and set workloads stay valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_membership_changes_are_valid() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let out = tempfile::tempdir()?;
    let mut options = options(
        45,
        vec![
            NemesisKind::AddNode,
            NemesisKind::ReplaceNode,
            NemesisKind::DecommissionNode,
            NemesisKind::PartitionMajority,
            NemesisKind::KillOne,
        ],
        &out,
        0x5eed_0004,
    );
    options.schedule = Schedule {
        quiet: Duration::from_secs(2),
        fault: Duration::from_secs(4),
    };
    let report = runner::run(options).await?;
    let summary = std::fs::read_to_string(report.dir.join("summary.txt"))?;
    assert_eq!(report.verdict.validity, Validity::Valid, "{summary}");
    let log = report.nemesis_log.join("\n");
    assert!(log.contains("added node"), "a node was added:\n{log}");
    assert!(
        log.contains("decommissioning node") || log.contains("for good"),
        "a node was decommissioned or replaced:\n{log}"
    );
    assert!(
        log.contains("membership at end: ring epoch"),
        "the final ring is reported:\n{log}"
    );
    Ok(())
}

/// Negative control: nodes that serve "linearizable" reads without a ReadIndex check are
/// caught by the linearizability checker (an isolated replica keeps answering).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_stale_reads_are_caught() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let out = tempfile::tempdir()?;
    let mut options = options(20, vec![NemesisKind::PartitionOne], &out, 0x5eed_0002);
    options.workloads = vec![Workload::Register];
    options.unsafe_skip_read_index = true;
    options.schedule.fault = Duration::from_secs(6);
    let report = runner::run(options).await?;
    assert_eq!(
        report.verdict.validity,
        Validity::Invalid,
        "stale reads must be caught: {:?}",
        report.verdict
    );
    Ok(())
}

/// A router attempt timeout short enough that writes time out at the router after the node
/// took them (a debug build applies a write in a few ms to tens of ms), so routers retry
/// writes that applied all the time, without any fault.
const RETRYING_RPC_TIMEOUT_MS: u64 = 15;

/// Negative control: routers that give every attempt of a write a fresh request id
/// (`--unsafe-fresh-request-id-per-attempt`) apply a write again when they retry after an
/// attempt that applied without an answer: a register value comes back after a newer one,
/// or a compare-and-swap that applied answers "mismatch" — the retry TiDB's Jepsen analysis
/// found losing updates. The same run with the request's own id on every attempt (the
/// node's de-duplication answers the retry) is valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_fresh_request_ids_are_caught() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    for (fresh_ids, expected) in [(false, Validity::Valid), (true, Validity::Invalid)] {
        let out = tempfile::tempdir()?;
        let mut options = options(15, Vec::new(), &out, 0x5eed_0011);
        options.workloads = vec![Workload::Register];
        options.concurrency = 8;
        options.unsafe_fresh_request_ids = fresh_ids;
        options.router_rpc_timeout_ms = Some(RETRYING_RPC_TIMEOUT_MS);
        let report = runner::run(options).await?;
        let summary = std::fs::read_to_string(report.dir.join("summary.txt"))?;
        assert_eq!(
            report.verdict.validity, expected,
            "fresh ids: {fresh_ids}: {summary}"
        );
        assert!(report.ops > 100, "the workload ran: {summary}");
    }
    Ok(())
}

/// Negative control: a leader that trusts its lease far longer than its followers keep
/// theirs goes on answering linearizable reads, cut off from the other nodes (clients still
/// reach it), after they elected a new leader and took new writes; the checker catches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_overlong_lease_is_caught() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let out = tempfile::tempdir()?;
    let mut options = options(20, vec![NemesisKind::PartitionLeader], &out, 0x5eed_0007);
    options.workloads = vec![Workload::Register];
    options.unsafe_read_lease_ms = 60_000;
    options.schedule.fault = Duration::from_secs(6);
    let report = runner::run(options).await?;
    assert_eq!(
        report.verdict.validity,
        Validity::Invalid,
        "stale reads under an overlong lease must be caught: {:?}",
        report.verdict
    );
    Ok(())
}

/// Negative control: nodes that acknowledge writes before a quorum commits them lose
/// acknowledged adds when the leader is cut off; the set checker catches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_early_acks_are_caught() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let out = tempfile::tempdir()?;
    let mut options = options(20, vec![NemesisKind::PartitionLeader], &out, 0x5eed_0003);
    options.workloads = vec![Workload::Set];
    options.unsafe_ack_before_commit = true;
    options.schedule = Schedule {
        quiet: Duration::from_secs(2),
        fault: Duration::from_secs(6),
    };
    let report = runner::run(options).await?;
    assert_eq!(
        report.verdict.validity,
        Validity::Invalid,
        "lost acknowledged writes must be caught: {:?}",
        report.verdict
    );
    assert!(
        report
            .verdict
            .anomalies
            .iter()
            .any(|anomaly| anomaly.kind == "lost"),
        "{:?}",
        report.verdict
    );
    Ok(())
}

/// Negative control: shard leaders that commit writes at timestamps of their own (above the
/// reads they served, as the research's design would without asking the oracle) let a
/// snapshot read see writes begun after its timestamp was returned; the snapshot checker
/// catches it without any fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_local_commit_timestamps_are_caught() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let out = tempfile::tempdir()?;
    let mut options = options(15, Vec::new(), &out, 0x5eed_0005);
    options.workloads = vec![Workload::Snapshot];
    options.concurrency = 6;
    options.unsafe_local_commit_ts = true;
    let report = runner::run(options).await?;
    assert_eq!(
        report.verdict.validity,
        Validity::Invalid,
        "snapshot reads of local commit timestamps must be caught: {:?}",
        report.verdict
    );
    assert!(
        report.verdict.anomalies.iter().any(|anomaly| matches!(
            anomaly.kind.as_str(),
            "future-value" | "not-a-prefix" | "stale-snapshot" | "unrepeatable-snapshot"
        )),
        "{:?}",
        report.verdict
    );
    Ok(())
}

/// Read committed allows read skew and lost updates, and a run shows them (a level that
/// never shows what it allows is not what it says) while staying valid at its level; the
/// same transactions under repeatable read with the router's write-conflict check switched
/// off (`--unsafe-skip-write-conflict`) are caught.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_committed_shows_its_anomalies_and_repeatable_read_must_not() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let allowed_at_read_committed = ["lost-update", "G-single", "G-nonadjacent", "G2-item"];
    let out = tempfile::tempdir()?;
    let mut read_committed = options(15, Vec::new(), &out, 0x5eed_0006);
    read_committed.workloads = vec![Workload::Append];
    read_committed.concurrency = 6;
    read_committed.isolation = ringkv_client::Isolation::ReadCommitted;
    let report = runner::run(read_committed).await?;
    assert_eq!(report.verdict.validity, Validity::Valid, "{:?}", report.verdict);
    assert!(
        report
            .verdict
            .anomalies
            .iter()
            .any(|anomaly| allowed_at_read_committed.contains(&anomaly.kind.as_str())),
        "read committed showed none of the anomalies it allows: {:?}",
        report.verdict
    );

    let out = tempfile::tempdir()?;
    let mut unchecked = options(15, Vec::new(), &out, 0x5eed_0007);
    unchecked.workloads = vec![Workload::Append, Workload::Bank];
    unchecked.concurrency = 6;
    unchecked.unsafe_skip_write_conflict = true;
    let report = runner::run(unchecked).await?;
    assert_eq!(
        report.verdict.validity,
        Validity::Invalid,
        "lost updates under repeatable read must be caught: {:?}",
        report.verdict
    );
    assert!(
        report
            .verdict
            .anomalies
            .iter()
            .any(|anomaly| anomaly.kind == "wrong-total"),
        "transfers that both spent one balance make a snapshot's total wrong: {:?}",
        report.verdict
    );
    Ok(())
}

/// The bank at read committed: a read takes a fresh timestamp per account, so it may see a
/// transfer's debit without its credit, and two transfers reading one balance may both
/// commit; a run shows wrong totals, which the level allows (the verdict stays valid).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_at_read_committed_shows_wrong_totals() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let out = tempfile::tempdir()?;
    let mut options = options(12, Vec::new(), &out, 0x5eed_000b);
    options.workloads = vec![Workload::Bank];
    options.concurrency = 6;
    options.isolation = ringkv_client::Isolation::ReadCommitted;
    let report = runner::run(options).await?;
    assert_eq!(report.verdict.validity, Validity::Valid, "{:?}", report.verdict);
    assert!(
        report
            .verdict
            .anomalies
            .iter()
            .any(|anomaly| anomaly.kind == "wrong-total"),
        "read committed showed no wrong total: {:?}",
        report.verdict
    );
    Ok(())
}

/// Read uncommitted reads provisional values, and a run shows it: reads of appends whose
/// transactions then aborted (G1a, dirty reads), while no dirty write (G0) appears — the
/// one thing the level forbids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_uncommitted_shows_dirty_reads() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let out = tempfile::tempdir()?;
    let mut dirty = options(15, Vec::new(), &out, 0x5eed_000a);
    dirty.workloads = vec![Workload::Append];
    dirty.concurrency = 6;
    dirty.isolation = ringkv_client::Isolation::ReadUncommitted;
    let report = runner::run(dirty).await?;
    assert_eq!(report.verdict.validity, Validity::Valid, "{:?}", report.verdict);
    let dirty_reads = report
        .verdict
        .anomalies
        .iter()
        .filter(|anomaly| anomaly.kind == "G1a")
        .count();
    eprintln!("dirty reads listed: {dirty_reads}");
    assert!(
        dirty_reads > 0,
        "read uncommitted showed no dirty read: {:?}",
        report.verdict
    );
    Ok(())
}

/// Serializable forbids every cycle, write skew included, in real-time order: a run is
/// valid as strict serializable; the same transactions with the router's read validation
/// switched off (`--unsafe-skip-read-validation`, snapshot isolation in effect) show write
/// skew, and are caught.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serializable_is_strict_and_skipping_read_validation_is_caught() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let out = tempfile::tempdir()?;
    let mut serializable = options(15, Vec::new(), &out, 0x5eed_0008);
    serializable.workloads = vec![Workload::Append];
    serializable.concurrency = 6;
    serializable.isolation = ringkv_client::Isolation::Serializable;
    let report = runner::run(serializable).await?;
    assert_eq!(report.verdict.validity, Validity::Valid, "{:?}", report.verdict);

    let out = tempfile::tempdir()?;
    let mut unvalidated = options(15, Vec::new(), &out, 0x5eed_0009);
    unvalidated.workloads = vec![Workload::Append];
    unvalidated.concurrency = 6;
    unvalidated.isolation = ringkv_client::Isolation::Serializable;
    unvalidated.unsafe_skip_read_validation = true;
    let report = runner::run(unvalidated).await?;
    assert_eq!(
        report.verdict.validity,
        Validity::Invalid,
        "write skew under serializable must be caught: {:?}",
        report.verdict
    );
    Ok(())
}

/// Power cuts — one node, a minority, all of them — lose every write a node did not
/// fsync (its data directory is a `ringkv-faultfs` mount); no acknowledged write is lost and
/// the cluster serves again after the last one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_power_cuts_are_valid() -> anyhow::Result<()> {
    if !testing::fuse_or_skip("smoke_power_cuts_are_valid") {
        return Ok(());
    }
    let _turn = ONE_AT_A_TIME.lock().await;
    let out = tempfile::tempdir()?;
    let options = options(
        24,
        vec![NemesisKind::LoseUnsyncedAll, NemesisKind::LoseUnsyncedMinority],
        &out,
        0x5eed_0005,
    );
    let report = runner::run(options).await?;
    let summary = std::fs::read_to_string(report.dir.join("summary.txt"))?;
    assert_eq!(report.verdict.validity, Validity::Valid, "{summary}");
    assert!(
        report
            .nemesis_log
            .iter()
            .any(|line| line.starts_with("start lose-unsynced-all")),
        "an all-node power cut happened: {:?}",
        report.nemesis_log
    );
    Ok(())
}

/// Failing disks — one node's, then a majority's: every sync answers EIO and loses its
/// unsynced data. Each such node stops by itself (fail-stop, exit code 74) instead of going on
/// from a state it could not persist; no acknowledged write is lost and the cluster serves
/// again once the disks work and the nodes restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_failing_disks_stop_their_nodes() -> anyhow::Result<()> {
    if !testing::fuse_or_skip("smoke_failing_disks_stop_their_nodes") {
        return Ok(());
    }
    let _turn = ONE_AT_A_TIME.lock().await;
    let out = tempfile::tempdir()?;
    let options = options(
        16,
        vec![NemesisKind::FailSyncsOne, NemesisKind::FailSyncsMajority],
        &out,
        0x5eed_000a,
    );
    let report = runner::run(options).await?;
    let summary = std::fs::read_to_string(report.dir.join("summary.txt"))?;
    assert_eq!(report.verdict.validity, Validity::Valid, "{summary}");
    assert!(
        report
            .nemesis_log
            .iter()
            .any(|line| line.starts_with("start fail-syncs")),
        "a disk failed: {:?}",
        report.nemesis_log
    );
    let mut stopped = 0;
    for entry in walk(&report.dir)? {
        if entry.extension().is_some_and(|ext| ext == "log") {
            let log = std::fs::read_to_string(&entry).unwrap_or_default();
            stopped += log.matches("the node stops (exit code 74)").count();
        }
    }
    assert!(stopped >= 1, "no node stopped on its failed disk: {summary}");
    Ok(())
}

/// The disk nemeses and the membership-under-fault ones in one short run (CI time: one run
/// for all seven, each once): slow syncs on one node and on a minority, a disk that fills up
/// (its node stops itself, exit code 74), a node wiped and restarted under its old id (it
/// must not come back as a voter), a leader transfer to an isolated follower (refused or
/// timed out, the old leader keeps serving), a partition while a replica set is in flight,
/// and a node killed as it installs snapshots. The register and set workloads stay valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_disk_and_membership_faults_are_valid() -> anyhow::Result<()> {
    if !testing::fuse_or_skip("smoke_disk_and_membership_faults_are_valid") {
        return Ok(());
    }
    let _turn = ONE_AT_A_TIME.lock().await;
    let out = tempfile::tempdir()?;
    let kinds = vec![
        NemesisKind::SlowDiskOne,
        NemesisKind::SlowDiskMinority,
        NemesisKind::DiskFullOne,
        NemesisKind::WipeNode,
        NemesisKind::TransferToPartitioned,
        NemesisKind::PartitionDuringMembership,
        NemesisKind::KillDuringSnapshot,
    ];
    // Seven faults of 1 + 2 s, plus the time their starts and heals take (adding nodes,
    // waiting for a snapshot install, a full disk's node stopping): every kind runs once.
    let mut options = options(32, kinds.clone(), &out, 0x5eed_0012);
    options.schedule = Schedule {
        quiet: Duration::from_secs(1),
        fault: Duration::from_secs(2),
    };
    let report = runner::run(options).await?;
    let summary = std::fs::read_to_string(report.dir.join("summary.txt"))?;
    assert_eq!(report.verdict.validity, Validity::Valid, "{summary}");
    let log = report.nemesis_log.join("\n");
    for kind in kinds {
        assert!(
            log.contains(&format!("start {} ", kind.name())),
            "{} ran:\n{log}",
            kind.name()
        );
    }
    assert!(
        !log.contains("answers as a member") && !log.contains("succeeded (term"),
        "no wiped node came back as a member, no transfer to an isolated node succeeded:\n{log}"
    );
    // The node on the full disk stops itself (exit code 74), whichever write failed first
    // (a snapshot file's too: the storage error that stops its group stops the node).
    assert!(
        log.contains("stopped itself (exit code Some(74))"),
        "the node on the full disk stopped itself:\n{log}"
    );
    eprintln!("{} ops recorded\n{log}", report.ops);
    Ok(())
}

/// Every file under `dir`, recursively.
fn walk(dir: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    Ok(files)
}

/// Negative control: nodes that acknowledge appends without fsync lose acknowledged writes
/// at a power cut; the harness catches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_skipped_fsyncs_are_caught() -> anyhow::Result<()> {
    if !testing::fuse_or_skip("negative_control_skipped_fsyncs_are_caught") {
        return Ok(());
    }
    let _turn = ONE_AT_A_TIME.lock().await;
    let out = tempfile::tempdir()?;
    let mut options = options(15, vec![NemesisKind::LoseUnsyncedAll], &out, 0x5eed_0006);
    options.workloads = vec![Workload::Set];
    options.unsafe_skip_fsync = true;
    let report = runner::run(options).await?;
    assert_eq!(
        report.verdict.validity,
        Validity::Invalid,
        "writes lost at a power cut must be caught: {:?}",
        report.verdict
    );
    Ok(())
}
