//! The lock workload in CI (issue 16): holders of locks on 1 s leases, some pausing past
//! their TTL, write to a resource that refuses lower fencing tokens, while nodes are paused
//! and their clocks skewed, bumped and strobed. The accepted writes must be in token order
//! (valid) and stale holders must have been refused; with the resource's check switched
//! off (`--unsafe-unfenced-resource`) the same workload must come out invalid.
//!
//! The clock nemeses need root (network namespaces) and libfaketime, as `smoke.rs`.

use std::path::PathBuf;
use std::time::Duration;

use ringkv_jepsen::checker::Validity;
use ringkv_jepsen::history::{OpType, F};
use ringkv_jepsen::nemesis::{NemesisKind, Schedule};
use ringkv_jepsen::runner::{self, RunOptions, RunReport};
use ringkv_jepsen::workload::Workload;

/// The runs take turns: two clusters at once on a 2-core machine would measure the machine.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `$RINGKV_BIN_DIR`, else the profile directory above this test's `deps/`.
fn bin_dir() -> PathBuf {
    ringkv_launcher::binaries::env_bin_dir()
        .unwrap_or_else(|| ringkv_launcher::binaries::executable_dir().expect("locating the test executable"))
}

async fn run_lock_workload(
    seconds: u64,
    nemeses: Vec<NemesisKind>,
    seed: u64,
    unfenced: bool,
) -> anyhow::Result<(RunReport, String)> {
    let out = tempfile::tempdir()?;
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
    options.workloads = vec![Workload::Lock];
    options.unsafe_unfenced_resource = unfenced;
    let report = runner::run(options).await?;
    let summary = std::fs::read_to_string(report.dir.join("summary.txt"))?;
    // The results directory goes with `out`: keep what the assertions need.
    let edn = std::fs::read_to_string(report.dir.join("history.edn"))?;
    let history = ringkv_jepsen::edn::parse_history(&edn)?;
    assert_eq!(history.ops.len(), report.ops, "the EDN history parses back whole");
    let completions = |f: F, op_type: OpType, error_prefix: &str| {
        history
            .ops
            .iter()
            .filter(|op| {
                op.f == f
                    && op.op_type == op_type
                    && op.error.as_deref().unwrap_or_default().starts_with(error_prefix)
            })
            .count()
    };
    let counts = format!(
        "acquired {}, accepted {}, refused {}",
        completions(F::LockAcquire, OpType::Ok, ""),
        completions(F::GuardedWrite, OpType::Ok, ""),
        completions(F::GuardedWrite, OpType::Fail, "refused"),
    );
    Ok((report, format!("{counts}\n{summary}")))
}

/// 28 s of pauses and clock faults (each of the four once): valid, with stale holders'
/// writes refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_fencing_holds_under_pauses_and_clock_faults() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let nemeses = vec![
        NemesisKind::Pause,
        NemesisKind::ClockSkew,
        NemesisKind::ClockBump,
        NemesisKind::ClockStrobe,
    ];
    let (report, summary) = run_lock_workload(28, nemeses, 0x10c4_0001, false).await?;
    assert_eq!(report.verdict.validity, Validity::Valid, "{summary}");
    assert!(
        report.verdict.checker.contains("lock"),
        "the lock checker ran: {summary}"
    );
    assert!(
        !summary.starts_with("acquired 0,") && !summary.contains("accepted 0,"),
        "locks were acquired and guarded writes accepted: {summary}"
    );
    assert!(
        !summary.contains("refused 0\n"),
        "a holder that paused past its lease was refused by the resource: {summary}"
    );
    Ok(())
}

/// The negative control: the resource accepts every token; a holder pausing past its lease
/// writes after its successor, and the checker finds the tokens going back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_unfenced_resource_is_caught() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (report, summary) = run_lock_workload(15, vec![NemesisKind::Pause], 0x10c4_0002, true).await?;
    assert_eq!(report.verdict.validity, Validity::Invalid, "{summary}");
    assert!(
        report
            .verdict
            .anomalies
            .iter()
            .any(|anomaly| anomaly.kind == "fencing-violated"),
        "{summary}"
    );
    Ok(())
}
