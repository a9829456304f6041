//! Multi-version reads end to end: writes commit at oracle timestamps, a read at a timestamp
//! sees exactly the writes acknowledged before that timestamp was taken, deletions are
//! versions too, and once a timestamp is older than the shard's version history (the
//! `--mvcc-window-ms` window), reads at it are refused.

use std::time::Duration;

use anyhow::Context;
use futures::TryStreamExt;
use ringkv_client::{Client, CountOptions, Error, KeyRange, ReadConsistency, ScanOptions};
use ringkv_tests::{wait_until, Cluster, ClusterOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_at_a_timestamp_see_the_writes_before_it() -> anyhow::Result<()> {
    let mut options = ClusterOptions {
        shards: 2,
        ..ClusterOptions::default()
    };
    options
        .node_args
        .extend(["--mvcc-window-ms", "3000"].map(String::from));
    let cluster = Cluster::start(options).await?;
    let client = cluster.client().await?;

    client.put(b"k", b"one".to_vec()).await?;
    let after_one = client.timestamp().await?;
    client.put(b"k", b"two".to_vec()).await?;
    client.put(b"other", b"x".to_vec()).await?;
    let after_two = client.timestamp().await?;
    assert!(client.delete(b"k").await?);
    let after_delete = client.timestamp().await?;

    let at = |ts| client.get_with(b"k", ReadConsistency::At(ts));
    let value = |found: Option<ringkv_client::Versioned>| found.map(|v| v.value);
    assert_eq!(value(at(after_one).await?), Some(b"one".to_vec()));
    assert_eq!(value(at(after_two).await?), Some(b"two".to_vec()));
    assert_eq!(
        value(at(after_delete).await?),
        None,
        "the delete is a version too"
    );
    assert_eq!(client.get(b"k").await?, None);
    let both = client
        .batch_get_with([&b"k"[..], b"other"], ReadConsistency::At(after_two))
        .await?;
    assert_eq!(
        both.into_iter().map(value).collect::<Vec<_>>(),
        vec![Some(b"two".to_vec()), Some(b"x".to_vec())],
        "one timestamp for every key"
    );

    // A delete-range is versioned too: a read before it still sees the keys.
    let before_range = client.timestamp().await?;
    let deleted = client
        .delete_range(&ringkv_client::KeyRange::prefix(b"oth"))
        .await?;
    assert_eq!(deleted, 1);
    assert_eq!(
        value(
            client
                .get_with(b"other", ReadConsistency::At(before_range))
                .await?
        ),
        Some(b"x".to_vec())
    );
    assert_eq!(client.get(b"other").await?, None);
    // Scans and counts at a timestamp: one snapshot across both shards, also across pages
    // written between.
    ranges_at_timestamps(&client).await?;

    // A timestamp no oracle handed out yet is refused.
    let future = client
        .get_with(b"k", ReadConsistency::At(before_range + (1 << 40)))
        .await;
    assert!(matches!(future, Err(Error::InvalidArgument(_))), "{future:?}");

    // Once `after_one` is more than 3 s older than the shard's newest write, the versions it
    // needs are dropped and reads there are refused (history ages as the shard writes: each
    // poll writes `k` again). Reads at a fresh timestamp see the latest state.
    let refused = wait_until(
        "the window to pass the first timestamp",
        Duration::from_secs(60),
        || async {
            client.put(b"k", b"three".to_vec()).await.ok()?;
            match at(after_one).await {
                Err(Error::OutOfRange(message)) => Some(message),
                _ => None,
            }
        },
    )
    .await?;
    assert!(refused.contains("snapshot too old"), "{refused}");
    let now = client.timestamp().await?;
    assert_eq!(value(at(now).await?), Some(b"three".to_vec()));
    assert_eq!(
        value(client.get_with(b"other", ReadConsistency::At(now)).await?),
        None
    );
    let stale_at = client
        .get_with(b"k", ReadConsistency::Stale)
        .await
        .context("a stale read")?;
    assert_eq!(stale_at.map(|v| v.value), Some(b"three".to_vec()));
    Ok(())
}

/// Keys `s/a`..`s/f` (spread over the shards), then changed: a scan or count at the first
/// timestamp sees the first state whatever came after, page by page and streamed, forward
/// and backward.
async fn ranges_at_timestamps(client: &Client) -> anyhow::Result<()> {
    for key in ["a", "b", "c", "d", "e", "f"] {
        client.put(format!("s/{key}"), format!("{key}1")).await?;
    }
    let first = client.timestamp().await?;
    assert!(client.delete(b"s/b").await?);
    client.put(b"s/c", b"c2".to_vec()).await?;
    client.put(b"s/g", b"g2".to_vec()).await?;
    let second = client.timestamp().await?;
    let range = KeyRange::prefix(b"s/");
    let first_state: Vec<(String, String)> = ["a", "b", "c", "d", "e", "f"]
        .map(|key| (format!("s/{key}"), format!("{key}1")))
        .into();
    let second_state: Vec<(String, String)> = [
        ("a", "a1"),
        ("c", "c2"),
        ("d", "d1"),
        ("e", "e1"),
        ("f", "f1"),
        ("g", "g2"),
    ]
    .map(|(key, value)| (format!("s/{key}"), value.to_string()))
    .into();
    let pairs = |entries: Vec<ringkv_client::ScanEntry>| -> Vec<(String, String)> {
        entries
            .into_iter()
            .map(|entry| {
                (
                    String::from_utf8_lossy(&entry.key).into_owned(),
                    String::from_utf8_lossy(&entry.value).into_owned(),
                )
            })
            .collect()
    };

    // Page by page at `first`, with writes between the pages.
    let options = ScanOptions::new()
        .limit(2)
        .consistency(ReadConsistency::At(first));
    let mut paged = Vec::new();
    let mut token = None;
    loop {
        let page = client.scan(&range, &options, token.as_ref()).await?;
        paged.extend(pairs(page.entries));
        client.put(b"s/aa", b"between pages".to_vec()).await?;
        client.put(b"s/d", b"d3".to_vec()).await?;
        match page.next {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    assert_eq!(paged, first_state, "pages at one timestamp are one snapshot");

    let streamed: Vec<ringkv_client::ScanEntry> = client
        .scan_stream(
            &range,
            &ScanOptions::new()
                .reverse(true)
                .consistency(ReadConsistency::At(second)),
        )
        .map_ok(|chunk| futures::stream::iter(chunk.entries.into_iter().map(Ok::<_, Error>)))
        .try_flatten()
        .try_collect()
        .await?;
    let mut backward = second_state.clone();
    backward.reverse();
    assert_eq!(pairs(streamed), backward);

    for ts in [first, second] {
        let options = CountOptions::new().consistency(ReadConsistency::At(ts));
        assert_eq!(client.count(&range, &options).await?.count, 6);
    }
    assert_eq!(
        client.count(&range, &CountOptions::new()).await?.count,
        7,
        "the latest state has s/aa too"
    );
    Ok(())
}
