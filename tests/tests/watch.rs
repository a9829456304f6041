//! Watch end to end (issue 16): the events of puts and deletes across shards arrive
//! through the router per key in commit order; a watch resumed from its position after a
//! disconnect loses and repeats nothing; leader transfers mid-watch lose nothing; a reader
//! that does not keep up is cut with RESOURCE_EXHAUSTED naming the buffer.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use ringkv_client::{Client, Error, WatchEvent, WatchEventKind, WatchOptions, WatchStream, WatchTarget};
use ringkv_tests::{Cluster, ClusterOptions, WAIT as SLOW_WAIT};

/// Per key, what a watch should show or showed: `Some(value)` for a put, `None` for a delete.
type History = BTreeMap<Vec<u8>, Vec<Option<Vec<u8>>>>;

const WAIT: Duration = Duration::from_secs(30);

fn prefix_watch(prefix: &str, after: u64) -> WatchOptions {
    WatchOptions::new(WatchTarget::Prefix(prefix.as_bytes().to_vec())).after(after)
}

/// Reads events into `seen` until `done` says the history is complete (or `WAIT` passes).
async fn collect_until(
    stream: &mut WatchStream,
    seen: &mut Vec<WatchEvent>,
    done: impl Fn(&[WatchEvent]) -> bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done(seen) {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(event))) => seen.push(event),
            Ok(Some(Err(err))) => anyhow::bail!("watch failed after {} events: {err}", seen.len()),
            Ok(None) => anyhow::bail!("watch ended after {} events", seen.len()),
            Err(_) => anyhow::bail!("watch: {} events after {WAIT:?}", seen.len()),
        }
    }
    Ok(())
}

/// The events as a history per key; each key's commit timestamps must rise.
fn history_of(events: &[WatchEvent]) -> anyhow::Result<History> {
    let mut history = History::new();
    let mut last_ts: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    for event in events {
        let last = last_ts.entry(event.key.clone()).or_default();
        anyhow::ensure!(
            event.commit_ts > *last,
            "key {:?}: event at {} after one at {last}",
            String::from_utf8_lossy(&event.key),
            event.commit_ts
        );
        *last = event.commit_ts;
        let change = match event.kind {
            WatchEventKind::Put => Some(event.value.clone()),
            WatchEventKind::Delete => None,
        };
        history.entry(event.key.clone()).or_default().push(change);
    }
    Ok(history)
}

fn count(history: &History) -> usize {
    history.values().map(Vec::len).sum()
}

/// A cluster of `shards` shards, a client, and a timestamp taken before anything is written.
async fn start_cluster(shards: u32) -> anyhow::Result<(Cluster, Client, u64)> {
    let cluster = Cluster::start(ClusterOptions {
        shards,
        ..ClusterOptions::default()
    })
    .await?;
    let client = cluster.client().await?;
    let start = client.timestamp().await?;
    Ok((cluster, client, start))
}

/// Puts `key = value` and records it.
async fn put(client: &Client, expected: &mut History, key: &str, value: &str) -> anyhow::Result<()> {
    client.put(key.as_bytes(), value.as_bytes().to_vec()).await?;
    expected
        .entry(key.as_bytes().to_vec())
        .or_default()
        .push(Some(value.as_bytes().to_vec()));
    Ok(())
}

async fn delete(client: &Client, expected: &mut History, key: &str) -> anyhow::Result<()> {
    anyhow::ensure!(client.delete(key.as_bytes()).await?, "{key} existed");
    expected.entry(key.as_bytes().to_vec()).or_default().push(None);
    Ok(())
}

