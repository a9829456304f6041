//! The kvctl binary against a mock router: output formats, binary safety and exit codes.

// The client library's mock router (one copy, shared with the client's own tests).
#[path = "../../client/tests/common/mod.rs"]
mod common;

use std::process::Output;

use common::{dead_endpoint, outcome_unknown, MockRouter};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

const KVCTL: &str = env!("CARGO_BIN_EXE_kvctl");

/// Runs kvctl against `endpoint` with `args`, feeding `stdin`.
async fn kvctl(endpoint: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(KVCTL)
        .env_remove("RINGKV_ENDPOINTS")
        .arg("-e")
        .arg(endpoint)
        .arg("--timeout")
        .arg("2000")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn kvctl");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin).await.expect("write stdin");
    drop(input);
    child.wait_with_output().await.expect("kvctl output")
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("exit code")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// put then get, as table, JSON and raw bytes.
#[tokio::test(flavor = "multi_thread")]
async fn put_get_formats() {
    let router = MockRouter::default();
    let endpoint = router.serve().await.to_string();

    let put = kvctl(&endpoint, &["put", "greeting", "hello world"], b"").await;
    assert_eq!(code(&put), 0, "{}", text(&put.stderr));
    assert!(text(&put.stdout).contains("VERSION"));

    let get = kvctl(&endpoint, &["get", "greeting"], b"").await;
    assert_eq!(code(&get), 0);
    assert!(text(&get.stdout).contains("hello world"));

    let json = kvctl(&endpoint, &["--output", "json", "get", "greeting"], b"").await;
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(value["value"], "hello world");
    assert_eq!(value["found"], true);

    let raw = kvctl(&endpoint, &["get", "greeting", "--raw"], b"").await;
    assert_eq!(raw.stdout, b"hello world");
}

/// Binary values from stdin come back byte for byte; hex keys work; JSON shows hex.
#[tokio::test(flavor = "multi_thread")]
async fn binary_values_and_hex_keys() {
    let router = MockRouter::default();
    let endpoint = router.serve().await.to_string();
    let binary = [0u8, 255, 10, 13, 128, 1];

    let put = kvctl(&endpoint, &["put", "--hex", "00ff", "--stdin"], &binary).await;
    assert_eq!(code(&put), 0, "{}", text(&put.stderr));
    let raw = kvctl(&endpoint, &["get", "--hex", "0x00ff", "--raw"], b"").await;
    assert_eq!(raw.stdout, binary);

    let json = kvctl(&endpoint, &["-o", "json", "get", "--hex", "00ff"], b"").await;
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(value["value"], serde_json::Value::Null);
    assert_eq!(value["value_hex"], "00ff0a0d8001");
    assert_eq!(value["key_hex"], "00ff");

    let table = kvctl(&endpoint, &["get", "--hex", "00ff"], b"").await;
    assert!(text(&table.stdout).contains("0x00ff0a0d8001"));
}

/// A missing key exits 1 with a message on stderr and nothing on stdout.
#[tokio::test(flavor = "multi_thread")]
async fn missing_key_exits_1() {
    let router = MockRouter::default();
    let endpoint = router.serve().await.to_string();
    let get = kvctl(&endpoint, &["get", "nope"], b"").await;
    assert_eq!(code(&get), 1);
    assert!(get.stdout.is_empty());
    assert!(text(&get.stderr).contains("not found"));
}

/// A CAS mismatch exits 2 and prints the current state; a match exits 0.
#[tokio::test(flavor = "multi_thread")]
async fn cas_exit_codes() {
    let router = MockRouter::default();
    let endpoint = router.serve().await.to_string();
    kvctl(&endpoint, &["put", "k", "v1"], b"").await;

    let mismatch = kvctl(
        &endpoint,
        &["-o", "json", "cas", "k", "--expect-version", "99", "v2"],
        b"",
    )
    .await;
    assert_eq!(code(&mismatch), 2, "{}", text(&mismatch.stderr));
    let value: serde_json::Value = serde_json::from_slice(&mismatch.stdout).expect("json");
    assert_eq!(value["swapped"], false);
    assert_eq!(value["current"]["value"], "v1");
    let version = value["current"]["version"].as_u64().expect("version");

    let swapped = kvctl(
        &endpoint,
        &["cas", "k", "--expect-version", &version.to_string(), "--delete"],
        b"",
    )
    .await;
    assert_eq!(code(&swapped), 0, "{}", text(&swapped.stderr));
    let gone = kvctl(&endpoint, &["get", "k"], b"").await;
    assert_eq!(code(&gone), 1);
}

/// No reachable router exits 3; an ambiguous write exits 4.
#[tokio::test(flavor = "multi_thread")]
async fn unavailable_and_outcome_unknown_codes() {
    let dead = dead_endpoint().await.to_string();
    let get = kvctl(&dead, &["get", "k"], b"").await;
    assert_eq!(code(&get), 3, "{}", text(&get.stderr));
    assert!(text(&get.stderr).starts_with("error: "));

    let router = MockRouter::default();
    for _ in 0..3 {
        router.fail_next(outcome_unknown("leader lost"));
    }
    let endpoint = router.serve().await.to_string();
    let put = kvctl(&endpoint, &["put", "k", "v"], b"").await;
    assert_eq!(code(&put), 4, "{}", text(&put.stderr));
    assert!(text(&put.stderr).contains("outcome unknown"));
}

/// Usage errors exit 64; help exits 0.
#[tokio::test(flavor = "multi_thread")]
async fn usage_errors_exit_64() {
    let endpoint = dead_endpoint().await.to_string();
    for args in [
        vec!["put", "k"],
        vec!["put", "k", "v", "--stdin"],
        vec!["get", "--hex", "abc"],
        vec!["get", "--bogus", "k"],
        vec!["cas", "k", "v"],
        vec!["cas", "k", "--expect-version", "x", "v"],
        vec!["frobnicate"],
    ] {
        let output = kvctl(&endpoint, &args, b"").await;
        assert_eq!(code(&output), 64, "{args:?}: {}", text(&output.stderr));
    }
    let bad_endpoint = kvctl("https://x:1", &["get", "k"], b"").await;
    assert_eq!(code(&bad_endpoint), 64, "{}", text(&bad_endpoint.stderr));
    let help = kvctl(&endpoint, &["--help"], b"").await;
    assert_eq!(code(&help), 0);
    assert!(text(&help.stdout).contains("playground"));
}

/// `cluster status` prints tables, or the response as JSON.
#[tokio::test(flavor = "multi_thread")]
async fn cluster_status_output() {
    let router = MockRouter::default();
    let endpoint = router.serve().await.to_string();
    let table = kvctl(&endpoint, &["cluster", "status"], b"").await;
    assert_eq!(code(&table), 0, "{}", text(&table.stderr));
    let stdout = text(&table.stdout);
    assert!(
        stdout.contains("NODES") && stdout.contains("SHARDS") && stdout.contains("1:leader@5"),
        "{stdout}"
    );

    let json = kvctl(&endpoint, &["cluster", "status", "--output", "json"], b"").await;
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(value["ring"]["cluster_id"], "mock");
    assert_eq!(value["shards"].as_array().map(Vec::len), Some(2));
    // Roles and states are enums on the wire and the same words as before in the output.
    assert_eq!(value["ring"]["members"][0]["state"], "active");
    assert_eq!(value["nodes"][0]["state"], "active");
    assert_eq!(value["shards"][0]["replicas"][0]["role"], "leader");
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "stdout is not JSON ({err}): {}\nstderr: {}",
            text(&output.stdout),
            text(&output.stderr)
        )
    })
}

