//! Transactions end to end: commits across shards become visible at one timestamp, first
//! committer wins under repeatable read (and not under read committed), concurrent
//! transfers conserve money, and a coordinator that vanished between prewrite and commit
//! leaves no half-visible transaction: readers and writers resolve its locks through the
//! primary's record (rolled back after its time to live, or committed when the primary was).

use std::time::Duration;

use anyhow::Context;
use futures::stream::{self, StreamExt, TryStreamExt};
use ringkv_client::{proto, Client, Error, Isolation, ReadConsistency};
use ringkv_tests::{wait_until, Cluster, ClusterOptions};

/// An account's balance (absent: 0).
fn balance(found: Option<ringkv_client::Versioned>) -> i64 {
    found
        .and_then(|versioned| String::from_utf8(versioned.value).ok()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_commit_atomically_and_conflicts_abort() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions {
        shards: 4,
        ..ClusterOptions::default()
    })
    .await?;
    let client = cluster.client().await?;

    // Writes to many shards become visible together, at the commit timestamp.
    let mut txn = client.begin(Isolation::RepeatableRead).await?;
    for i in 0..8 {
        txn.put(format!("t/{i}"), format!("v{i}"));
    }
    assert_eq!(
        txn.get(b"t/3").await?.map(|v| v.value),
        Some(b"v3".to_vec()),
        "own write"
    );
    let committed = txn.commit().await?;
    assert!(
        !committed.one_phase,
        "eight keys over four shards take two phases"
    );
    let keys: Vec<String> = (0..8).map(|i| format!("t/{i}")).collect();
    let before = client
        .batch_get_with(&keys, ReadConsistency::At(committed.commit_ts - 1))
        .await?;
    assert!(
        before.iter().all(Option::is_none),
        "nothing before the commit: {before:?}"
    );
    let at = client
        .batch_get_with(&keys, ReadConsistency::At(committed.commit_ts))
        .await?;
    assert!(at.iter().all(Option::is_some), "everything at the commit: {at:?}");

    // First committer wins under repeatable read...
    let mut first = client.begin(Isolation::RepeatableRead).await?;
    let mut second = client.begin(Isolation::RepeatableRead).await?;
    first.put(b"t/0", b"first".to_vec());
    second.put(b"t/0", b"second".to_vec());
    assert!(first.commit().await?.one_phase, "one key: one phase");
    match second.commit().await {
        Err(Error::TxnAborted {
            reason, retryable, ..
        }) => {
            assert_eq!(reason, "WRITE_CONFLICT");
            assert!(retryable);
        }
        other => panic!("a write conflict expected, got {other:?}"),
    }
    assert_eq!(
        client.get(b"t/0").await?.map(|v| v.value),
        Some(b"first".to_vec())
    );
    // ...not under read committed (a lost update is allowed there).
    let mut first = client.begin(Isolation::ReadCommitted).await?;
    let mut second = client.begin(Isolation::ReadCommitted).await?;
    first.put(b"t/1", b"first".to_vec());
    second.put(b"t/1", b"second".to_vec());
    first.commit().await?;
    second.commit().await?;
    assert_eq!(
        client.get(b"t/1").await?.map(|v| v.value),
        Some(b"second".to_vec())
    );
    // Appends land on what is committed at the commit: under read committed two concurrent
    // appends both land; a transaction reads its own append on top of the committed value.
    client.put(b"t/list", b"a".to_vec()).await?;
    let mut first = client.begin(Isolation::ReadCommitted).await?;
    let mut second = client.begin(Isolation::ReadCommitted).await?;
    first.append(b"t/list", b"b");
    second.append(b"t/list", b"c");
    assert_eq!(first.get(b"t/list").await?.map(|v| v.value), Some(b"ab".to_vec()));
    first.commit().await?;
    second.commit().await?;
    assert_eq!(
        client.get(b"t/list").await?.map(|v| v.value),
        Some(b"abc".to_vec())
    );
    serializable_forbids_write_skew_and_phantoms(&client).await?;

    transfers_conserve_money(&client, Isolation::RepeatableRead, "bank").await?;
    transfers_conserve_money(&client, Isolation::Serializable, "sbank").await?;
    abandoned_transactions_are_resolved(&cluster, &client).await?;
    kvctl_runs_a_script(&cluster, &client).await?;
    old_transaction_records_are_collected(&cluster, &client).await?;
    Ok(())
}