/// Puts and deletes of keys on every shard arrive through the router exactly once, per
/// key in commit order, with versions; a key watched alone shows only its own changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_and_deletes_across_shards_arrive_per_key_in_order() -> anyhow::Result<()> {
    let (_cluster, client, start) = start_cluster(4).await?;
    let mut everything = client.watch(prefix_watch("w/", start));
    let mut one_key = client.watch(WatchOptions::new(WatchTarget::Key(b"w/3".to_vec())).after(start));
    let mut expected = History::new();
    for round in 0..3 {
        for key in 0..8 {
            put(&client, &mut expected, &format!("w/{key}"), &format!("r{round}")).await?;
        }
        for key in (0..8).step_by(3) {
            delete(&client, &mut expected, &format!("w/{key}")).await?;
        }
    }
    client.put(b"other", b"not watched".to_vec()).await?;
    let total = count(&expected);
    let mut seen = Vec::new();
    collect_until(&mut everything, &mut seen, |seen| seen.len() >= total).await?;
    // One more change: nothing arrived between it and the ones expected.
    put(&client, &mut expected, "w/last", "end").await?;
    collect_until(&mut everything, &mut seen, |seen| seen.len() > total).await?;
    assert_eq!(
        history_of(&seen)?,
        expected,
        "every change once, per key in order"
    );
    let shards: std::collections::BTreeSet<u32> = seen.iter().map(|event| event.shard_id).collect();
    assert!(shards.len() > 1, "the keys span shards: {shards:?}");
    assert!(seen
        .iter()
        .all(|event| (event.kind == WatchEventKind::Put) == (event.version > 0)));

    let mut mine = Vec::new();
    let expected_one = &expected[&b"w/3".to_vec()];
    collect_until(&mut one_key, &mut mine, |seen| seen.len() >= expected_one.len()).await?;
    assert_eq!(history_of(&mine)?.get(b"w/3".as_slice()), Some(expected_one));
    Ok(())
}

/// A watch dropped midway (a disconnect) and resumed from its position delivers exactly
/// the events it had not: none lost, none twice, whatever was written in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_watch_loses_and_repeats_nothing() -> anyhow::Result<()> {
    let (_cluster, client, start) = start_cluster(4).await?;
    let options = prefix_watch("r/", start);
    let mut expected = History::new();
    for key in 0..10 {
        put(&client, &mut expected, &format!("r/{key}"), "a").await?;
    }
    let mut first = client.watch(options.clone());
    let mut seen = Vec::new();
    collect_until(&mut first, &mut seen, |seen| seen.len() >= 6).await?;
    let position = first.position();
    drop(first);
    for key in 0..10 {
        put(&client, &mut expected, &format!("r/{key}"), "b").await?;
        if key % 4 == 0 {
            delete(&client, &mut expected, &format!("r/{key}")).await?;
        }
    }
    let mut resumed = client.watch_from(options, position);
    let total = count(&expected);
    collect_until(&mut resumed, &mut seen, |seen| seen.len() >= total).await?;
    put(&client, &mut expected, "r/last", "end").await?;
    collect_until(&mut resumed, &mut seen, |seen| seen.len() > total).await?;
    assert_eq!(history_of(&seen)?, expected);
    Ok(())
}

/// Leaderships move while a watch is open — every shard's by a transfer, then a leader's
/// node is killed — and writes go on in between: the router watches again at each new
/// leader from the shard's progress, and every write shows exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_changes_mid_watch_lose_nothing() -> anyhow::Result<()> {
    let (mut cluster, client, start) = start_cluster(2).await?;
    let mut watch = client.watch(prefix_watch("t/", start));
    let mut expected = History::new();
    let mut step = 0;
    let mut write_some = |count: usize| {
        let writes: Vec<(String, String)> = (0..count)
            .map(|_| {
                step += 1;
                (format!("t/{}", step % 7), format!("{step}"))
            })
            .collect();
        writes
    };
    for (key, value) in write_some(20) {
        put(&client, &mut expected, &key, &value).await?;
    }
    let mut seen = Vec::new();
    collect_until(&mut watch, &mut seen, |seen| seen.len() >= 5).await?;
    for (shard, leader) in cluster.wait_for_leaders(WAIT).await? {
        client.transfer_leader(shard, leader % 3 + 1).await?;
    }
    for (key, value) in write_some(20) {
        put(&client, &mut expected, &key, &value).await?;
    }
    let leaders = cluster.wait_for_leaders(WAIT).await?;
    let victim = leaders[&0];
    cluster.kill_node(victim)?;
    cluster.wait_for_leaders(WAIT).await?;
    for (key, value) in write_some(20) {
        put(&client, &mut expected, &key, &value).await?;
    }
    let total = count(&expected);
    collect_until(&mut watch, &mut seen, |seen| seen.len() >= total).await?;
    put(&client, &mut expected, "t/last", "end").await?;
    collect_until(&mut watch, &mut seen, |seen| seen.len() > total).await?;
    assert_eq!(history_of(&seen)?, expected, "node {victim} killed");
    Ok(())
}