/// mput (CSV file, JSON lines on stdin), mget, scan pages and --all, count, delrange.
#[tokio::test(flavor = "multi_thread")]
async fn bulk_load_scan_count_delrange() {
    let router = MockRouter::default();
    let endpoint = router.serve().await.to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let csv = dir.path().join("users.csv");
    std::fs::write(&csv, "key,value\nuser/1,ada\nuser/2,\"b,ob\"\nother,x\n").expect("write csv");
    let csv = csv.to_str().expect("utf-8 path");

    let mput = kvctl(
        &endpoint,
        &[
            "-o",
            "json",
            "mput",
            csv,
            "--batch-size",
            "2",
            "--concurrency",
            "2",
        ],
        b"",
    )
    .await;
    assert_eq!(code(&mput), 0, "{}", text(&mput.stderr));
    let summary = json(&mput);
    assert_eq!(summary["loaded"], 3);
    assert_eq!(summary["batches"], 2);
    let stdin = kvctl(
        &endpoint,
        &["mput", "-", "--format", "jsonl"],
        b"{\"key_hex\": \"00ff\", \"value\": \"bin\"}\n",
    )
    .await;
    assert_eq!(code(&stdin), 0, "{}", text(&stdin.stderr));
    assert!(text(&stdin.stdout).contains("LOADED"));

    let mget = kvctl(&endpoint, &["mget", "user/1", "nope"], b"").await;
    assert_eq!(code(&mget), 1, "{}", text(&mget.stderr));
    assert!(
        text(&mget.stdout)
            .lines()
            .any(|line| line.split_whitespace().eq(["nope", "0", "-"])),
        "a missing key has no value: {}",
        text(&mget.stdout)
    );
    let mget = kvctl(&endpoint, &["-o", "json", "mget", "user/1", "user/2"], b"").await;
    assert_eq!(code(&mget), 0);
    assert_eq!(json(&mget)[1]["value"], "b,ob");

    let first = kvctl(
        &endpoint,
        &["-o", "json", "scan", "--prefix", "user/", "--limit", "1"],
        b"",
    )
    .await;
    assert_eq!(code(&first), 0, "{}", text(&first.stderr));
    let first = json(&first);
    assert_eq!(first["entries"][0]["key"], "user/1");
    let token = first["next_page_token"]
        .as_str()
        .expect("a next page")
        .to_string();
    let second = kvctl(
        &endpoint,
        &[
            "-o",
            "json",
            "scan",
            "--prefix",
            "user/",
            "--limit",
            "1",
            "--page-token",
            &token,
        ],
        b"",
    )
    .await;
    let second = json(&second);
    assert_eq!(second["entries"][0]["key"], "user/2");
    assert_eq!(second["next_page_token"], serde_json::Value::Null);
    let table = kvctl(&endpoint, &["scan", "--limit", "2"], b"").await;
    assert!(
        text(&table.stderr).contains("next page: --page-token") && !text(&table.stdout).contains("next page"),
        "the footer goes to stderr: {}",
        text(&table.stdout)
    );

    let all = kvctl(&endpoint, &["-o", "json", "scan", "--all"], b"").await;
    assert_eq!(code(&all), 0, "{}", text(&all.stderr));
    let all = json(&all);
    assert_eq!(all["count"], 4);
    assert_eq!(all["entries"][0]["key_hex"], "00ff");
    let keys_only = kvctl(
        &endpoint,
        &["scan", "--all", "--keys-only", "--reverse", "--limit", "2"],
        b"",
    )
    .await;
    let stdout = text(&keys_only.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        ["KEY", "user/2", "user/1"],
        "keys only, no footer: {stdout}"
    );
    assert_eq!(text(&keys_only.stderr).trim_end(), "2 entries");

    let count = kvctl(&endpoint, &["-o", "json", "count", "--prefix", "user/"], b"").await;
    assert_eq!(code(&count), 0, "{}", text(&count.stderr));
    assert_eq!(json(&count)["count"], 2);
    assert!(count.stderr.is_empty(), "no progress bar off a terminal");

    let delrange = kvctl(&endpoint, &["-o", "json", "delrange", "--prefix", "user/"], b"").await;
    assert_eq!(code(&delrange), 0, "{}", text(&delrange.stderr));
    assert_eq!(json(&delrange)["deleted"], 2);
    let everything = kvctl(&endpoint, &["-o", "json", "delrange", "--all", "--yes"], b"").await;
    assert_eq!(json(&everything)["deleted"], 2);
}

