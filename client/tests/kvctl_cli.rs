//! The kvctl binary against a mock router: output formats, binary safety and exit codes.

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
}