/// A reader that stops reading while changes pour in is cut with RESOURCE_EXHAUSTED naming
/// the buffer it overflowed, after the events sent before; the router serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_is_cut_naming_the_limit() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions {
        shards: 2,
        router_config: vec!["stream_buffer_bytes = 1048576".into()],
        ..ClusterOptions::default()
    })
    .await?;
    let client = cluster.client().await?;
    let start = client.timestamp().await?;
    let mut watch = client.watch(prefix_watch("s/", start));
    client.put(b"s/first", b"x".to_vec()).await?;
    let mut seen = Vec::new();
    collect_until(&mut watch, &mut seen, |seen| !seen.is_empty()).await?;
    // 12 MiB of changes, read by no one.
    let value = vec![b'v'; 96 << 10];
    for step in 0..128 {
        client
            .put(format!("s/{}", step % 16).as_bytes(), value.clone())
            .await?;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    let error = loop {
        match tokio::time::timeout_at(deadline, watch.next()).await {
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(err))) => break err,
            Ok(None) => anyhow::bail!("the watch ended without an error"),
            Err(_) => anyhow::bail!("the slow reader was not cut within {WAIT:?}"),
        }
    };
    match &error {
        Error::ResourceExhausted(message) => assert!(
            message.contains("stream_buffer_bytes") || message.contains("WATCH_QUEUE_BYTES"),
            "{message}"
        ),
        other => panic!("expected RESOURCE_EXHAUSTED, got {other:?}"),
    }
    assert!(watch.next().await.is_none(), "nothing after the error");
    assert_eq!(
        client.get(b"s/first").await?.map(|found| found.value),
        Some(b"x".to_vec())
    );
    Ok(())
}

/// Runs kvctl against the cluster's router.
async fn kvctl(cluster: &Cluster, args: &[&str]) -> anyhow::Result<std::process::Output> {
    let router = cluster.router_addr.clone().context("no router")?;
    let output = tokio::process::Command::new(ringkv_tests::bin_dir()?.join("kvctl"))
        .env_remove("RINGKV_ENDPOINTS")
        .args(["-e", &router, "--timeout", "10000"])
        .args(args)
        .output()
        .await?;
    Ok(output)
}

/// `kvctl watch --prefix P --from-revision R -o json` prints each change after R as a JSON
/// line; once the history no longer reaches back to R (a short `--mvcc-window-ms` and more
/// writes), a watch from R is refused as compacted, naming where to resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kvctl_watch_prints_json_lines_and_refuses_compacted_history() -> anyhow::Result<()> {
    let mut options = ClusterOptions {
        shards: 2,
        ..ClusterOptions::default()
    };
    options
        .node_args
        .extend(["--mvcc-window-ms", "300"].map(String::from));
    let cluster = Cluster::start(options).await?;
    let client = cluster.client().await?;
    let start = client.timestamp().await?;
    client.put(b"k/a", b"1".to_vec()).await?;
    client.put(b"k/b", b"2".to_vec()).await?;
    anyhow::ensure!(client.delete(b"k/a").await?, "k/a existed");
    let revision = start.to_string();
    let args = [
        "-o",
        "json",
        "watch",
        "--prefix",
        "k/",
        "--from-revision",
        &revision,
        "--limit",
        "3",
    ];
    let output = kvctl(&cluster, &args).await?;
    anyhow::ensure!(
        output.status.success(),
        "kvctl watch: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(output.stdout)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let of = |key: &str| -> Vec<(String, Option<String>)> {
        lines
            .iter()
            .filter(|line| line["key"] == key)
            .map(|line| {
                let kind = line["type"].as_str().unwrap_or_default().to_string();
                (kind, line["value"].as_str().map(str::to_string))
            })
            .collect()
    };
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(
        of("k/a"),
        vec![
            ("put".to_string(), Some("1".to_string())),
            ("delete".to_string(), None)
        ]
    );
    assert_eq!(of("k/b"), vec![("put".to_string(), Some("2".to_string()))]);
    assert!(lines.iter().all(|line| line["revision"].as_u64() > Some(start)));

    // Writes age the history past `start` (oracle time moves with every write).
    ringkv_tests::wait_until("the history to pass the start", SLOW_WAIT, || async {
        client.put(b"k/a", b"again".to_vec()).await.ok()?;
        client.put(b"k/b", b"again".to_vec()).await.ok()?;
        let mut watch = client.watch(prefix_watch("k/", start));
        match tokio::time::timeout(Duration::from_secs(2), watch.next()).await {
            Ok(Some(Err(Error::OutOfRange(message)))) if message.contains("compacted") => Some(()),
            _ => None,
        }
    })
    .await?;
    let args = ["watch", "k/a", "--from-revision", &revision];
    let output = kvctl(&cluster, &args).await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a compacted watch fails");
    assert!(
        stderr.contains("compacted") && stderr.contains("resume from"),
        "{stderr}"
    );
    Ok(())
}

