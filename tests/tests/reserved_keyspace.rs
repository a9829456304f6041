//! The reserved keyspace `__ringkv/` (lease records) through a real router and nodes (issue
//! 16): `delrange` of everything, a watch of everything and a serializable transaction's
//! scan of everything leave it out, as scans and counts do, so deleting every key leaves
//! leases working and a keep-alive is no conflict; a range, a watch or a scan lying inside
//! the reserved keyspace still reaches it. Every wait is a condition with a timeout.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use futures::TryStreamExt;
use ringkv_client::{
    Client, CountOptions, Error, Isolation, KeyRange, WatchEvent, WatchEventKind, WatchOptions, WatchStream,
    WatchTarget, RESERVED_KEY_PREFIX,
};
use ringkv_tests::{Cluster, ClusterOptions, WAIT};

/// Long enough that the lease outlives the test on a loaded machine.
const LEASE_TTL: Duration = Duration::from_secs(120);

/// The watch's events until `complete` accepts those seen, within [`WAIT`] (shards' events
/// come in commit order per key, not across shards: wait for all the test expects).
async fn events_until(
    watch: &mut WatchStream,
    what: &str,
    complete: impl Fn(&[WatchEvent]) -> bool,
) -> Result<Vec<WatchEvent>> {
    let mut events = Vec::new();
    let collect = async {
        while let Some(event) = watch.try_next().await? {
            events.push(event);
            if complete(&events) {
                return Ok::<_, anyhow::Error>(());
            }
        }
        bail!("the watch ended before {what}")
    };
    tokio::time::timeout(WAIT, collect)
        .await
        .with_context(|| format!("no {what} within {WAIT:?}"))??;
    Ok(events)
}

fn keys_of(events: &[WatchEvent], kind: WatchEventKind) -> Vec<String> {
    events
        .iter()
        .filter(|event| event.kind == kind)
        .map(|event| String::from_utf8_lossy(&event.key).into_owned())
        .collect()
}