/// `kvctl txn` reads a script from stdin (lines or JSON), runs it as one transaction and
/// prints each line's result as JSON; a bad line is a usage error (exit 64) and nothing is
/// written. `--interactive` runs each line as it comes: reads see the transaction's own
/// writes, a mistyped line is skipped, `rollback` leaves nothing behind.
async fn kvctl_runs_a_script(cluster: &Cluster, client: &Client) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let router = cluster.router_addr.clone().context("the router's address")?;
    let run_with = |extra: &'static [&'static str], script: &'static str| {
        let router = router.clone();
        async move {
            let mut child = tokio::process::Command::new(ringkv_tests::bin_dir()?.join("kvctl"))
                .args([
                    "-e",
                    &router,
                    "-o",
                    "json",
                    "txn",
                    "--isolation",
                    "read-committed",
                ])
                .args(extra)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .context("spawn kvctl")?;
            let mut stdin = child.stdin.take().context("kvctl's stdin")?;
            stdin.write_all(script.as_bytes()).await?;
            drop(stdin);
            anyhow::Ok(child.wait_with_output().await?)
        }
    };
    let run = |script: &'static str| run_with(&[], script);
    let output = run("put cli/a 1\nput cli/b two words\nget cli/b\ndel cli/c\n").await?;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(printed["ops"][2]["value"], "two words", "{printed}");
    assert!(printed["commit_ts"].as_u64().is_some(), "{printed}");
    assert_eq!(client.get(b"cli/a").await?.map(|v| v.value), Some(b"1".to_vec()));
    let output = run("put cli/a 2\nfrob cli/a\n").await?;
    assert_eq!(
        output.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("line 2"));
    assert_eq!(client.get(b"cli/a").await?.map(|v| v.value), Some(b"1".to_vec()));

    let output = run(r#"[{"op": "put", "key": "cli/json", "value": "from json"},
                         {"op": "get", "key": "cli/json"}]"#)
    .await?;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(printed["ops"][1]["value"], "from json", "{printed}");
    assert_eq!(
        client.get(b"cli/json").await?.map(|v| v.value),
        Some(b"from json".to_vec())
    );

    let output = run_with(
        &["--interactive"],
        "put cli/i typed\nget cli/i\nfrob\nget cli/a\ncommit\n",
    )
    .await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("unknown operation"), "{stderr}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(lines[1]["value"], "typed", "its own write: {lines:?}");
    assert_eq!(lines[2]["value"], "1", "{lines:?}");
    assert!(lines[3]["commit_ts"].as_u64().is_some(), "{lines:?}");
    assert_eq!(
        client.get(b"cli/i").await?.map(|v| v.value),
        Some(b"typed".to_vec())
    );

    let output = run_with(&["--interactive"], "put cli/r gone\nrollback\nput cli/r later\n").await?;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("rolled_back"));
    assert_eq!(
        client.get(b"cli/r").await?,
        None,
        "a rolled back write is not there"
    );
    Ok(())
}