/// `scan --all` resumes a broken stream: each key printed once.
#[tokio::test(flavor = "multi_thread")]
async fn scan_all_resumes() {
    let router = MockRouter::default();
    let endpoint = router.serve().await.to_string();
    let lines: String = (0..7).map(|i| format!("k{i},v{i}\n")).collect();
    let mput = kvctl(&endpoint, &["mput", "-", "--format", "csv"], lines.as_bytes()).await;
    assert_eq!(code(&mput), 0, "{}", text(&mput.stderr));
    router.break_stream_after(2);
    let all = kvctl(&endpoint, &["-o", "json", "scan", "--all", "k"], b"").await;
    assert_eq!(code(&all), 0, "{}", text(&all.stderr));
    let keys: Vec<String> = json(&all)["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|entry| entry["key"].as_str().expect("key").to_string())
        .collect();
    assert_eq!(keys, (0..7).map(|i| format!("k{i}")).collect::<Vec<_>>());
}

/// Bad mput input, risky deletes and bad ranges exit 64, and nothing is written.
#[tokio::test(flavor = "multi_thread")]
async fn range_and_load_usage_errors() {
    let router = MockRouter::default();
    let endpoint = router.serve().await.to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"key\": \"a\", \"value\": \"1\"}\n{\"key\": \"b\"}\n").expect("write");
    let repeated = dir.path().join("repeated.csv");
    std::fs::write(&repeated, "a,1\nb,2\na,3\n").expect("write");
    let unknown = dir.path().join("data.txt");
    std::fs::write(&unknown, "a,1\n").expect("write");
    let (bad, repeated, unknown) = (
        bad.to_str().expect("utf-8"),
        repeated.to_str().expect("utf-8"),
        unknown.to_str().expect("utf-8"),
    );

    for (args, expected) in [
        (vec!["mput", bad], "line 2: missing \"value\""),
        (vec!["mput", repeated], "line 3: key a already appears on line 1"),
        (vec!["mput", unknown], "cannot tell the format"),
        (vec!["mput", "-"], "give --format"),
        (vec!["mput", unknown, "--batch-size", "0"], "batch-size"),
        (vec!["delrange", "--all"], "--yes"),
        (vec!["delrange", "a"], "START and END"),
        (vec!["delrange", "--prefix", ""], "--all --yes"),
        (
            vec!["delrange", "a", "b", "--all", "--yes"],
            "cannot be used with",
        ),
        (vec!["scan", "b", "a"], "START must not come after END"),
        (vec!["scan", "--limit", "20000"], "at most 10000"),
        (vec!["scan", "--page-token", "xyz"], "--page-token"),
        (vec!["scan", "--all", "--page-token", "00"], "cannot be used with"),
        (vec!["count", "a", "--prefix", "b"], "cannot be used with"),
        (vec!["mget"], "required"),
    ] {
        let output = kvctl(&endpoint, &args, b"").await;
        assert_eq!(code(&output), 64, "{args:?}: {}", text(&output.stderr));
        assert!(
            text(&output.stderr).contains(expected),
            "{args:?}: {:?} lacks {expected:?}",
            text(&output.stderr)
        );
    }
    assert!(router.request_ids().is_empty(), "nothing was written");
    assert_eq!(router.calls(), 0);
}

/// A load whose batches the router keeps failing as outcome-unknown exits 4.
#[tokio::test(flavor = "multi_thread")]
async fn mput_outcome_unknown_exits_4() {
    let router = MockRouter::default();
    for _ in 0..3 {
        router.fail_next(outcome_unknown("commit not confirmed"));
    }
    let endpoint = router.serve().await.to_string();
    let output = kvctl(&endpoint, &["mput", "-", "--format", "csv"], b"a,1\nb,2\n").await;
    assert_eq!(code(&output), 4, "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("0 of 2 keys loaded"),
        "{}",
        text(&output.stderr)
    );
}
