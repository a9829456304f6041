//! `kvctl backup` and `kvctl restore` with real processes (issue 16, item 5): a backup taken
//! under write load is exactly the acknowledged state at its timestamp, across shards; it
//! outlasts the nodes' version-history window (the nodes hold their history for it); and a
//! new cluster restored from it holds exactly those keys and values.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use ringkv_client::{Client, KeyRange, ScanOptions};
use ringkv_tests::{wait_until, Cluster, ClusterOptions, WAIT};

const WRITERS: usize = 4;
/// Keys loaded before the backup: with values this large the paced backup takes seconds.
const STATIC_KEYS: usize = 1200;
const STATIC_VALUE_BYTES: usize = 10_000;
/// The nodes' version-history window: far shorter than the backup.
const MVCC_WINDOW_MS: &str = "500";

/// One write of a writer: the counter it wrote, when it was sent and when acknowledged.
#[derive(Debug, Clone, Copy)]
struct Write {
    value: u64,
    invoked: Instant,
    acked: Option<Instant>,
}

fn options() -> ClusterOptions {
    let mut options = ClusterOptions {
        shards: 4,
        ..ClusterOptions::default()
    };
    options
        .node_args
        .extend(["--mvcc-window-ms".to_string(), MVCC_WINDOW_MS.to_string()]);
    options
}

/// Every key and value of a cluster, latest state.
async fn everything(client: &Client) -> anyhow::Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let entries: Vec<_> = client
        .scan_stream(&KeyRange::all(), &ScanOptions::new())
        .entries()
        .try_collect()
        .await?;
    Ok(entries
        .into_iter()
        .map(|entry| (entry.key, entry.value))
        .collect())
}

fn writer_key(writer: usize) -> Vec<u8> {
    format!("bk/w{writer}").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_is_the_state_at_its_timestamp_and_restores() -> anyhow::Result<()> {
    let source = Cluster::start(options()).await?;
    let client = source.client().await?;
    let statics: Vec<(Vec<u8>, Vec<u8>)> = (0..STATIC_KEYS)
        .map(|i| {
            let value = vec![b'a' + u8::try_from(i % 26).unwrap_or(0); STATIC_VALUE_BYTES];
            (format!("bk/static/{i:04}").into_bytes(), value)
        })
        .collect();
    for chunk in statics.chunks(50) {
        client.batch_put(chunk.to_vec()).await?;
    }

    // Writers overwrite their own key with a rising counter, recording each write's times.
    let stop = Arc::new(AtomicBool::new(false));
    let logs: Vec<Arc<Mutex<Vec<Write>>>> = (0..WRITERS).map(|_| Arc::default()).collect();
    let mut tasks = Vec::new();
    for (writer, log) in logs.iter().enumerate() {
        let (client, log, stop) = (client.clone(), log.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            for value in 1u64.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let invoked = Instant::now();
                let index = {
                    let mut log = log.lock().expect("log");
                    log.push(Write {
                        value,
                        invoked,
                        acked: None,
                    });
                    log.len() - 1
                };
                if client.put(writer_key(writer), value.to_string()).await.is_ok() {
                    log.lock().expect("log")[index].acked = Some(Instant::now());
                }
            }
        }));
    }
    let acked = |log: &Arc<Mutex<Vec<Write>>>| {
        log.lock()
            .expect("log")
            .iter()
            .filter(|w| w.acked.is_some())
            .count()
    };
    wait_until("10 acknowledged writes per writer", WAIT, || async {
        logs.iter().all(|log| acked(log) >= 10).then_some(())
    })
    .await?;

    let before = Instant::now();
    let read_ts = client.timestamp().await?;
    let after = Instant::now();
    let dir = tempfile::tempdir()?;
    let backup_dir = dir.path().join("backup");
    let backup_dir_str = backup_dir.to_str().ok_or_else(|| anyhow::anyhow!("path"))?;
    let started = Instant::now();
    let output = source
        .kvctl(&[
            "-o",
            "json",
            "backup",
            backup_dir_str,
            "--at",
            &read_ts.to_string(),
            "--max-rate-mib",
            "1",
        ])
        .await?;
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await?;
    }
    assert!(
        output.status.success(),
        "backup failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(report["read_ts"], read_ts, "{report}");
    assert_eq!(report["keys"], STATIC_KEYS + WRITERS, "{report}");
    assert!(
        took > Duration::from_millis(4 * 500),
        "the backup took {took:?}: too short to outlast the {MVCC_WINDOW_MS} ms window it is meant to"
    );

    // Exactly the acknowledged state at the timestamp: every write acknowledged before the
    // timestamp was asked for is in, every write sent after it was returned is not.
    let restored_from = read_backup(&backup_dir)?;
    for (writer, log) in logs.iter().enumerate() {
        let log = log.lock().expect("log");
        let at_least = log
            .iter()
            .filter(|w| w.acked.is_some_and(|acked| acked < before))
            .map(|w| w.value)
            .max()
            .unwrap_or(0);
        let at_most = log
            .iter()
            .filter(|w| w.invoked < after)
            .map(|w| w.value)
            .max()
            .unwrap_or(0);
        let value = restored_from
            .get(&writer_key(writer))
            .map(|value| String::from_utf8_lossy(value).parse::<u64>())
            .transpose()?
            .unwrap_or(0);
        assert!(
            (at_least..=at_most).contains(&value),
            "writer {writer}: the backup holds {value}, the state at its timestamp is {at_least}..={at_most}"
        );
        assert!(
            log.last().is_some_and(|last| last.value > at_most + 5),
            "writer {writer} must have kept writing during the backup"
        );
    }
    for (key, value) in &statics {
        assert_eq!(
            restored_from.get(key),
            Some(value),
            "{}",
            String::from_utf8_lossy(key)
        );
    }

    // A new cluster restored from it holds exactly the backup; a second restore into the
    // now non-empty cluster is refused.
    let target = Cluster::start(options()).await?;
    let output = target.kvctl(&["restore", backup_dir_str]).await?;
    assert!(
        output.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let restored = everything(&target.client().await?).await?;
    assert_eq!(restored, restored_from);
    let again = target.kvctl(&["restore", backup_dir_str]).await?;
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("empty cluster"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    Ok(())
}

/// The records of a backup directory, read independently of kvctl (the format is
/// documented in `kvctl/src/backup.rs`).
fn read_backup(dir: &Path) -> anyhow::Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("manifest.json"))?)?;
    let mut records = BTreeMap::new();
    for file in manifest["files"].as_array().into_iter().flatten() {
        let name = file["name"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("a file without a name"))?;
        let bytes = std::fs::read(dir.join(name))?;
        let mut rest = bytes.as_slice();
        let mut take = || -> anyhow::Result<Vec<u8>> {
            anyhow::ensure!(rest.len() >= 4, "cut short");
            let (len, tail) = rest.split_at(4);
            let len = u32::from_be_bytes(len.try_into()?) as usize;
            anyhow::ensure!(tail.len() >= len, "cut short");
            let (part, tail) = tail.split_at(len);
            rest = tail;
            Ok(part.to_vec())
        };
        for _ in 0..file["keys"].as_u64().unwrap_or(0) {
            let key = take()?;
            let value = take()?;
            records.insert(key, value);
        }
    }
    Ok(records)
}
