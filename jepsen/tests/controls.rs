//! Negative controls of the transaction protocol: short list-append runs against real
//! processes with one of its safety steps switched off on purpose, each of which the
//! harness must catch (a checker that cannot fail proves nothing).
//!
//! - `--unsafe-ignore-locks` (node): reads at a timestamp read past the locks below it,
//!   so a transaction whose primary committed is seen on one shard and not yet on another.
//! - `--unsafe-resolve-without-primary` (router): a lock met is rolled back without asking
//!   its primary's record, so committed transactions lose writes.
//! - `--unsafe-tso-prefetch` (router, with two routers): each router hands out timestamps
//!   from a range it took ahead, so real-time order breaks across routers.
//!
//! No faults are injected: both switches break the protocol under contention alone. The
//! same runs without a switch are valid (`repeatable_read_under_contention_is_valid`,
//! `read_uncommitted_under_contention_is_valid`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ringkv_client::Isolation;
use ringkv_jepsen::checker::{Validity, Verdict};
use ringkv_jepsen::runner::{self, RunOptions};
use ringkv_jepsen::workload::Workload;

/// The runs take turns: two clusters at once on a 2-core machine would measure the machine,
/// not ringkv.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Client processes: enough that transactions on the workload's few keys overlap all the
/// time (a 2-core machine commits ~100 transactions a second with them, debug build).
const CLIENTS: usize = 12;

/// How long a repeatable-read run drives transactions: a fractured read needs a read between
/// a transaction's commit timestamp and its last secondary commit, a few milliseconds, so
/// 15 s showed 1-6 read-skew cycles a run (once only one); 25 s showed 5-13.
const REPEATABLE_READ_SECONDS: u64 = 25;

/// How long a read-uncommitted run drives transactions (lost appends show by the dozen).
const READ_UNCOMMITTED_SECONDS: u64 = 15;

/// `$RINGKV_BIN_DIR`, else the profile directory above this test's `deps/`.
fn bin_dir() -> PathBuf {
    ringkv_launcher::binaries::env_bin_dir()
        .unwrap_or_else(|| ringkv_launcher::binaries::executable_dir().expect("locating the test executable"))
}

/// The list-append workload at `isolation`, contended, without faults.
fn contended_append(isolation: Isolation, seconds: u64, out: &tempfile::TempDir, seed: u64) -> RunOptions {
    let mut options = RunOptions::new(
        Duration::from_secs(seconds),
        Vec::new(),
        bin_dir(),
        out.path().to_path_buf(),
    );
    // Distinct seeds: the seed also names the run's directory.
    options.seed = seed;
    options.workloads = vec![Workload::Append];
    options.concurrency = CLIENTS;
    options.isolation = isolation;
    options
}

/// The anomaly kinds of `verdict`, each with how many were listed.
fn kinds(verdict: &Verdict) -> Vec<(String, usize)> {
    let mut counted: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for anomaly in &verdict.anomalies {
        *counted.entry(anomaly.kind.clone()).or_default() += 1;
    }
    counted.into_iter().collect()
}

/// Runs `options`; prints the run's wall time and anomaly kinds (shown with `--nocapture`).
async fn run(name: &str, options: RunOptions) -> anyhow::Result<runner::RunReport> {
    let started = Instant::now();
    let report = runner::run(options).await?;
    eprintln!(
        "{name}: {:?}, {} ops, wall time {:.1} s, anomalies {:?}",
        report.verdict.validity,
        report.ops,
        started.elapsed().as_secs_f64(),
        kinds(&report.verdict)
    );
    Ok(report)
}

/// The contended append workload at repeatable read, with every safety step on, is valid:
/// the control below fails because of its switch, not because of the workload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeatable_read_under_contention_is_valid() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let out = tempfile::tempdir()?;
    let options = contended_append(
        Isolation::RepeatableRead,
        REPEATABLE_READ_SECONDS,
        &out,
        0x5eed_0101,
    );
    let report = run("repeatable read", options).await?;
    let summary = std::fs::read_to_string(report.dir.join("summary.txt"))?;
    assert_eq!(report.verdict.validity, Validity::Valid, "{summary}");
    assert!(report.ops > 100, "the workload ran: {summary}");
    Ok(())
}

