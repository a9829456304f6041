//! End-to-end runs of the `ringkv-bench` binary against systems it starts itself: tiny key
//! counts and one-second windows, so each takes seconds. ringkv's binaries come from the
//! same target directory (`cargo build --workspace --bins` first, as CI does) or
//! `$RINGKV_BIN_DIR`.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;

/// Bound on one benchmark process in these tests.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

fn bench() -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ringkv-bench"));
    command.kill_on_drop(true);
    command
}

/// The arguments of a tiny `run` of `system` measuring `duration_s` per run, writing JSON
/// to `json`, data under `work_dir`.
fn tiny_run(system: &str, duration_s: &str, json: &Path, work_dir: &Path) -> Vec<String> {
    [
        "run",
        "--system",
        system,
        "--workloads",
        "put,get,a,t,t1",
        "--clients",
        "2",
        "--records",
        "50",
        "--warmup-s",
        "0.2",
        "--duration-s",
        duration_s,
        "--repetitions",
        "1",
        "--connections",
        "1",
        "--shards",
        "4",
        "--load-concurrency",
        "4",
    ]
    .iter()
    .map(|arg| arg.to_string())
    .chain(["--json".to_string(), json.display().to_string()])
    .chain(["--work-dir".to_string(), work_dir.display().to_string()])
    .collect()
}

async fn run_to_end(args: &[String]) -> Output {
    let output = tokio::time::timeout(RUN_TIMEOUT, bench().args(args).output())
        .await
        .expect("the benchmark finished in time")
        .expect("the benchmark ran");
    assert!(
        output.status.success(),
        "ringkv-bench {} failed ({}):\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Every run of the JSON report has operations, no errors, ordered positive percentiles
/// and server CPU; returns the number of runs.
fn check_report(json: &Path, system: &str) -> usize {
    let text = std::fs::read_to_string(json).expect("results JSON written");
    let report: Value = serde_json::from_str(&text).expect("valid JSON");
    let runs = report["runs"].as_array().expect("runs");
    assert_eq!(report["medians"].as_array().map(Vec::len), Some(runs.len()));
    for (index, run) in runs.iter().enumerate() {
        assert_eq!(run["system"], system, "run {index}");
        let ops = run["ops"].as_u64().expect("ops");
        assert!(ops > 0, "run {index}: no operations: {run}");
        assert_eq!(run["errors"].as_u64(), Some(0), "run {index}: {run}");
        let latency = &run["latency"];
        let [p50, p99, p999, max] = ["p50_us", "p99_us", "p999_us", "max_us"]
            .map(|field| latency[field].as_u64().expect("percentile"));
        assert!(
            0 < p50 && p50 <= p99 && p99 <= p999 && p999 <= max,
            "run {index}: {latency}"
        );
        assert!(max < 60_000_000, "run {index}: {latency}");
        assert!(
            run["server_cpu_s"].as_f64().expect("server cpu") > 0.0,
            "run {index}"
        );
        assert!(run["ops_per_s"].as_f64().expect("ops/s") > 0.0, "run {index}");
    }
    runs.len()
}

fn assert_empty(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir).expect("read work dir").collect();
    assert!(left.is_empty(), "data left behind in {}: {left:?}", dir.display());
}

/// A short ringkv run (3 nodes + router started by the tool) reports nonzero operations
/// and sane percentiles for every workload, and deletes its data directory.
#[tokio::test]
async fn ringkv_run_reports_sane_results() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let work_dir = scratch.path().join("work");
    let json = scratch.path().join("results.json");
    let output = run_to_end(&tiny_run("ringkv", "1.5", &json, &work_dir)).await;
    assert_eq!(check_report(&json, "ringkv"), 5);
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        table.contains("| ringkv | put | uniform | closed | 2 |"),
        "{table}"
    );
    assert_empty(&work_dir);
}

/// `--security tls`: the cluster the tool starts speaks mutual TLS and the tool's client
/// presents the client certificate; every run is marked as over TLS.
#[tokio::test]
async fn ringkv_run_over_tls_reports_sane_results() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let work_dir = scratch.path().join("work");
    let json = scratch.path().join("results.json");
    let mut args = tiny_run("ringkv", "1", &json, &work_dir);
    args.extend(["--security".to_string(), "tls".to_string()]);
    let output = run_to_end(&args).await;
    assert_eq!(check_report(&json, "ringkv"), 5);
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("results JSON")).expect("valid JSON");
    let setup = report["systems"][0]["setup"].as_str().expect("setup");
    assert!(setup.contains("mutual TLS"), "{setup}");
    for run in report["runs"].as_array().expect("runs") {
        assert_eq!(run["tls"], Value::Bool(true), "{run}");
    }
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        table.contains("| ringkv (TLS) | put | uniform | closed | 2 |"),
        "{table}"
    );
    assert_empty(&work_dir);
}