/// A watch from now (no start revision) through the raw `Kv.Watch`: its first message —
/// the watch established — gives every shard the opening timestamp `T` as progress; from
/// then on it delivers every change committed after `T` and none at or before it. A
/// writer puts a counter to one key all along (before, while and after the watch opens),
/// so the check is exact: the first event is the put right after the value the key had at
/// `T` (read at `T`), and each later event the next put — a watch that replayed history or
/// lost what committed between `T` and its shard streams opening fails here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_now_starts_right_after_its_opening_timestamp() -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    use ringkv_client::ReadConsistency;
    use ringkv_proto::v1::{watch_request::Target, WatchRequest};

    let (cluster, client, _) = start_cluster(2).await?;
    let acknowledged = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let (client, acknowledged, stop) = (client.clone(), acknowledged.clone(), stop.clone());
        async move {
            let mut next = 1u64;
            while !stop.load(Ordering::SeqCst) {
                client.put(b"n/counter", next.to_string().into_bytes()).await?;
                acknowledged.store(next, Ordering::SeqCst);
                next += 1;
            }
            anyhow::Ok(())
        }
    });
    ringkv_tests::wait_until("the writer to have history", WAIT, || async {
        (acknowledged.load(Ordering::SeqCst) >= 5).then_some(())
    })
    .await?;

    let mut kv = cluster.kv().await?;
    let request = WatchRequest {
        target: Some(Target::Prefix(b"n/".to_vec())),
        ..WatchRequest::default()
    };
    let mut stream = kv.watch(request).await?.into_inner();
    let first = tokio::time::timeout(WAIT, stream.message())
        .await?
        .context("the watch ended at once")?
        .context("no first message")?;
    anyhow::ensure!(
        first.events.is_empty(),
        "the first message is progress: {first:?}"
    );
    let shards: std::collections::BTreeSet<u32> = first.progress.iter().map(|p| p.shard_id).collect();
    anyhow::ensure!(shards.len() == 2, "every shard's progress: {first:?}");
    let opened_at = first.progress[0].ts;
    anyhow::ensure!(first.progress.iter().all(|p| p.ts == opened_at), "{first:?}");
    let established = acknowledged.load(Ordering::SeqCst);

    // Events until one of a put invoked after the watch was established.
    let mut values = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while values.last().is_none_or(|last| *last <= established + 1) {
        let message = tokio::time::timeout_at(deadline, stream.message())
            .await
            .context("no event of a put after the watch was established")??
            .context("the watch ended")?;
        for event in message.events {
            anyhow::ensure!(event.commit_ts > opened_at, "{event:?} at or before {opened_at}");
            values.push(String::from_utf8(event.value)?.parse::<u64>()?);
        }
    }
    stop.store(true, Ordering::SeqCst);
    writer.await??;

    let at_open = match client
        .get_with(b"n/counter", ReadConsistency::At(opened_at))
        .await?
    {
        Some(found) => String::from_utf8(found.value)?.parse::<u64>()?,
        None => 0,
    };
    let expected: Vec<u64> = (at_open + 1..=at_open + values.len() as u64).collect();
    assert_eq!(
        values, expected,
        "from the put after the value at the opening timestamp {opened_at} ({at_open}), every put once"
    );
    Ok(())
}

