//! `kvctl backup` and `kvctl restore` with real processes (issue 16, item 5): a backup taken
//! under write load is exactly the acknowledged state at its timestamp, across shards; it
//! outlasts the nodes' version-history window (the nodes hold their history for it); and a
//! new cluster restored from it holds exactly those keys and values. Expiries (TTLs and
//! lease deadlines) are kept: a restored key expires at the same oracle timestamp, and one
//! whose expiry passed before the restore is not restored.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::TryStreamExt;
use ringkv_client::{Client, CountOptions, KeyRange, LeaseId, ScanOptions, Ttl, RESERVED_KEY_PREFIX};
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

/// A backup's records: key → (value, expiry as an oracle timestamp, 0 = never).
type BackupRecords = BTreeMap<Vec<u8>, (Vec<u8>, u64)>;

/// The records of a backup directory with their expiries (0: never), read independently of
/// kvctl (the format is documented in `kvctl/src/backup.rs`).
fn read_backup_with_expiry(dir: &Path) -> anyhow::Result<BackupRecords> {
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("manifest.json"))?)?;
    let mut records = BTreeMap::new();
    for file in manifest["files"].as_array().into_iter().flatten() {
        let name = file["name"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("a file without a name"))?;
        let bytes = std::fs::read(dir.join(name))?;
        let mut rest = bytes.as_slice();
        // `len` bytes, or (`None`) a u32 length and that many bytes.
        let mut take = |len: Option<usize>| -> anyhow::Result<Vec<u8>> {
            let len = match len {
                Some(len) => len,
                None => {
                    anyhow::ensure!(rest.len() >= 4, "cut short");
                    let (len, tail) = rest.split_at(4);
                    rest = tail;
                    u32::from_be_bytes(len.try_into()?) as usize
                }
            };
            anyhow::ensure!(rest.len() >= len, "cut short");
            let (part, tail) = rest.split_at(len);
            rest = tail;
            Ok(part.to_vec())
        };
        for _ in 0..file["keys"].as_u64().unwrap_or(0) {
            let key = take(None)?;
            let value = take(None)?;
            let expires_at_ts = u64::from_be_bytes(take(Some(8))?.as_slice().try_into()?);
            records.insert(key, (value, expires_at_ts));
        }
    }
    Ok(records)
}

/// The records of a backup directory without their expiries.
fn read_backup(dir: &Path) -> anyhow::Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    Ok(read_backup_with_expiry(dir)?
        .into_iter()
        .map(|(key, (value, _))| (key, value))
        .collect())
}

/// A key's expiry (`None`: persistent), failing when it is missing.
async fn expiry_of(client: &Client, key: &str) -> anyhow::Result<Option<u64>> {
    match client.ttl(key).await? {
        Ttl::Missing => anyhow::bail!("{key} is missing"),
        Ttl::Persistent => Ok(None),
        Ttl::Expires { expires_at_ts, .. } => Ok(Some(expires_at_ts)),
    }
}