/// `compare --tls-cost` measures ringkv without and with TLS (and etcd) and writes the TLS
/// cost into its README; skipped when etcd is not installed.
#[tokio::test]
async fn compare_reports_the_cost_of_tls() {
    if let Err(err) = ringkv_bench::system::etcd::locate_etcd(None) {
        eprintln!("skipping the compare test: {err}");
        return;
    }
    let scratch = tempfile::tempdir().expect("temp dir");
    let work_dir = scratch.path().join("work");
    let out_dir = scratch.path().join("results");
    let args: Vec<String> = [
        "compare",
        "--tls-cost",
        "--workloads",
        "put",
        "--clients",
        "2",
        "--records",
        "50",
        "--warmup-s",
        "0.2",
        "--duration-s",
        "1",
        "--repetitions",
        "1",
        "--connections",
        "1",
        "--shards",
        "2",
    ]
    .iter()
    .map(|arg| arg.to_string())
    .chain(["--work-dir".to_string(), work_dir.display().to_string()])
    .chain(["--out-dir".to_string(), out_dir.display().to_string()])
    .collect();
    run_to_end(&args).await;
    let readme = std::fs::read_to_string(out_dir.join("README.md")).expect("README written");
    let section = readme
        .split("## TLS cost")
        .nth(1)
        .unwrap_or_else(|| panic!("no TLS cost section:\n{readme}"));
    assert!(section.contains("| put | uniform | closed | 2 |"), "{section}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("results.json")).expect("results JSON"))
            .expect("valid JSON");
    assert_eq!(
        report["medians"].as_array().map(Vec::len),
        Some(2),
        "ringkv and etcd without TLS"
    );
    assert_eq!(report["tls_medians"].as_array().map(Vec::len), Some(1));
    assert_eq!(report["tls_medians"][0]["tls"], Value::Bool(true));
    assert_empty(&work_dir);
}

/// The same against etcd (3 members started by the tool); skipped when etcd is not
/// installed (`bench/scripts/install-etcd.sh`).
#[tokio::test]
async fn etcd_run_reports_sane_results() {
    if let Err(err) = ringkv_bench::system::etcd::locate_etcd(None) {
        eprintln!("skipping the etcd benchmark test: {err}");
        return;
    }
    let scratch = tempfile::tempdir().expect("temp dir");
    let work_dir = scratch.path().join("work");
    let json = scratch.path().join("results.json");
    run_to_end(&tiny_run("etcd", "1.5", &json, &work_dir)).await;
    assert_eq!(check_report(&json, "etcd"), 5);
    assert_empty(&work_dir);
}

/// Processes whose command line mentions `dir` (the servers started with data there).
fn processes_using(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .filter_map(|entry| {
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(&needle).then_some(cmdline)
        })
        .collect()
}

/// Ctrl-C during a measured run stops the servers and deletes their data; the exit code
/// is 130 and no results are written.
#[tokio::test]
async fn interrupt_cleans_up() {
    use tokio::io::AsyncBufReadExt;

    let scratch = tempfile::tempdir().expect("temp dir");
    let work_dir = scratch.path().join("work");
    let json = scratch.path().join("results.json");
    let args = tiny_run("ringkv", "60", &json, &work_dir);
    let mut child = bench()
        .args(&args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr piped");
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    // The load phase ends just before the first measured run starts.
    let loaded = tokio::time::timeout(RUN_TIMEOUT, async {
        while let Some(line) = lines.next_line().await.expect("read stderr") {
            if line.contains("loaded in") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(loaded, Ok(true), "the load phase did not finish");
    // The servers keep running through the warm-up and the measured window that follow.
    assert!(!processes_using(&work_dir).is_empty(), "no server runs");
    let pid = libc::pid_t::try_from(child.id().expect("pid")).expect("pid fits");
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let status = tokio::time::timeout(RUN_TIMEOUT, child.wait())
        .await
        .expect("exited in time after SIGINT")
        .expect("wait");
    assert_eq!(status.code(), Some(130), "{status}");
    assert_empty(&work_dir);
    assert_eq!(
        processes_using(&work_dir),
        Vec::<String>::new(),
        "servers outlived the tool"
    );
    assert!(!json.exists(), "an interrupted run writes no results");
}