/// `kvctl watch KEY END` (etcdctl's RANGE_END) prints the changes of `[KEY, END)` only —
/// across shards, deletes included — here as TSV under its header line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kvctl_watch_of_a_range_prints_its_changes_only() -> anyhow::Result<()> {
    let (cluster, client, start) = start_cluster(2).await?;
    for key in ["g/a", "g/b", "g/c", "g/d"] {
        client
            .put(key.as_bytes(), format!("{key}=1").into_bytes())
            .await?;
    }
    anyhow::ensure!(client.delete(b"g/c").await?, "g/c existed");
    client.put(b"g/b", b"g/b=2".to_vec()).await?;
    let revision = start.to_string();
    let args = [
        "-o",
        "tsv",
        "watch",
        "g/b",
        "g/d",
        "--from-revision",
        &revision,
        "--limit",
        "4",
    ];
    let output = kvctl(&cluster, &args).await?;
    anyhow::ensure!(
        output.status.success(),
        "kvctl watch: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout)?;
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some("type\tkey\tvalue\tversion\trevision\tshard"),
        "{stdout}"
    );
    let rows: Vec<Vec<&str>> = lines.map(|line| line.split('\t').collect()).collect();
    let of = |key: &str| -> Vec<(&str, &str)> {
        rows.iter()
            .filter(|row| row[1] == key)
            .map(|row| (row[0], row[2]))
            .collect()
    };
    assert_eq!(rows.len(), 4, "{stdout}");
    assert_eq!(of("g/b"), vec![("put", "g/b=1"), ("put", "g/b=2")], "{stdout}");
    assert_eq!(of("g/c"), vec![("put", "g/c=1"), ("delete", "")], "{stdout}");
    assert!(
        rows.iter()
            .all(|row| row[4].parse::<u64>().is_ok_and(|revision| revision > start)),
        "{stdout}"
    );
    Ok(())
}

/// A watch resumes across a clean restart of every node (SIGTERM: each saves its shards'
/// history with its state, `kept_history.rs`): dropped midway, then every node restarted
/// while writes happened before and after, it resumes from its position — a version from
/// before the restart — and delivers exactly the events it had not, none lost or twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumes_across_a_restart_of_every_node() -> anyhow::Result<()> {
    let (mut cluster, client, start) = start_cluster(2).await?;
    let options = prefix_watch("x/", start);
    let mut expected = History::new();
    for key in 0..6 {
        put(&client, &mut expected, &format!("x/{key}"), "a").await?;
    }
    let mut first = client.watch(options.clone());
    let mut seen = Vec::new();
    collect_until(&mut first, &mut seen, |seen| seen.len() >= 6).await?;
    let position = first.position();
    drop(first);
    // Overwrites and deletes leave versions only the history holds.
    for key in 0..6 {
        put(&client, &mut expected, &format!("x/{key}"), "b").await?;
        if key % 2 == 0 {
            delete(&client, &mut expected, &format!("x/{key}")).await?;
        }
    }
    for node in 1..=3 {
        cluster.stop_node(node).await?;
    }
    for node in 1..=3 {
        cluster.start_node(node).await?;
    }
    cluster.wait_for_leaders(SLOW_WAIT).await?;
    put(&client, &mut expected, "x/1", "c").await?;

    let mut resumed = client.watch_from(options, position);
    let total = count(&expected);
    collect_until(&mut resumed, &mut seen, |seen| seen.len() >= total).await?;
    put(&client, &mut expected, "x/last", "end").await?;
    collect_until(&mut resumed, &mut seen, |seen| seen.len() > total).await?;
    assert_eq!(
        history_of(&seen)?,
        expected,
        "every change once, across the restart"
    );
    Ok(())
}