/// Two on-call doctors: each transaction checks that both are on call and takes one off.
/// Under repeatable read both commit (write skew: nobody is left on call); under
/// serializable the second aborts with a retryable `SERIALIZATION_FAILURE`. A transaction
/// that scanned a range aborts when another inserts into it before it commits (a phantom),
/// and a transactional scan sees the transaction's own writes.
async fn serializable_forbids_write_skew_and_phantoms(client: &Client) -> anyhow::Result<()> {
    for (isolation, prefix) in [
        (Isolation::RepeatableRead, "rr"),
        (Isolation::Serializable, "ser"),
    ] {
        let (alice, bob) = (format!("{prefix}/oncall/alice"), format!("{prefix}/oncall/bob"));
        client.put(&alice, b"on".to_vec()).await?;
        client.put(&bob, b"on".to_vec()).await?;
        let mut first = client.begin(isolation).await?;
        let mut second = client.begin(isolation).await?;
        for txn in [&first, &second] {
            let both = txn.batch_get([&alice, &bob]).await?;
            assert!(both.iter().all(Option::is_some), "both on call at the start");
        }
        first.put(&alice, b"off".to_vec());
        second.put(&bob, b"off".to_vec());
        first.commit().await?;
        let outcome = second.commit().await;
        match isolation {
            Isolation::RepeatableRead => {
                outcome.context("write skew commits under repeatable read")?;
            }
            _ => match outcome {
                Err(Error::TxnAborted {
                    reason, retryable, ..
                }) => {
                    assert_eq!(reason, "SERIALIZATION_FAILURE");
                    assert!(retryable);
                    assert_eq!(client.get(&bob).await?.map(|v| v.value), Some(b"on".to_vec()));
                }
                other => panic!("serializable must refuse write skew, got {other:?}"),
            },
        }
    }

    // A phantom: a scan saw no key of a range, and another transaction inserts one.
    let range = ringkv_client::KeyRange::prefix(b"ser/tickets/");
    let mut scanner = client.begin(Isolation::Serializable).await?;
    scanner.put(b"ser/tickets/mine", b"1".to_vec());
    let seen = scanner.scan(&range, 10).await?;
    let keys: Vec<&[u8]> = seen.iter().map(|entry| entry.key.as_slice()).collect();
    assert_eq!(
        keys,
        vec![b"ser/tickets/mine".as_slice()],
        "the scan sees its own write"
    );
    let mut inserter = client.begin(Isolation::Serializable).await?;
    inserter.put(b"ser/tickets/other", b"1".to_vec());
    inserter.commit().await?;
    match scanner.commit().await {
        Err(Error::TxnAborted { reason, .. }) => assert_eq!(reason, "SERIALIZATION_FAILURE"),
        other => panic!("a phantom must abort a serializable scanner, got {other:?}"),
    }
    // Past what a limited scan looked at, inserts do not matter.
    let mut scanner = client.begin(Isolation::Serializable).await?;
    let first = scanner.scan(&range, 1).await?;
    assert_eq!(first.len(), 1);
    scanner.put(b"ser/summary", b"1".to_vec());
    client.put(b"ser/tickets/zzz", b"later".to_vec()).await?;
    scanner
        .commit()
        .await
        .context("an insert past the scanned part")?;
    Ok(())
}

/// Concurrent transfers between accounts on every shard, with snapshot reads of the total
/// while they run: the total never changes.
async fn transfers_conserve_money(client: &Client, isolation: Isolation, prefix: &str) -> anyhow::Result<()> {
    const ACCOUNTS: usize = 6;
    const INITIAL: i64 = 100;
    let account = |i: usize| format!("{prefix}/{i}");
    let mut setup = client.begin(isolation).await?;
    for i in 0..ACCOUNTS {
        setup.put(account(i), INITIAL.to_string());
    }
    setup.commit().await?;
    let total = ACCOUNTS as i64 * INITIAL;

    let transfers = stream::iter(0..40usize)
        .map(|n| {
            let client = client.clone();
            async move {
                let (from, to) = (account(n % ACCOUNTS), account((n * 7 + 1) % ACCOUNTS));
                if from == to {
                    return Ok::<_, Error>(());
                }
                client
                    .transact(isolation, |txn| {
                        let (from, to) = (from.clone(), to.clone());
                        Box::pin(async move {
                            let a = balance(txn.get(&from).await?);
                            let b = balance(txn.get(&to).await?);
                            txn.put(&from, (a - 3).to_string());
                            txn.put(&to, (b + 3).to_string());
                            Ok(())
                        })
                    })
                    .await
            }
        })
        .buffer_unordered(6);
    let audits = async {
        let keys: Vec<String> = (0..ACCOUNTS).map(account).collect();
        for _ in 0..20 {
            let ts = client.timestamp().await?;
            let balances = client.batch_get_with(&keys, ReadConsistency::At(ts)).await?;
            let sum: i64 = balances.into_iter().map(balance).sum();
            anyhow::ensure!(sum == total, "a snapshot at {ts} sums to {sum}, not {total}");
        }
        Ok::<_, anyhow::Error>(())
    };
    let (transferred, audited) = tokio::join!(transfers.try_collect::<Vec<()>>(), audits);
    transferred.context("transfers")?;
    audited?;
    let keys: Vec<String> = (0..ACCOUNTS).map(account).collect();
    let sum: i64 = client.batch_get(&keys).await?.into_iter().map(balance).sum();
    assert_eq!(sum, total, "money is conserved");
    Ok(())
}

