//! The rw-register workload against real processes: valid at serializable through a node
//! kill, and at read committed valid while showing the anomalies read committed allows
//! (the same history is invalid at repeatable read: the checker can fail); repeatable read
//! without the write-conflict check is caught (a negative control).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ringkv_client::Isolation;
use ringkv_jepsen::checker::elle::{self, rw_register, AnomalyKind};
use ringkv_jepsen::checker::Validity;
use ringkv_jepsen::history::History;
use ringkv_jepsen::nemesis::{NemesisKind, Schedule};
use ringkv_jepsen::runner::{self, RunOptions, RunReport};
use ringkv_jepsen::workload::Workload;

/// The runs take turns: two clusters at once on a 2-core machine would measure the machine,
/// not ringkv.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long each run drives transactions. With six clients a debug build on a loaded
/// 2-core machine committed 106-207 serializable transactions in 15 s with the two kills
/// (383 without; about a third abort on conflicts) and 550-1,050 read-committed ones, which
/// showed lost updates in every run (a dozen or more).
const SECONDS: u64 = 15;

/// Fewest committed transactions a run must check (well under the least seen).
const MIN_COMMITTED: usize = 50;

/// Client processes.
const CLIENTS: usize = 6;

/// `$RINGKV_BIN_DIR`, else the profile directory above this test's `deps/`.
fn bin_dir() -> PathBuf {
    ringkv_launcher::binaries::env_bin_dir()
        .unwrap_or_else(|| ringkv_launcher::binaries::executable_dir().expect("locating the test executable"))
}

/// The rw-register workload alone at `isolation`.
fn options(
    isolation: Isolation,
    nemeses: Vec<NemesisKind>,
    out: &tempfile::TempDir,
    seed: u64,
) -> RunOptions {
    let mut options = RunOptions::new(
        Duration::from_secs(SECONDS),
        nemeses,
        bin_dir(),
        out.path().to_path_buf(),
    );
    // Distinct seeds: the seed also names the run's directory and namespaces.
    options.seed = seed;
    options.workloads = vec![Workload::RwRegister];
    options.concurrency = CLIENTS;
    options.isolation = isolation;
    options.schedule = Schedule {
        quiet: Duration::from_secs(3),
        fault: Duration::from_secs(4),
    };
    options
}

/// Runs `options`; prints the wall time and anomaly kinds (shown with `--nocapture`); returns
/// the report, its summary and the history read back from its EDN.
async fn run(name: &str, options: RunOptions) -> anyhow::Result<(RunReport, String, History)> {
    let started = Instant::now();
    let report = runner::run(options).await?;
    let summary = std::fs::read_to_string(report.dir.join("summary.txt"))?;
    let history =
        ringkv_jepsen::edn::parse_history(&std::fs::read_to_string(report.dir.join("history.edn"))?)?;
    let kinds: std::collections::BTreeSet<&str> = report
        .verdict
        .anomalies
        .iter()
        .map(|anomaly| anomaly.kind.as_str())
        .collect();
    let transactions = report
        .verdict
        .notes
        .iter()
        .find(|note| note.contains(" transactions: "))
        .cloned()
        .unwrap_or_default();
    eprintln!(
        "{name}: {:?}, {} ops, wall time {:.1} s, anomalies {kinds:?}; {transactions}; nemesis {:?}",
        report.verdict.validity,
        report.ops,
        started.elapsed().as_secs_f64(),
        report.nemesis_log,
    );
    Ok((report, summary, history))
}

/// Serializable (checked as strict serializable) through node kills: valid, with more than
/// [`MIN_COMMITTED`] committed transactions and a dependency graph with every kind of edge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serializable_run_through_a_kill_is_valid() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let out = tempfile::tempdir()?;
    let options = options(
        Isolation::Serializable,
        vec![NemesisKind::KillOne],
        &out,
        0x5eed_0301,
    );
    let (report, summary, history) = run("serializable", options).await?;
    assert_eq!(report.verdict.validity, Validity::Valid, "{summary}");
    assert!(report.verdict.checker.contains("rw-register"), "{summary}");
    let analysis = rw_register::analyze(&history, elle::Isolation::StrictSerializable)?;
    assert!(
        analysis.txns.ok > MIN_COMMITTED,
        "too few transactions committed: {summary}"
    );
    assert!(
        analysis.graph.ww_edges > 0 && analysis.graph.wr_edges > 0 && analysis.graph.rw_edges > 0,
        "the version orders were inferred: {:?}",
        analysis.graph
    );
    Ok(())
}

/// Read committed: valid, and lost updates show (two transactions read a key's version and
/// both write the key; read committed lets both commit), which repeatable read forbids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_committed_run_shows_lost_updates_and_is_valid() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let out = tempfile::tempdir()?;
    let options = options(Isolation::ReadCommitted, Vec::new(), &out, 0x5eed_0302);
    let (report, summary, history) = run("read committed", options).await?;
    assert_eq!(report.verdict.validity, Validity::Valid, "{summary}");
    let analysis = rw_register::analyze(&history, elle::Isolation::ReadCommitted)?;
    assert!(
        analysis.txns.ok > MIN_COMMITTED,
        "too few transactions committed: {summary}"
    );
    assert!(
        analysis.has(AnomalyKind::LostUpdate),
        "lost updates expected at read committed: {:?}",
        analysis.kinds()
    );
    assert_eq!(
        rw_register::check(&history, elle::Isolation::RepeatableRead).validity,
        Validity::Invalid,
        "the same history is invalid at repeatable read"
    );
    Ok(())
}

/// Negative control: repeatable read with the router's write-conflict check switched off
/// (`--unsafe-skip-write-conflict`) lets two transactions that read a key's version both
/// write it; the rw-register checker catches the lost updates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_skipped_write_conflicts_are_caught() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let out = tempfile::tempdir()?;
    let mut options = options(Isolation::RepeatableRead, Vec::new(), &out, 0x5eed_0303);
    options.unsafe_skip_write_conflict = true;
    let (report, summary, _) = run("skip write conflict", options).await?;
    assert_eq!(
        report.verdict.validity,
        Validity::Invalid,
        "lost updates under repeatable read must be caught: {summary}"
    );
    assert!(
        report
            .verdict
            .anomalies
            .iter()
            .any(|anomaly| anomaly.kind == "lost-update"),
        "{summary}"
    );
    Ok(())
}

/// Negative control: serializable with the router's read validation switched off
/// (`--unsafe-skip-read-validation`) is snapshot isolation, whose write skew — two
/// transactions each reading the register the other writes — the rw-register checker
/// catches as a cycle with anti-dependencies (G2-item or G-single).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_skipped_read_validation_is_caught() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let out = tempfile::tempdir()?;
    let mut options = options(Isolation::Serializable, Vec::new(), &out, 0x5eed_0304);
    options.unsafe_skip_read_validation = true;
    let (report, summary, _) = run("skip read validation", options).await?;
    assert_eq!(
        report.verdict.validity,
        Validity::Invalid,
        "write skew under serializable must be caught: {summary}"
    );
    assert!(
        report
            .verdict
            .anomalies
            .iter()
            .any(|anomaly| anomaly.kind.starts_with("G2") || anomaly.kind.starts_with("G-single")),
        "{summary}"
    );
    Ok(())
}