/// A scan or count of everything (client and kvctl) leaves the lease's record out: it lives
/// in the reserved keyspace; a scan of that keyspace (the lease list) still finds it.
async fn reserved_keys_stay_out_of_scans_and_counts(
    cluster: &Cluster,
    client: &Client,
    lease: LeaseId,
) -> anyhow::Result<()> {
    let record = lease.record_key();
    // Neighbours of the reserved keyspace on either side, which scans must keep.
    client.put("__ringkv.below", "b").await?;
    client.put("__ringkv0above", "a").await?;
    let all = everything(client).await?;
    anyhow::ensure!(
        !all.keys().any(|key| key.starts_with(RESERVED_KEY_PREFIX)),
        "a scan of everything shows the reserved keyspace: {:?}",
        all.keys()
            .map(|key| String::from_utf8_lossy(key))
            .collect::<Vec<_>>()
    );
    let counted = client.count(&KeyRange::all(), &CountOptions::new()).await?.count;
    anyhow::ensure!(counted == all.len() as u64, "count {counted}, scan {}", all.len());
    for args in [&["-o", "tsv", "scan"][..], &["-o", "raw", "count"][..]] {
        let output = cluster.kvctl(args).await?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        anyhow::ensure!(output.status.success(), "kvctl {args:?}: {output:?}");
        anyhow::ensure!(!stdout.contains("__ringkv/"), "kvctl {args:?}: {stdout}");
        if args.contains(&"count") {
            anyhow::ensure!(stdout.trim() == counted.to_string(), "kvctl count: {stdout}");
        }
    }
    // Paged one and two keys at a time, both ways: every page ends at a key outside the
    // reserved keyspace or at its edge, and the pages add up to the scan of everything.
    let wanted: Vec<Vec<u8>> = all.keys().cloned().collect();
    for (limit, reverse) in [(1, false), (2, false), (1, true), (2, true)] {
        let options = ScanOptions::new().limit(limit).reverse(reverse);
        let mut paged = Vec::new();
        let mut token = None;
        loop {
            let page = client.scan(&KeyRange::all(), &options, token.as_ref()).await?;
            paged.extend(page.entries.into_iter().map(|entry| entry.key));
            match page.next {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        if reverse {
            paged.reverse();
        }
        anyhow::ensure!(
            paged == wanted,
            "pages of {limit} (reverse: {reverse}): {paged:?}"
        );
    }
    anyhow::ensure!(
        all.contains_key(b"__ringkv.below".as_slice()) && all.contains_key(b"__ringkv0above".as_slice())
    );
    let reserved: Vec<_> = client
        .scan_stream(&KeyRange::prefix(RESERVED_KEY_PREFIX), &ScanOptions::new())
        .entries()
        .try_collect()
        .await?;
    anyhow::ensure!(
        reserved.iter().any(|entry| entry.key == record),
        "a scan of the reserved keyspace finds the lease record"
    );
    anyhow::ensure!(client.lease_list().await?.contains(&lease));
    Ok(())
}

/// A backup keeps each key's expiry (a TTL's, a lease's deadline) as the oracle timestamp
/// it was; restored into a new cluster, a key expires at that same timestamp (`kvctl ttl`
/// shows the time left), a key without one stays persistent, and a key whose expiry passed
/// before the restore is skipped (counted in the summary), not restored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_keeps_expiries_and_restores_them() -> anyhow::Result<()> {
    let source = Cluster::start(ClusterOptions::default()).await?;
    let client = source.client().await?;
    client.put("ex/plain", "p").await?;
    client
        .put_with_ttl("ex/long", "l", Duration::from_secs(600))
        .await?;
    let lease = client.lease_grant(Duration::from_secs(600)).await?;
    client.put_with_lease("ex/leased", "x", lease.id).await?;
    client
        .put_with_ttl("ex/short", "s", Duration::from_secs(2))
        .await?;
    // The backup's timestamp is taken before the short TTL can pass.
    let backup_ts = client.timestamp().await?;
    let long_expiry = expiry_of(&client, "ex/long").await?.context("ex/long expires")?;
    let short_expiry = expiry_of(&client, "ex/short")
        .await?
        .context("ex/short expires")?;
    let leased_expiry = expiry_of(&client, "ex/leased").await?;
    anyhow::ensure!(leased_expiry == Some(lease.expires_at_ts), "{leased_expiry:?}");
    reserved_keys_stay_out_of_scans_and_counts(&source, &client, lease.id).await?;

    let backup_dir = tempfile::tempdir()?;
    let dir = backup_dir.path().join("expiring");
    let dir_str = dir.to_str().context("utf-8 path")?;
    let output = source
        .kvctl(&["backup", dir_str, "--at", &backup_ts.to_string()])
        .await?;
    anyhow::ensure!(
        output.status.success(),
        "backup failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let backed_up = read_backup_with_expiry(&dir)?;
    let expiry_in_backup = |key: &str| backed_up.get(key.as_bytes()).map(|(_, expiry)| *expiry);
    assert_eq!(expiry_in_backup("ex/plain"), Some(0));
    assert_eq!(expiry_in_backup("ex/long"), Some(long_expiry));
    assert_eq!(expiry_in_backup("ex/short"), Some(short_expiry));
    assert_eq!(expiry_in_backup("ex/leased"), Some(lease.expires_at_ts));
    assert_eq!(
        expiry_in_backup(&String::from_utf8_lossy(&lease.id.record_key())),
        Some(lease.expires_at_ts),
        "the lease record keeps its deadline too"
    );

    // Restore once the short TTL has passed (by the oracle's clock).
    wait_until("ex/short to expire", WAIT, || async {
        matches!(client.get("ex/short").await, Ok(None)).then_some(())
    })
    .await?;
    let target = Cluster::start(ClusterOptions::default()).await?;
    let output = target.kvctl(&["-o", "json", "restore", dir_str]).await?;
    anyhow::ensure!(
        output.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(summary["expired_skipped"], 1, "{summary}");
    assert_eq!(summary["format"], "ringkv-backup-2", "{summary}");

    let restored = target.client().await?;
    assert_eq!(expiry_of(&restored, "ex/plain").await?, None);
    assert_eq!(expiry_of(&restored, "ex/long").await?, Some(long_expiry));
    assert_eq!(
        expiry_of(&restored, "ex/leased").await?,
        Some(lease.expires_at_ts)
    );
    assert_eq!(restored.ttl("ex/short").await?, Ttl::Missing);
    assert!(restored.get("ex/short").await?.is_none());
    let status = restored.lease_time_to_live(lease.id).await?;
    assert_eq!(status.lease.expires_at_ts, lease.expires_at_ts);
    assert_eq!(status.keys, vec![b"ex/leased".to_vec()]);

    // kvctl shows the time left in the new cluster: under the TTL, and most of it.
    let output = target.kvctl(&["-o", "json", "ttl", "ex/long"]).await?;
    anyhow::ensure!(output.status.success(), "{output:?}");
    let ttl: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let left_ms = ttl["ttl_ms"].as_u64().context("ttl_ms")?;
    assert!(left_ms <= 600_000 && left_ms > 300_000, "{ttl}");
    Ok(())
}