/// Prewrites as a coordinator would, straight at the shard leaders, then vanishes: once
/// before committing anything (readers wait, then roll it back after its time to live) and
/// once after committing only the primary (readers commit the rest at once).
async fn abandoned_transactions_are_resolved(cluster: &Cluster, client: &Client) -> anyhow::Result<()> {
    client.put(b"orphan/a", b"old-a".to_vec()).await?;
    client.put(b"orphan/b", b"old-b".to_vec()).await?;
    client.put(b"half/a", b"old-a".to_vec()).await?;
    client.put(b"half/b", b"old-b".to_vec()).await?;

    // Never committed: a reader waits for the lock, which is rolled back once its time to
    // live runs out; the old values stay, and writes to the keys go through.
    let start_ts = client.timestamp().await?;
    prewrite(
        cluster,
        start_ts,
        &[(b"orphan/a", b"new-a"), (b"orphan/b", b"new-b")],
    )
    .await?;
    // Read uncommitted sees the provisional values at once, in point reads and scans.
    let dirty = client.begin(Isolation::ReadUncommitted).await?;
    assert_eq!(
        dirty.get(b"orphan/b").await?.map(|v| v.value),
        Some(b"new-b".to_vec())
    );
    let scanned = dirty
        .scan(&ringkv_client::KeyRange::prefix(b"orphan/"), 10)
        .await?;
    let values: Vec<Vec<u8>> = scanned.into_iter().map(|entry| entry.value).collect();
    assert_eq!(values, vec![b"new-a".to_vec(), b"new-b".to_vec()]);
    let read = client.get(b"orphan/b").await?;
    assert_eq!(read.map(|v| v.value), Some(b"old-b".to_vec()));
    assert_eq!(
        client.get(b"orphan/a").await?.map(|v| v.value),
        Some(b"old-a".to_vec())
    );
    client.put(b"orphan/a", b"after".to_vec()).await?;

    // The primary committed, the other key not: a reader commits it.
    let start_ts = client.timestamp().await?;
    prewrite(cluster, start_ts, &[(b"half/a", b"new-a"), (b"half/b", b"new-b")]).await?;
    let commit_ts = client.timestamp().await?;
    shard_call(cluster, b"half/a", |shard_id, mut shard_kv| async move {
        shard_kv
            .txn_commit(proto::ShardTxnCommitRequest {
                shard_id,
                start_ts,
                commit_ts,
                keys: vec![b"half/a".to_vec()],
                primary: true,
            })
            .await
            .map(drop)
    })
    .await?;
    let both = client.batch_get([&b"half/a"[..], b"half/b"]).await?;
    let values: Vec<Option<Vec<u8>>> = both.into_iter().map(|v| v.map(|v| v.value)).collect();
    assert_eq!(values, vec![Some(b"new-a".to_vec()), Some(b"new-b".to_vec())]);
    Ok(())
}

