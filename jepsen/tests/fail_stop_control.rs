//! The negative control of fail-stop (issue 14): a node that keeps serving after a storage
//! error must be caught.
//!
//! Every node's disk fails at once (`fail-syncs-all`): each fsync/fdatasync answers `EIO`,
//! and the unsynced data stays readable until the reboot that heals the disks (faultfs
//! `fail-syncs keep`: what Linux does when the pages stay in the page cache, marked clean).
//! The heal is a reboot of every failed machine: all of them are killed first, then their
//! unsynced data is dropped, then they restart.
//!
//! - Nodes with `--unsafe-ignore-sync-errors` log the failed syncs and go on: they read
//!   their unsynced log back as if it were on disk, commit and acknowledge writes for the
//!   whole fault, and the reboot loses all of them — lost adds in the set workload's final
//!   read, reads of older values in the register workload. The run must be invalid.
//! - The same run without the flag is valid: each node stops at its first failed sync (exit
//!   code 74), so nothing it acknowledged depends on a sync that failed.
//!
//! Why the fault must hit every node and the reboot kill them all before any restarts: a
//! node rebooted while another still runs catches up from it — the survivor's log, still
//! readable from its page cache, is replicated to the rebooted node's working disk — and the
//! acknowledged writes survive. (Losing the unsynced data at the failed sync itself, the
//! default `fail-syncs`, hides the control too: the nodes' reads of their own recent log
//! fail their checksums and their groups stop before acknowledging much.)

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ringkv_jepsen::checker::{Validity, Verdict};
use ringkv_jepsen::nemesis::{NemesisKind, Schedule};
use ringkv_jepsen::runner::{self, RunOptions};
use ringkv_jepsen::testing;
use ringkv_jepsen::workload::Workload;

/// The runs take turns: two clusters at once on a 2-core machine would measure the machine,
/// not ringkv.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long each run drives the workloads: two failed-disk faults of 6 s.
const RUN_SECONDS: u64 = 25;

/// `$RINGKV_BIN_DIR`, else the profile directory above this test's `deps/`.
fn bin_dir() -> PathBuf {
    ringkv_launcher::binaries::env_bin_dir()
        .unwrap_or_else(|| ringkv_launcher::binaries::executable_dir().expect("locating the test executable"))
}

/// The set and register workloads while every node's disk fails, keeping the unsynced data
/// readable until the reboot.
fn failing_disks(out: &tempfile::TempDir, seed: u64) -> RunOptions {
    let mut options = RunOptions::new(
        Duration::from_secs(RUN_SECONDS),
        vec![NemesisKind::FailSyncsAll],
        bin_dir(),
        out.path().to_path_buf(),
    );
    // Distinct seeds: the seed also names the run's network namespaces.
    options.seed = seed;
    options.workloads = vec![Workload::Set, Workload::Register];
    options.concurrency = 4;
    options.schedule = Schedule {
        quiet: Duration::from_secs(3),
        fault: Duration::from_secs(6),
    };
    options.fail_syncs_keep_unsynced = true;
    options
}

/// Each anomaly kind of `verdict` with how many were listed.
fn kinds(verdict: &Verdict) -> Vec<(String, usize)> {
    let mut counted: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for anomaly in &verdict.anomalies {
        *counted.entry(anomaly.kind.clone()).or_default() += 1;
    }
    counted.into_iter().collect()
}

/// How often `needle` occurs in the logs under `dir` (node logs included).
fn count_in_logs(dir: &std::path::Path, needle: &str) -> std::io::Result<usize> {
    let mut count = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "log") {
                count += std::fs::read_to_string(&path)
                    .unwrap_or_default()
                    .matches(needle)
                    .count();
            }
        }
    }
    Ok(count)
}

/// Runs `options`; prints the run's figures (shown with `--nocapture`).
async fn run(name: &str, options: RunOptions) -> anyhow::Result<(runner::RunReport, String)> {
    let started = Instant::now();
    let report = runner::run(options).await?;
    let summary = std::fs::read_to_string(report.dir.join("summary.txt"))?;
    eprintln!(
        "{name}: {:?}, {} ops, wall time {:.1} s, anomalies {:?}\n{summary}",
        report.verdict.validity,
        report.ops,
        started.elapsed().as_secs_f64(),
        kinds(&report.verdict)
    );
    Ok((report, summary))
}

/// Without the unsafe flag, nodes whose disks fail stop (exit code 74) and the run is
/// valid: the control below fails because of its flag, not because of the schedule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_disks_that_keep_the_page_cache_stop_every_node_and_lose_nothing() -> anyhow::Result<()> {
    if !testing::fuse_or_skip("failing_disks_that_keep_the_page_cache_stop_every_node_and_lose_nothing") {
        return Ok(());
    }
    let _turn = ONE_AT_A_TIME.lock().await;
    let out = tempfile::tempdir()?;
    let (report, summary) = run("fail-stop", failing_disks(&out, 0x5eed_0e01)).await?;
    assert_eq!(report.verdict.validity, Validity::Valid, "{summary}");
    let stopped = count_in_logs(&report.dir, "the node stops (exit code 74)")?;
    assert!(
        stopped >= 3,
        "every node stops on its failed disk ({stopped} did): {summary}"
    );
    assert!(report.ops > 100, "the workloads ran: {summary}");
    Ok(())
}

/// Negative control: nodes that ignore failed syncs (`--unsafe-ignore-sync-errors`) keep
/// acknowledging writes that only their page caches hold; the reboot loses them, and the
/// harness catches it (lost adds, or register reads older than an acknowledged write).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_nodes_serving_after_failed_syncs_are_caught() -> anyhow::Result<()> {
    if !testing::fuse_or_skip("negative_control_nodes_serving_after_failed_syncs_are_caught") {
        return Ok(());
    }
    let _turn = ONE_AT_A_TIME.lock().await;
    let out = tempfile::tempdir()?;
    let mut options = failing_disks(&out, 0x5eed_0e02);
    options.unsafe_ignore_sync_errors = true;
    let (report, summary) = run("ignore sync errors", options).await?;
    assert_eq!(
        report.verdict.validity,
        Validity::Invalid,
        "writes acknowledged on failed disks and lost at the reboot must be caught: {summary}"
    );
    assert!(
        report
            .verdict
            .anomalies
            .iter()
            .any(|anomaly| matches!(anomaly.kind.as_str(), "lost" | "nonlinearizable")),
        "lost acknowledged writes expected: {summary}"
    );
    let ignored = count_in_logs(&report.dir, "NEGATIVE CONTROL: ignoring a failed write or sync")?;
    assert!(ignored > 0, "the nodes ignored failed syncs: {summary}");
    assert_eq!(
        count_in_logs(&report.dir, "the node stops (exit code 74)")?,
        0,
        "no node stopped: {summary}"
    );
    Ok(())
}
