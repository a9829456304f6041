//! The workloads for the README's promises that had none: per-shard batch atomicity, scan
//! paging, delete-range (and its replay), stale reads never invented. Their histories
//! survive the EDN round trip, and a short run under faults comes out valid.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ringkv_jepsen::checker::{self, Listing, Validity};
use ringkv_jepsen::history::{History, OpType, OpValue, Process, Recorder, F};
use ringkv_jepsen::nemesis::{NemesisKind, Schedule};
use ringkv_jepsen::runner::{self, RunOptions};
use ringkv_jepsen::workload::Workload;

/// `$RINGKV_BIN_DIR`, else the profile directory above this test's `deps/`.
fn bin_dir() -> PathBuf {
    ringkv_launcher::binaries::env_bin_dir()
        .unwrap_or_else(|| ringkv_launcher::binaries::executable_dir().expect("locating the test executable"))
}

/// Every new operation, invoked and completed, as the workloads record them.
fn new_ops() -> History {
    let recorder = Recorder::new(Instant::now());
    let pairs: Vec<(F, OpValue, OpValue)> = vec![
        (
            F::StaleRead,
            OpValue::Register { key: 3, value: None },
            OpValue::Register {
                key: 3,
                value: Some(7),
            },
        ),
        (
            F::BatchWrite,
            OpValue::Register {
                key: 1,
                value: Some(9),
            },
            OpValue::Register {
                key: 1,
                value: Some(9),
            },
        ),
        (
            F::BatchWrite,
            OpValue::Register { key: 1, value: None },
            OpValue::Register { key: 1, value: None },
        ),
        (
            F::BatchRead,
            OpValue::GroupRead {
                group: 1,
                shards: vec![0, 0, 2, 2],
                ts: None,
                values: None,
            },
            OpValue::GroupRead {
                group: 1,
                shards: vec![0, 0, 2, 2],
                ts: Some(1 << 40),
                values: Some(vec![Some(9), Some(9), None, None]),
            },
        ),
        (
            F::ScanWrite,
            OpValue::Register {
                key: 4,
                value: Some(11),
            },
            OpValue::Register {
                key: 4,
                value: Some(11),
            },
        ),
        (
            F::Scan,
            OpValue::Scan {
                range: 0,
                page_limit: 2,
                pages: 0,
                ts: None,
                entries: None,
            },
            OpValue::Scan {
                range: 0,
                page_limit: 2,
                pages: 3,
                ts: None,
                entries: Some(vec![(0, 5), (4, 11)]),
            },
        ),
        (
            F::RangeFill,
            OpValue::RangeFill {
                range: 2,
                keys: 12,
                value: 13,
            },
            OpValue::RangeFill {
                range: 2,
                keys: 12,
                value: 13,
            },
        ),
        (F::DeleteRange, OpValue::Range(2), OpValue::Range(2)),
        (
            F::RangeRead,
            OpValue::Scan {
                range: 2,
                page_limit: 4,
                pages: 0,
                ts: None,
                entries: None,
            },
            OpValue::Scan {
                range: 2,
                page_limit: 4,
                pages: 1,
                ts: Some(5),
                entries: Some(Vec::new()),
            },
        ),
    ];
    for (f, invoked, completed) in pairs {
        let op = recorder.invoke(Process::Client(0), f, invoked);
        recorder.complete(&op, OpType::Ok, completed, None);
    }
    recorder.history()
}

/// The new operations read back from EDN (what `ringkv-jepsen check` reads) unchanged.
#[test]
fn new_ops_round_trip_through_edn() -> anyhow::Result<()> {
    let history = new_ops();
    let edn = ringkv_jepsen::edn::history_to_edn(&history);
    assert!(
        edn.contains(":f :batch-read, :value [1 [0 0 2 2] 1099511627776 [9 9 nil nil]]"),
        "{edn}"
    );
    assert!(
        edn.contains(":f :scan, :value [0 2 3 nil [[0 5] [4 11]]]"),
        "{edn}"
    );
    let parsed = ringkv_jepsen::edn::parse_history(&edn)?;
    assert_eq!(parsed, history);
    Ok(())
}

