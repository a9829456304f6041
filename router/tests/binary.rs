//! The `ringkv-router` binary: flags, the address file, serving, SIGTERM, bad config.

mod fake_node;

use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, ensure, Context};
use ringkv_proto::v1::kv_client::KvClient;
use ringkv_proto::v1::{GetRequest, PutRequest};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// Longest a test waits for the binary to start or stop.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(20);

/// The binary starts, writes its address atomically, serves, and exits 0 on SIGTERM.
#[tokio::test]
async fn serves_and_stops_on_sigterm() -> anyhow::Result<()> {
    let nodes = fake_node::start(1, 2, 1, true, true).await?;
    let dir = tempfile::tempdir()?;
    let addr_file = dir.path().join("router.addr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringkv-router"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--insecure",
            "--log-format",
            "json",
            "--nodes",
        ])
        .arg(nodes.addrs.join(","))
        .arg("--addr-file")
        .arg(&addr_file)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stderr = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
    let mut lines = BufReader::new(stderr).lines();

    // Wait for the log line that follows the address file's rename.
    tokio::time::timeout(PROCESS_TIMEOUT, async {
        while let Some(line) = lines.next_line().await? {
            if line.contains("wrote address file") {
                let parsed: serde_json::Value = serde_json::from_str(&line)?;
                ensure!(parsed["level"] == "INFO", "unexpected log line {line}");
                return Ok(());
            }
        }
        Err(anyhow!("router exited before writing its address"))
    })
    .await
    .context("router did not start in time")??;

    let addr = std::fs::read_to_string(&addr_file)?;
    let mut kv = KvClient::connect(format!("http://{}", addr.trim())).await?;
    kv.put(PutRequest {
        ttl_ms: 0,
        expires_at_ts: 0,
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        request_id: vec![],
        lease: 0,
    })
    .await?;
    let got = kv
        .get(GetRequest {
            key: b"k".to_vec(),
            consistency: 0,
            read_ts: 0,
            read_uncommitted: false,
        })
        .await?
        .into_inner();
    ensure!(got.found && got.value == b"v");

    let pid = child.id().ok_or_else(|| anyhow!("router already exited"))?;
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await?;
    ensure!(killed.success(), "kill -TERM failed");
    let status = tokio::time::timeout(PROCESS_TIMEOUT, child.wait())
        .await
        .context("router did not stop on SIGTERM")??;
    ensure!(status.success(), "router exited with {status}");
    nodes.stop().await
}

/// Without seed nodes the binary exits non-zero with a readable message.
#[tokio::test]
async fn rejects_missing_nodes() -> anyhow::Result<()> {
    let output = tokio::time::timeout(
        PROCESS_TIMEOUT,
        Command::new(env!("CARGO_BIN_EXE_ringkv-router"))
            .args(["--listen", "127.0.0.1:0"])
            .output(),
    )
    .await??;
    ensure!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(stderr.contains("seed_nodes"), "stderr: {stderr}");
    Ok(())
}

/// A config file with an unknown field is rejected, naming the file.
#[tokio::test]
async fn rejects_bad_config_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("router.toml");
    std::fs::write(&path, "seed_nodes = [\"127.0.0.1:1\"]\nmax_fanotu = 3\n")?;
    let output = tokio::time::timeout(
        PROCESS_TIMEOUT,
        Command::new(env!("CARGO_BIN_EXE_ringkv-router"))
            .arg("--config")
            .arg(&path)
            .output(),
    )
    .await??;
    ensure!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(stderr.contains("router.toml"), "stderr: {stderr}");
    Ok(())
}
