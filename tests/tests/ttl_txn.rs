//! Transactions agree with gets about expired keys (issue 16, TTL), through a real router
//! and nodes: once a get finds a key with a TTL absent, a transaction at every isolation
//! level reads it absent too (get, batch get, scan), an insert that expects it absent
//! commits, and a serializable transaction that read it present before it expired cannot
//! commit after (its read no longer holds), before or after the purge removed the key.
//! Every wait is a condition with a timeout.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use ringkv_client::{Client, Error, Isolation, KeyRange, Ttl};
use ringkv_tests::{purge_totals, wait_until, Cluster, ClusterOptions, WAIT};

/// How long the short-lived keys live.
const SHORT_TTL: Duration = Duration::from_millis(1_500);
/// How long the key a transaction reads before it expires lives: long enough for the
/// transaction to begin and read it on a loaded machine.
const READ_BEFORE_EXPIRY_TTL: Duration = Duration::from_secs(6);

/// Every isolation level, with the short name its keys carry.
const LEVELS: [(Isolation, &str); 4] = [
    (Isolation::ReadUncommitted, "ru"),
    (Isolation::ReadCommitted, "rc"),
    (Isolation::RepeatableRead, "rr"),
    (Isolation::Serializable, "ser"),
];

/// Waits until a get of the latest value finds `key` absent.
async fn wait_until_get_finds_absent(client: &Client, key: &str) -> Result<()> {
    wait_until(&format!("a get to find {key} absent"), WAIT, || async {
        matches!(client.get(key).await, Ok(None)).then_some(())
    })
    .await?;
    Ok(())
}

/// At every isolation level, a transaction begun after a get found an expired key absent
/// reads it absent (get, batch get and scan alike, the key's neighbour without a TTL
/// present), and an insert that expects it absent commits a value that no longer expires —
/// also when the purge removed the expired key between the transaction's start and its
/// commit (removing an expired value is no write conflict, nor a change of a read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_isolation_level_reads_an_expired_key_as_absent_and_may_insert_it() -> Result<()> {
    let options = ClusterOptions::default().with_node_metrics();
    let cluster = Cluster::start(options).await?;
    let client = cluster.client().await?;
    let metrics_addrs = cluster.metrics_addrs().await?;
    for (_, level) in LEVELS {
        client
            .put_with_ttl(format!("txttl/{level}/gone"), "old", SHORT_TTL)
            .await?;
        client.put(format!("txttl/{level}/kept"), "kept").await?;
    }
    for (_, level) in LEVELS {
        wait_until_get_finds_absent(&client, &format!("txttl/{level}/gone")).await?;
    }
    let mut inserts = Vec::new();
    for (isolation, level) in LEVELS {
        let gone = format!("txttl/{level}/gone");
        let kept = format!("txttl/{level}/kept");
        let mut txn = client.begin(isolation).await?;
        let read = txn.get(&gone).await?;
        ensure!(
            read.is_none(),
            "{isolation:?}: a get found absent, the txn read {read:?}"
        );
        let both = txn.batch_get([&gone, &kept]).await?;
        ensure!(
            both[0].is_none() && both[1].is_some(),
            "{isolation:?}: batch get {both:?}"
        );
        let scanned: Vec<String> = txn
            .scan(&KeyRange::prefix(format!("txttl/{level}/")), 10)
            .await?
            .iter()
            .map(|entry| String::from_utf8_lossy(&entry.key).into_owned())
            .collect();
        ensure!(scanned == vec![kept.clone()], "{isolation:?}: scan {scanned:?}");
        // Insert-if-absent: the transaction writes only because it read the key absent.
        txn.put(&gone, format!("new-{level}"));
        inserts.push((isolation, level, gone, txn));
    }
    // (Most runs begin the transactions before the purge removes the keys: the commits
    // then come after it.)
    wait_until("the expired keys purged", WAIT, || async {
        let (_, purged) = purge_totals(&metrics_addrs).await.ok()?;
        (purged >= LEVELS.len() as u64).then_some(())
    })
    .await?;
    for (isolation, level, gone, txn) in inserts {
        txn.commit()
            .await
            .with_context(|| format!("{isolation:?}: an insert expecting {gone} absent"))?;
        let now = client.get(&gone).await?.context("the inserted value")?;
        ensure!(
            now.value == format!("new-{level}").as_bytes(),
            "{isolation:?}: {now:?}"
        );
        ensure!(
            client.ttl(&gone).await? == Ttl::Persistent,
            "{isolation:?}: the new value has no TTL of the old one"
        );
    }
    Ok(())
}

/// Whether `outcome` is the abort of a serializable transaction whose reads changed.
fn is_serialization_failure(outcome: &Result<ringkv_client::Committed, Error>) -> Result<()> {
    match outcome {
        Err(Error::TxnAborted {
            reason, retryable, ..
        }) => {
            ensure!(reason == "SERIALIZATION_FAILURE", "{reason}");
            ensure!(*retryable, "a serialization failure is retryable");
            Ok(())
        }
        other => bail!("a read of a key that expired before the commit must abort it: {other:?}"),
    }
}

/// Serializable transactions that read a key present before its TTL passed, and commit
/// after a get found the key absent, abort with a retryable serialization failure (the
/// key's expiry changed what they read) — one committing at once, one after the purge
/// removed the key from storage (the purge keeps the change visible to the validation);
/// run again, a transaction reads the key absent and inserts it. Repeatable read reads its
/// snapshot, where the key is still present.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_of_a_key_that_expired_before_the_commit_does_not_hold() -> Result<()> {
    let options = ClusterOptions::default().with_node_metrics();
    let cluster = Cluster::start(options).await?;
    let client = cluster.client().await?;
    let metrics_addrs = cluster.metrics_addrs().await?;
    let keys = ["txttl/lock-a", "txttl/lock-b"];
    for key in keys {
        client.put_with_ttl(key, "holder", READ_BEFORE_EXPIRY_TTL).await?;
    }
    let snapshot = client.begin(Isolation::RepeatableRead).await?;
    let mut readers = Vec::new();
    for key in keys {
        let mut reader = client.begin(Isolation::Serializable).await?;
        ensure!(
            reader.get(key).await?.is_some(),
            "read within {READ_BEFORE_EXPIRY_TTL:?} of the put: {key} is still there"
        );
        // Update-if-present: it writes because it read the key present.
        reader.put(format!("{key}/taken-over"), "from holder");
        readers.push(reader);
    }
    for key in keys {
        wait_until_get_finds_absent(&client, key).await?;
    }
    ensure!(
        snapshot.get(keys[0]).await?.is_some(),
        "repeatable read keeps its snapshot, from before the expiry"
    );
    let after_purge = readers.pop().context("two readers")?;
    let at_once = readers.pop().context("two readers")?;
    is_serialization_failure(&at_once.commit().await).context("committed once the get found it absent")?;
    wait_until("both expired keys purged", WAIT, || async {
        let (_, purged) = purge_totals(&metrics_addrs).await.ok()?;
        (purged >= keys.len() as u64).then_some(())
    })
    .await?;
    is_serialization_failure(&after_purge.commit().await).context("committed after the purge")?;
    for key in keys {
        ensure!(client.get(format!("{key}/taken-over")).await?.is_none());
    }
    let mut again = client.begin(Isolation::Serializable).await?;
    ensure!(
        again.get(keys[0]).await?.is_none(),
        "run again, it reads the key absent"
    );
    again.put(keys[0], "next holder");
    again.commit().await.context("the insert expecting absence")?;
    Ok(())
}