/// `check_workloads` hands its listing to every checker: by default a sample of each kind,
/// with `Listing::All` every violation (here 20 torn reads of one group).
#[test]
fn all_violations_reach_every_checker() {
    let recorder = Recorder::new(Instant::now());
    let write = recorder.invoke(
        Process::Client(0),
        F::BatchWrite,
        OpValue::Register {
            key: 0,
            value: Some(1),
        },
    );
    for _ in 0..20 {
        let read = |values| OpValue::GroupRead {
            group: 0,
            shards: vec![0, 0],
            ts: None,
            values,
        };
        let op = recorder.invoke(Process::Client(1), F::BatchRead, read(None));
        recorder.complete(&op, OpType::Ok, read(Some(vec![Some(1), None])), None);
    }
    recorder.complete(&write, OpType::Info, write.value.clone(), None);
    let history = recorder.history();
    let isolation = ringkv_client::Isolation::Serializable;
    let sample = checker::combine(runner::check_workloads(
        &history,
        &[Workload::Batch],
        isolation,
        Listing::Sample,
    ));
    let all = checker::combine(runner::check_workloads(
        &history,
        &[Workload::Batch],
        isolation,
        Listing::All,
    ));
    assert_eq!(
        (sample.validity, all.validity),
        (Validity::Invalid, Validity::Invalid)
    );
    assert_eq!((sample.anomalies.len(), all.anomalies.len()), (16, 20));
}

/// A short run of the batch, scan, delete-range and register (with stale reads) workloads
/// through a node kill and a majority/minority partition comes out valid, and each of their
/// checkers saw the operations it checks succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_promise_workloads_under_kill_and_partition_are_valid() -> anyhow::Result<()> {
    let out = tempfile::tempdir()?;
    let mut options = RunOptions::new(
        Duration::from_secs(25),
        vec![NemesisKind::KillOne, NemesisKind::PartitionMajority],
        bin_dir(),
        out.path().to_path_buf(),
    );
    // Distinct seeds: the seed also names the run's network namespaces.
    options.seed = 0x5eed_0141;
    options.concurrency = 3;
    options.schedule = Schedule {
        quiet: Duration::from_secs(2),
        fault: Duration::from_secs(5),
    };
    options.workloads = vec![
        Workload::Register,
        Workload::Batch,
        Workload::Scan,
        Workload::DeleteRange,
    ];
    let report = runner::run(options).await?;
    let summary = std::fs::read_to_string(report.dir.join("summary.txt"))?;
    println!("{summary}");
    assert_eq!(report.verdict.validity, Validity::Valid, "{summary}");
    for name in ["batch", "scan", "delete-range", "stale-reads", "linearizable"] {
        assert!(
            report.verdict.checker.split('+').any(|checker| checker == name),
            "{name} checked: {summary}"
        );
    }
    let edn = std::fs::read_to_string(report.dir.join("history.edn"))?;
    let history = ringkv_jepsen::edn::parse_history(&edn)?;
    let ok = |f: F| {
        history
            .ops
            .iter()
            .filter(|op| op.f == f && op.op_type == OpType::Ok)
            .count()
    };
    for f in [
        F::StaleRead,
        F::BatchWrite,
        F::BatchRead,
        F::ScanWrite,
        F::Scan,
        F::RangeFill,
        F::DeleteRange,
        F::RangeRead,
    ] {
        assert!(ok(f.clone()) > 0, "some {f:?} succeeded: {summary}");
    }
    assert!(
        report
            .nemesis_log
            .iter()
            .any(|line| line.starts_with("start kill-one"))
            && report
                .nemesis_log
                .iter()
                .any(|line| line.starts_with("start partition")),
        "the faults were injected: {:?}",
        report.nemesis_log
    );
    Ok(())
}