/// A collection finishes a transaction whose primary committed but whose other lock nobody
/// met (it commits the lock), then deletes the records of finished transactions; asking
/// about a collected one says it is no longer known (never "aborted"); a second collection
/// finds nothing; `kvctl txn-gc` runs one too.
async fn old_transaction_records_are_collected(cluster: &Cluster, client: &Client) -> anyhow::Result<()> {
    let mut txn = client.begin(Isolation::RepeatableRead).await?;
    txn.put(b"gc/x", b"1".to_vec());
    txn.put(b"gc/y", b"1".to_vec());
    txn.commit().await?;
    let start_ts = client.timestamp().await?;
    prewrite(cluster, start_ts, &[(b"gc/a", b"new-a"), (b"gc/b", b"new-b")]).await?;
    let commit_ts = client.timestamp().await?;
    shard_call(cluster, b"gc/a", |shard_id, mut shard_kv| async move {
        shard_kv
            .txn_commit(proto::ShardTxnCommitRequest {
                shard_id,
                start_ts,
                commit_ts,
                keys: vec![b"gc/a".to_vec()],
                primary: true,
            })
            .await
            .map(drop)
    })
    .await?;
    assert_eq!(
        client.txn_status(start_ts, b"gc/a").await?,
        ringkv_client::TxnState::Committed { commit_ts }
    );

    let mut phases = Vec::new();
    let done = client
        .collect_txn_records(Some(Duration::from_millis(1)), |step| phases.push(step.phase))
        .await?;
    assert_eq!(done.phase, "done");
    assert!(done.locks_resolved >= 1, "the lock left on gc/b: {done:?}");
    assert!(done.records_purged >= 2, "{done:?}");
    assert!(
        phases.contains(&"resolve") && phases.contains(&"purge"),
        "{phases:?}"
    );
    let values: Vec<Option<Vec<u8>>> = client
        .batch_get([&b"gc/a"[..], b"gc/b"])
        .await?
        .into_iter()
        .map(|v| v.map(|v| v.value))
        .collect();
    assert_eq!(values, vec![Some(b"new-a".to_vec()), Some(b"new-b".to_vec())]);
    let forgotten = client.txn_status(start_ts, b"gc/a").await;
    assert!(
        matches!(&forgotten, Err(err) if err.to_string().contains("garbage-collected")),
        "{forgotten:?}"
    );

    let again = client
        .collect_txn_records(Some(Duration::from_millis(1)), |_| {})
        .await?;
    assert_eq!((again.locks_resolved, again.records_purged), (0, 0), "{again:?}");
    let router = cluster.router_addr.clone().context("the router's address")?;
    let output = tokio::process::Command::new(ringkv_tests::bin_dir()?.join("kvctl"))
        .args(["-e", &router, "-o", "json", "txn-gc", "--age-ms", "1"])
        .kill_on_drop(true)
        .output()
        .await?;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(report["records_collected"], 0, "{report}");
    Ok(())
}

/// The time to live of the abandoned transactions (the router gives its own 5 s).
const ORPHAN_TTL_MS: u64 = 1_000;

/// Prewrites `writes` for transaction `start_ts` (the first key primary) on their shards.
async fn prewrite(cluster: &Cluster, start_ts: u64, writes: &[(&[u8], &[u8])]) -> anyhow::Result<()> {
    let primary = writes[0].0.to_vec();
    for (index, (key, value)) in writes.iter().enumerate() {
        let (primary, key, value) = (primary.clone(), key.to_vec(), value.to_vec());
        shard_call(cluster, &key.clone(), move |shard_id, mut shard_kv| {
            let (primary, key, value) = (primary.clone(), key.clone(), value.clone());
            async move {
                let response = shard_kv
                    .txn_prewrite(proto::ShardTxnPrewriteRequest {
                        shard_id,
                        start_ts,
                        primary,
                        mutations: vec![proto::TxnMutation {
                            key,
                            kind: proto::WriteKind::Put as i32,
                            value,
                        }],
                        check_conflicts: true,
                        ttl_ms: if index == 0 { ORPHAN_TTL_MS } else { 0 },
                    })
                    .await?
                    .into_inner();
                if response.conflicts.is_empty() {
                    Ok(())
                } else {
                    Err(tonic::Status::aborted(format!("{:?}", response.conflicts)))
                }
            }
        })
        .await?;
    }
    Ok(())
}