/// A lease with two attached keys and a plain key; a watch of everything and one of the
/// reserved keyspace from before the lease. `kvctl delrange --all --yes` deletes the three
/// keys and not the lease's record: the lease is still found and kept alive (its keys, now
/// gone, leave it). The watch of everything saw the keys' puts and deletes and no change of
/// the record; the watch of the reserved keyspace saw the record's grant and keep-alive. A
/// serializable transaction that scanned everything commits across a keep-alive; one that
/// scanned the reserved keyspace aborts. A `delrange` of the reserved keyspace itself then
/// deletes the record: the lease is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delrange_and_watches_of_everything_leave_lease_records_out() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let client: Client = cluster.client().await?;
    let opened_at = client.timestamp().await?;
    let mut everything = client.watch(WatchOptions::new(WatchTarget::Prefix(Vec::new())).after(opened_at));
    let mut reserved =
        client.watch(WatchOptions::new(WatchTarget::Prefix(RESERVED_KEY_PREFIX.to_vec())).after(opened_at));

    let lease = client.lease_grant(LEASE_TTL).await?;
    let record = lease.id.record_key();
    client.put_with_lease("ks/a", "a", lease.id).await?;
    client.put_with_lease("ks/b", "b", lease.id).await?;
    client.put("ks/plain", "p").await?;

    let deleted = cluster
        .kvctl(&["-o", "raw", "delrange", "--all", "--yes"])
        .await?;
    ensure!(deleted.status.success(), "kvctl delrange --all: {deleted:?}");
    let stdout = String::from_utf8_lossy(&deleted.stdout);
    ensure!(
        stdout.trim() == "3",
        "delrange --all deletes the three keys, not the lease record: {stdout}"
    );
    for key in ["ks/a", "ks/b", "ks/plain"] {
        ensure!(client.get(key).await?.is_none(), "{key} survived delrange --all");
    }
    let left = client.count(&KeyRange::all(), &CountOptions::new()).await?.count;
    ensure!(left == 0, "{left} keys left after delrange --all");
    ensure!(
        client.get(&record).await?.is_some(),
        "delrange --all deleted the lease record"
    );

    // The lease lives on: found, and kept alive (its deleted keys leave it).
    let after_delrange = client.timestamp().await?;
    let status = client.lease_time_to_live(lease.id).await?;
    ensure!(
        status.keys == vec![b"ks/a".to_vec(), b"ks/b".to_vec()],
        "the record still lists its keys: {status:?}"
    );
    let kept = client.lease_keep_alive_once(lease.id).await?;
    ensure!(
        kept.expires_at_ts > lease.expires_at_ts,
        "{kept:?} after {lease:?}"
    );
    let status = client.lease_time_to_live(lease.id).await?;
    ensure!(status.keys.is_empty(), "deleted keys leave the lease: {status:?}");
    ensure!(client.lease_list().await?.contains(&lease.id));
    client.put("ks/marker", "m").await?;

    // The watch of everything: the user keys' changes, none of the record's.
    let user_keys = ["ks/a", "ks/b", "ks/plain"];
    let seen = events_until(&mut everything, "the deletes and the marker's put", |seen| {
        let deletes = keys_of(seen, WatchEventKind::Delete);
        keys_of(seen, WatchEventKind::Put)
            .iter()
            .any(|put| put == "ks/marker")
            && user_keys
                .iter()
                .all(|key| deletes.iter().any(|deleted| deleted == key))
    })
    .await?;
    ensure!(
        !seen
            .iter()
            .any(|event| event.key.starts_with(RESERVED_KEY_PREFIX)),
        "a watch of everything shows the reserved keyspace: {:?}",
        keys_of(&seen, WatchEventKind::Put)
    );
    for key in user_keys {
        ensure!(
            keys_of(&seen, WatchEventKind::Put).iter().any(|put| put == key),
            "the put of {key} not seen: {seen:?}"
        );
    }

    // The watch of the reserved keyspace: the record's grant, and its keep-alive.
    let record_changes = events_until(&mut reserved, "the keep-alive's record write", |seen| {
        seen.iter()
            .any(|event| event.key == record && event.commit_ts > after_delrange)
    })
    .await?;
    ensure!(
        record_changes
            .first()
            .is_some_and(|event| event.key == record && event.kind == WatchEventKind::Put),
        "the grant's record write: {record_changes:?}"
    );

    // A serializable transaction that scanned everything does not conflict with a lease's
    // write (its scan left the record out); one that scanned the reserved keyspace does.
    let mut everything_scanner = client.begin(Isolation::Serializable).await?;
    let seen = everything_scanner.scan(&KeyRange::all(), 100).await?;
    ensure!(
        seen.len() == 1,
        "the scan of everything sees the marker: {seen:?}"
    );
    everything_scanner.put("ks/summary", "1");
    let mut reserved_scanner = client.begin(Isolation::Serializable).await?;
    let records = reserved_scanner
        .scan(&KeyRange::prefix(RESERVED_KEY_PREFIX), 100)
        .await?;
    ensure!(records.iter().any(|entry| entry.key == record), "{records:?}");
    reserved_scanner.put("ks/records", "1");
    client.lease_keep_alive_once(lease.id).await?;
    everything_scanner
        .commit()
        .await
        .context("a lease's keep-alive conflicts with a scan of everything")?;
    match reserved_scanner.commit().await {
        Err(Error::TxnAborted { reason, .. }) if reason == "SERIALIZATION_FAILURE" => {}
        other => bail!("a scan of the reserved keyspace must conflict with a keep-alive: {other:?}"),
    }

    // A range inside the reserved keyspace deletes what it holds.
    let prefix = String::from_utf8(RESERVED_KEY_PREFIX.to_vec())?;
    let inside = cluster
        .kvctl(&["-o", "raw", "delrange", "--prefix", &prefix])
        .await?;
    ensure!(
        inside.status.success(),
        "kvctl delrange --prefix {prefix}: {inside:?}"
    );
    ensure!(
        matches!(client.lease_time_to_live(lease.id).await, Err(Error::NotFound(_))),
        "the lease outlived a delrange of the reserved keyspace"
    );
    let deleted = events_until(&mut reserved, "the record's delete", |seen| {
        seen.iter()
            .any(|event| event.key == record && event.kind == WatchEventKind::Delete)
    })
    .await?;
    ensure!(!deleted.is_empty());
    Ok(())
}