/// Negative control: nodes whose reads at a timestamp read past the locks below it
/// (`--unsafe-ignore-locks`) show a transaction's appends on one shard and not on another
/// (its primary committed, a secondary still locked): read skew, which repeatable read
/// forbids, caught as a cycle with one anti-dependency (`G-single`) or more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_reads_past_locks_are_caught() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let out = tempfile::tempdir()?;
    let mut options = contended_append(
        Isolation::RepeatableRead,
        REPEATABLE_READ_SECONDS,
        &out,
        0x5eed_0102,
    );
    options.unsafe_ignore_locks = true;
    let report = run("ignore locks", options).await?;
    let summary = std::fs::read_to_string(report.dir.join("summary.txt"))?;
    assert_eq!(
        report.verdict.validity,
        Validity::Invalid,
        "fractured reads must be caught: {summary}"
    );
    assert!(
        report
            .verdict
            .anomalies
            .iter()
            .any(|anomaly| matches!(anomaly.kind.as_str(), "G-single" | "G-nonadjacent" | "G1c")),
        "a read-skew cycle expected: {summary}"
    );
    Ok(())
}

/// The contended append workload at read uncommitted, with every safety step on, is valid
/// (dirty reads of aborted appends are allowed there, and listed as `G1a`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_uncommitted_under_contention_is_valid() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let out = tempfile::tempdir()?;
    let options = contended_append(
        Isolation::ReadUncommitted,
        READ_UNCOMMITTED_SECONDS,
        &out,
        0x5eed_0103,
    );
    let report = run("read uncommitted", options).await?;
    let summary = std::fs::read_to_string(report.dir.join("summary.txt"))?;
    assert_eq!(report.verdict.validity, Validity::Valid, "{summary}");
    assert!(report.ops > 100, "the workload ran: {summary}");
    Ok(())
}

/// Negative control: routers that roll back every lock they meet without asking its
/// primary's record (`--unsafe-resolve-without-primary`) let transactions commit without
/// some of their appends. Read uncommitted shows it: a reader saw the provisional append
/// before a writer rolled its lock back, the transaction committed, and later reads of the
/// list hold another value in its place (`incompatible-order`, forbidden at every level).
/// (At repeatable read nobody reads a lost append: only the rarer lost update of two
/// transactions that read the list before appending shows it, about once in 15 s.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_resolving_without_the_primary_is_caught() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let out = tempfile::tempdir()?;
    let mut options = contended_append(
        Isolation::ReadUncommitted,
        READ_UNCOMMITTED_SECONDS,
        &out,
        0x5eed_0104,
    );
    options.unsafe_resolve_without_primary = true;
    let report = run("resolve without primary", options).await?;
    let summary = std::fs::read_to_string(report.dir.join("summary.txt"))?;
    assert_eq!(
        report.verdict.validity,
        Validity::Invalid,
        "appends of committed transactions rolled back must be caught: {summary}"
    );
    assert!(
        report
            .verdict
            .anomalies
            .iter()
            .any(|anomaly| anomaly.kind == "incompatible-order"),
        "a vanished committed append expected: {summary}"
    );
    Ok(())
}

/// Two routers, serializable: clients start at each router in turn, and the history is
/// strict serializable (real-time order holds across routers, which share one oracle and
/// keep nothing ahead). Negative control: routers that take 65,536 timestamps at a time and
/// hand them out from their own range (`--unsafe-tso-prefetch`) give a transaction that
/// starts after another one finished, through the other router, a smaller timestamp: it
/// misses what finished before it began, a cycle with a real-time edge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serializable_across_routers_and_per_router_timestamp_ranges_are_caught() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let out = tempfile::tempdir()?;
    let mut options = contended_append(Isolation::Serializable, 15, &out, 0x5eed_0105);
    options.routers = 2;
    options.concurrency = 6;
    let report = run("two routers", options).await?;
    let summary = std::fs::read_to_string(report.dir.join("summary.txt"))?;
    assert_eq!(report.verdict.validity, Validity::Valid, "{summary}");
    assert!(report.ops > 100, "the workload ran: {summary}");

    let out = tempfile::tempdir()?;
    let mut options = contended_append(Isolation::Serializable, 15, &out, 0x5eed_0106);
    options.routers = 2;
    options.concurrency = 6;
    options.unsafe_tso_prefetch = 65_536;
    let report = run("per-router timestamp ranges", options).await?;
    let summary = std::fs::read_to_string(report.dir.join("summary.txt"))?;
    assert_eq!(
        report.verdict.validity,
        Validity::Invalid,
        "timestamps out of real-time order must be caught: {summary}"
    );
    assert!(
        report
            .verdict
            .anomalies
            .iter()
            .any(|anomaly| anomaly.kind.ends_with("-realtime")),
        "a cycle through a real-time edge expected: {summary}"
    );
    Ok(())
}