/// Runs `call` against the leader of `key`'s shard (each node in turn until one takes it).
async fn shard_call<F, Fut>(cluster: &Cluster, key: &[u8], call: F) -> anyhow::Result<()>
where
    F: Fn(u32, proto::shard_kv_client::ShardKvClient<tonic::transport::Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>>,
{
    let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
    let ring = cluster.ring(ids[0]).await?;
    let shard_id = ring.shard_for_key(key).0;
    let (call, ids) = (&call, &ids);
    wait_until(
        "a shard leader to take the call",
        Duration::from_secs(20),
        || async move {
            for id in ids {
                let shard_kv = cluster.shard_kv(*id).await.ok()?;
                if call(shard_id, shard_kv).await.is_ok() {
                    return Some(());
                }
            }
            None
        },
    )
    .await?;
    Ok(())
}

/// Old versions go (the history keeps `--mvcc-window-ms` of them) without breaking a live
/// snapshot: a transaction keeps reading what it first read while the key is overwritten
/// many times; once its snapshot falls out of the window its reads are refused with a clear
/// "too old" error (a retryable `TXN_TOO_OLD` abort), never answered with a newer value; a
/// new transaction reads the newest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_versions_go_without_breaking_a_live_snapshot() -> anyhow::Result<()> {
    const WINDOW_MS: u64 = 2_000;
    let mut options = ClusterOptions {
        shards: 2,
        ..ClusterOptions::default()
    };
    options
        .node_args
        .extend(["--mvcc-window-ms".to_string(), WINDOW_MS.to_string()]);
    let cluster = Cluster::start(options).await?;
    let client = cluster.client().await?;
    client.put(b"old/k", b"v0".to_vec()).await?;
    client.put(b"old/other", b"o0".to_vec()).await?;

    let live = client.begin(Isolation::RepeatableRead).await?;
    let read = |found: Option<ringkv_client::Versioned>| found.map(|found| found.value);
    assert_eq!(read(live.get(b"old/k").await?), Some(b"v0".to_vec()));
    for i in 1..=50 {
        client.put(b"old/k", format!("v{i}").into_bytes()).await?;
    }
    client.put(b"old/other", b"o1".to_vec()).await?;
    assert_eq!(
        read(live.get(b"old/k").await?),
        Some(b"v0".to_vec()),
        "the live snapshot reads its version under 50 newer ones"
    );
    assert_eq!(
        read(live.get(b"old/other").await?),
        Some(b"o0".to_vec()),
        "and a key it had not read yet as of its start"
    );

    // Past the window the versions below the newest are gone: the old snapshot is refused.
    // History is trimmed as the shard applies newer writes, so the key keeps being written.
    let refused = wait_until(
        "the old snapshot to fall out of the history",
        Duration::from_millis(10 * WINDOW_MS),
        || async {
            client.put(b"old/k", b"v50".to_vec()).await.ok()?;
            match live.get(b"old/k").await {
                Ok(found) => {
                    assert_eq!(read(found), Some(b"v0".to_vec()), "never a newer value");
                    None
                }
                Err(err) => Some(err),
            }
        },
    )
    .await?;
    // A retryable abort (OUT_OF_RANGE from the shard, turned into TXN_TOO_OLD by the
    // client), so `Client::transact` runs the transaction again on a newer snapshot.
    assert!(
        matches!(&refused, Error::TxnAborted { reason, retryable: true, .. } if reason == "TXN_TOO_OLD"),
        "{refused:?}"
    );
    assert!(refused.to_string().contains("snapshot too old"), "{refused}");
    let fresh = client.begin(Isolation::RepeatableRead).await?;
    assert_eq!(read(fresh.get(b"old/k").await?), Some(b"v50".to_vec()));
    Ok(())
}
