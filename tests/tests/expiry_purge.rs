//! The background purge of expired keys (issue 16, TTL; `node/src/expiry_purger.rs`),
//! through real nodes and a router: keys that expire together are removed from storage —
//! what each node's `/metrics` reports as `ringkv_expired_keys_purged_total` — in entries
//! of at most `PURGE_LIMIT` keys (`ringkv_expiry_purge_entries_total`), while writes go on
//! being served. Without the purger the keys would stay in storage (hidden from reads) and
//! the counters at 0: this test would time out waiting for them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use futures::stream::{self, StreamExt, TryStreamExt};
use ringkv_client::{Client, CountOptions, KeyRange};
use ringkv_tests::{purge_totals, wait_until, Cluster, ClusterOptions, WAIT};

/// Keys that expire at one instant: more than two purge entries' worth.
const EXPIRING_KEYS: u64 = 2_500;
/// Most keys one purge entry removes (`PURGE_LIMIT`, `node/src/node/expiry.rs`).
const PURGE_LIMIT: u64 = 1_024;
/// How long after the test takes its timestamp the keys expire (the puts are done by then
/// on a loaded machine; a put that commits later is stored expired and purged the same).
const EXPIRES_AFTER_MS: u64 = 6_000;
/// Bits of an oracle timestamp below its milliseconds.
const LOGICAL_BITS: u32 = 18;
/// Puts in flight while the expiring keys are written.
const PUT_CONCURRENCY: usize = 32;
/// The slowest a put may be while the purge runs: a purge entry is one bounded apply, so
/// a write waits for at most a few of them, never for the whole purge.
const MAX_PUT_LATENCY: Duration = Duration::from_secs(5);

/// What the writer that runs during the purge saw.
struct Served {
    puts: u64,
    slowest: Duration,
}

/// Puts keys under `live/` one after another until `stop`; fails at the first error or a
/// put slower than [`MAX_PUT_LATENCY`].
async fn keep_writing(client: Client, stop: Arc<AtomicBool>) -> Result<Served> {
    let mut served = Served {
        puts: 0,
        slowest: Duration::ZERO,
    };
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        client
            .put(format!("live/{}", served.puts), "v")
            .await
            .with_context(|| format!("put {} during the purge", served.puts))?;
        let took = started.elapsed();
        ensure!(took < MAX_PUT_LATENCY, "a put took {took:?} during the purge");
        served.slowest = served.slowest.max(took);
        served.puts += 1;
    }
    Ok(served)
}

/// Thousands of keys with one expiry, on one shard: once they expired, the leader's purge
/// entries remove every one of them from storage, at most `PURGE_LIMIT` per entry, while a
/// writer's puts keep being answered quickly; reads never see them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_keys_are_purged_in_bounded_chunks_while_writes_go_on() -> Result<()> {
    let options = ClusterOptions {
        shards: 1,
        ..ClusterOptions::default()
    }
    .with_node_metrics();
    let cluster = Cluster::start(options).await?;
    let client = cluster.client().await?;
    let metrics_addrs = cluster.metrics_addrs().await?;
    let before = purge_totals(&metrics_addrs).await?;
    ensure!(before == (0, 0), "nothing purged yet: {before:?}");

    let expires_at_ts = client.timestamp().await? + (EXPIRES_AFTER_MS << LOGICAL_BITS);
    let writing = Instant::now();
    stream::iter(0..EXPIRING_KEYS)
        .map(|index| {
            let client = client.clone();
            async move {
                client
                    .put_expiring_at(format!("expiring/{index:05}"), "v", expires_at_ts)
                    .await
            }
        })
        .buffer_unordered(PUT_CONCURRENCY)
        .try_collect::<Vec<u64>>()
        .await?;
    let writes_took = writing.elapsed();

    // (The test's runtime ends the writer if the test fails before it stops it.)
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(keep_writing(client.clone(), stop.clone()));
    wait_until("a get to find the expiring keys absent", WAIT, || async {
        matches!(client.get("expiring/00000").await, Ok(None)).then_some(())
    })
    .await?;
    let (purge_entries, purged) = wait_until("every expired key purged", WAIT, || async {
        let totals = purge_totals(&metrics_addrs).await.ok()?;
        (totals.1 >= EXPIRING_KEYS).then_some(totals)
    })
    .await
    .with_context(|| format!("the puts of the expiring keys took {writes_took:?}"))?;
    stop.store(true, Ordering::Relaxed);
    let served = writer.await??;

    eprintln!(
        "{EXPIRING_KEYS} keys written in {writes_took:?}; {purged} purged in {purge_entries} \
         entries; {} puts served meanwhile, the slowest in {:?}",
        served.puts, served.slowest
    );
    ensure!(
        purged == EXPIRING_KEYS,
        "each expired key purged once: {purged} purged"
    );
    let least_entries = EXPIRING_KEYS.div_ceil(PURGE_LIMIT);
    ensure!(
        purge_entries >= least_entries,
        "{EXPIRING_KEYS} keys purged in chunks of at most {PURGE_LIMIT}: {purge_entries} entries"
    );
    ensure!(
        served.puts > 0,
        "the writer was served during the purge (slowest put {:?})",
        served.slowest
    );
    let left = client
        .count(&KeyRange::prefix("expiring/"), &CountOptions::new())
        .await?;
    ensure!(left.count == 0, "{} expired keys still counted", left.count);
    let live = client
        .count(&KeyRange::prefix("live/"), &CountOptions::new())
        .await?;
    ensure!(
        live.count == served.puts,
        "every put during the purge stays: {} of {}",
        live.count,
        served.puts
    );
    Ok(())
}
