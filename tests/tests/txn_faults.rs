//! Transactions under faults of the coordinator and of the topology, end to end. A router
//! killed inside a commit (by its test failpoint, `--unsafe-failpoint`) leaves either
//! nothing visible (killed after the prewrites: readers roll its locks back once its time to
//! live has run out) or the whole transaction (killed after the primary's commit: readers
//! roll the other shard forward through the primary's record). Transfers running while
//! shards move (a node joins, then another is decommissioned) conserve money and lose no
//! commit.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ringkv_client::{proto, Client, Error, Isolation, ReadConsistency, TxnState, Versioned};
use ringkv_tests::{wait_until, Cluster, ClusterOptions, WAIT};

/// The exit status of a router stopped by a failpoint (`FAILPOINT_EXIT_CODE` in
/// `router/src/failpoint.rs`).
const FAILPOINT_EXIT_CODE: i32 = 86;

/// How long locks left by a killed coordinator may take to resolve: the router's 5 s time
/// to live, then a reader's resolution (generous for slow CI).
const RESOLVE_WAIT: Duration = Duration::from_secs(60);

/// How long a rebalance may take here (small data, debug builds, 2 cores).
const REBALANCE_WAIT: Duration = Duration::from_secs(120);

/// Each account's balance before the transfer.
const INITIAL: i64 = 100;

/// What the killed transfer moves.
const AMOUNT: i64 = 30;

/// A balance as stored (absent: 0); anything else is a broken value.
fn balance(found: Option<Versioned>) -> Result<i64> {
    let Some(found) = found else {
        return Ok(0);
    };
    let text = String::from_utf8(found.value).context("a balance is not UTF-8")?;
    text.parse().with_context(|| format!("balance {text:?}"))
}

/// The balances of `keys` read together (`At` a timestamp, or the latest).
async fn balances(client: &Client, keys: &[&str], consistency: ReadConsistency) -> Result<Vec<i64>> {
    let found = client.batch_get_with(keys, consistency).await?;
    found.into_iter().map(balance).collect()
}

/// Every lock on every shard (shard, lock), each shard asked on its leader.
async fn all_locks(cluster: &Cluster) -> Result<Vec<(u32, proto::TxnConflict)>> {
    let mut all = Vec::new();
    for shard in 0..cluster.options.shards {
        let what = format!("shard {shard}'s leader to list its locks");
        let locks = wait_until(&what, WAIT, || async { cluster.shard_locks(shard).await.ok() }).await?;
        all.extend(locks.into_iter().map(|lock| (shard, lock)));
    }
    Ok(all)
}

/// What a transfer killed inside its commit left behind.
struct KilledTransfer {
    cluster: Cluster,
    /// The debited and the credited account, on different shards.
    from: String,
    to: String,
    shards: [u32; 2],
    start_ts: u64,
    /// Every lock in the cluster right after the router died.
    locks: Vec<(u32, proto::TxnConflict)>,
}

/// A 3-node cluster whose router runs with `failpoint`; a transfer of [`AMOUNT`] between two
/// accounts on different shards, committed through it: the router dies at the failpoint (it
/// is checked to have exited with the failpoint's status, and the commit to have no known
/// outcome), and the locks left are listed before anything else can touch them (no router
/// runs then). A fresh router, without the failpoint, is started last.
async fn transfer_killed_at(failpoint: &str) -> Result<KilledTransfer> {
    let mut cluster = Cluster::nodes_only(ClusterOptions::default()).await?;
    cluster
        .start_router_with(&["--unsafe-failpoint", failpoint])
        .await?;
    cluster.wait_for_leaders(WAIT).await?;
    let ring = cluster.ring(1).await?;
    let from = "account/from".to_string();
    let from_shard = ring.shard_for_key(from.as_bytes()).0;
    let (to, to_shard) = (0..1000)
        .map(|i| format!("account/to-{i}"))
        .map(|key| {
            let shard = ring.shard_for_key(key.as_bytes()).0;
            (key, shard)
        })
        .find(|(_, shard)| *shard != from_shard)
        .context("no key on another shard")?;

    let client = cluster.client().await?;
    // Plain writes: a setup transaction would stop at the failpoint too.
    client.put(&from, INITIAL.to_string()).await?;
    client.put(&to, INITIAL.to_string()).await?;
    let mut txn = client.begin(Isolation::RepeatableRead).await?;
    let start_ts = txn.start_ts();
    let debited = balance(txn.get(&from).await?)?;
    let credited = balance(txn.get(&to).await?)?;
    assert_eq!((debited, credited), (INITIAL, INITIAL));
    txn.put(&from, (debited - AMOUNT).to_string());
    txn.put(&to, (credited + AMOUNT).to_string());
    let commit = tokio::time::timeout(WAIT, txn.commit())
        .await
        .context("the commit through the dying router did not return")?;
    match commit {
        Err(err) if err.is_outcome_unknown() => {}
        other => bail!("a commit whose router died must have no known outcome, got {other:?}"),
    }
    let exit = cluster.wait_for_router_exit(WAIT).await?;
    assert_eq!(
        exit.code(),
        Some(FAILPOINT_EXIT_CODE),
        "the router must stop at failpoint {failpoint}: {exit}"
    );
    let locks = all_locks(&cluster).await?;
    cluster.start_router_with(&[]).await?;
    Ok(KilledTransfer {
        cluster,
        from,
        to,
        shards: [from_shard, to_shard],
        start_ts,
        locks,
    })
}

/// After the fault, a new transfer between the same accounts (read at its start: the
/// balances `expected_before`) commits at once, in two phases (two shards), and reads back.
async fn next_transfer_commits(
    client: &Client,
    from: &str,
    to: &str,
    expected_before: [i64; 2],
) -> Result<()> {
    let [debited, credited] = expected_before;
    let mut txn = client.begin(Isolation::RepeatableRead).await?;
    assert_eq!(balance(txn.get(from).await?)?, debited);
    assert_eq!(balance(txn.get(to).await?)?, credited);
    txn.put(from, (debited - 1).to_string());
    txn.put(to, (credited + 1).to_string());
    let committed = txn.commit().await.context("a transfer after the fault")?;
    assert!(!committed.one_phase, "two shards take two phases");
    assert_eq!(
        balances(client, &[from, to], ReadConsistency::Linearizable).await?,
        vec![debited - 1, credited + 1],
        "after the transfer committed at {}",
        committed.commit_ts
    );
    Ok(())
}

/// A router killed between the prewrites and its commit leaves a pending transaction whose
/// locks are really there (one per shard, same primary); once their time to live runs out
/// readers roll it back: both accounts read their old balances, `Txn.Status` says aborted,
/// no lock is left, and a new transfer on the same keys commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_killed_after_prewrite_leaves_nothing_visible() -> Result<()> {
    let killed = transfer_killed_at("txn-exit-after-prewrite").await?;
    let KilledTransfer {
        cluster,
        from,
        to,
        shards,
        start_ts,
        locks,
    } = &killed;
    let mut locked: Vec<(u32, Vec<u8>)> = locks
        .iter()
        .map(|(shard, lock)| (*shard, lock.key.clone()))
        .collect();
    locked.sort();
    let mut expected = vec![
        (shards[0], from.as_bytes().to_vec()),
        (shards[1], to.as_bytes().to_vec()),
    ];
    expected.sort();
    assert_eq!(locked, expected, "both keys locked, nothing else: {locks:?}");
    let primary = locks[0].1.primary.clone();
    assert!(
        primary == from.as_bytes() || primary == to.as_bytes(),
        "the primary is one of the keys: {locks:?}"
    );
    for (_, lock) in locks {
        assert_eq!((lock.start_ts, &lock.primary), (*start_ts, &primary), "{lock:?}");
    }

    let client = cluster.client().await?;
    let began_resolving = Instant::now();
    // Before its time to live runs out it is pending (unless starting the router took that
    // long); never committed.
    let early = client.txn_status(*start_ts, &primary).await?;
    assert!(
        matches!(early, TxnState::Pending | TxnState::Aborted),
        "{early:?}"
    );
    let keys = [from.as_str(), to.as_str()];
    let read = wait_until("the accounts to be readable", RESOLVE_WAIT, || async {
        balances(&client, &keys, ReadConsistency::Linearizable).await.ok()
    })
    .await?;
    assert_eq!(read, vec![INITIAL, INITIAL], "the old balances");
    assert_eq!(read.iter().sum::<i64>(), 2 * INITIAL, "money is conserved");
    let snapshot = client.timestamp().await?;
    assert_eq!(
        balances(&client, &keys, ReadConsistency::At(snapshot)).await?,
        vec![INITIAL, INITIAL],
        "a snapshot read after the rollback"
    );
    assert_eq!(client.txn_status(*start_ts, &primary).await?, TxnState::Aborted);
    let left = all_locks(cluster).await?;
    assert!(left.is_empty(), "locks left after the rollback: {left:?}");
    eprintln!(
        "killed after prewrite: status first {early:?}, readable after {:?}",
        began_resolving.elapsed()
    );
    next_transfer_commits(&client, from, to, [INITIAL, INITIAL]).await
}

/// A router killed right after its primary's commit, before the other shard's, leaves
/// the other key locked (and only it); `Txn.Status` says committed, and readers commit the
/// other key at once: at the commit timestamp both accounts read the new balances, just
/// below it both the old ones, no lock is left, and a new transfer commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_killed_after_primary_commit_leaves_the_transaction_committed() -> Result<()> {
    let killed = transfer_killed_at("txn-exit-after-primary-commit").await?;
    let KilledTransfer {
        cluster,
        from,
        to,
        shards,
        start_ts,
        locks,
    } = &killed;
    let [(shard, lock)] = locks.as_slice() else {
        bail!("one lock (the secondary's) must be left, got {locks:?}");
    };
    let (secondary, primary) = if lock.key == from.as_bytes() {
        (from, to)
    } else {
        (to, from)
    };
    assert_eq!(lock.key, secondary.as_bytes(), "{lock:?}");
    assert_eq!(lock.primary, primary.as_bytes(), "{lock:?}");
    assert_eq!(lock.start_ts, *start_ts, "{lock:?}");
    let secondary_shard = if secondary == from { shards[0] } else { shards[1] };
    assert_eq!(*shard, secondary_shard);

    let client = cluster.client().await?;
    let TxnState::Committed { commit_ts } = client.txn_status(*start_ts, primary).await? else {
        bail!("a transaction whose primary committed must read as committed");
    };
    assert!(commit_ts > *start_ts);
    let keys = [from.as_str(), to.as_str()];
    let after = vec![INITIAL - AMOUNT, INITIAL + AMOUNT];
    assert_eq!(
        balances(&client, &keys, ReadConsistency::At(commit_ts - 1)).await?,
        vec![INITIAL, INITIAL],
        "just below the commit timestamp"
    );
    assert_eq!(
        balances(&client, &keys, ReadConsistency::At(commit_ts)).await?,
        after,
        "at the commit timestamp"
    );
    let latest = balances(&client, &keys, ReadConsistency::Linearizable).await?;
    assert_eq!(latest, after, "the latest values");
    assert_eq!(latest.iter().sum::<i64>(), 2 * INITIAL, "money is conserved");
    let left = all_locks(cluster).await?;
    assert!(left.is_empty(), "locks left after the roll-forward: {left:?}");
    next_transfer_commits(&client, from, to, [INITIAL - AMOUNT, INITIAL + AMOUNT]).await
}

/// Accounts of the shard-move test.
const ACCOUNTS: usize = 16;
/// Each account's opening balance there.
const OPENING: i64 = 1_000;
/// Concurrent transfer clients.
const WORKERS: usize = 4;

fn account(index: usize) -> String {
    format!("bank/{index}")
}

/// How a transfer's commit ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Committed,
    Aborted,
    /// The commit may or may not have happened: its marker says.
    Unknown,
}

/// One transfer that reached its commit; its marker key is written in the same
/// transaction, so it exists exactly when the transfer committed.
#[derive(Debug)]
struct Transfer {
    marker: String,
    from: usize,
    to: usize,
    amount: i64,
    outcome: Outcome,
    /// Committed while shards were moving.
    during_move: bool,
}

/// What one transfer client did.
#[derive(Debug, Default)]
struct WorkerLog {
    transfers: Vec<Transfer>,
    /// Transactions that failed before their commit (a read failed): nothing sent.
    failed_reads: u64,
    /// Aborts by reason (`WRITE_CONFLICT`, ...).
    aborts: BTreeMap<String, usize>,
}

/// Transfers between random accounts, each with its marker, until `stop`.
async fn transfer_worker(
    client: Client,
    worker: usize,
    stop: Arc<AtomicBool>,
    moving: Arc<AtomicBool>,
    committed: Arc<AtomicUsize>,
) -> Result<WorkerLog> {
    let mut log = WorkerLog::default();
    let mut attempt = 0u64;
    while !stop.load(Ordering::Relaxed) {
        attempt += 1;
        let from = rand::random_range(0..ACCOUNTS);
        let to = (from + rand::random_range(1..ACCOUNTS)) % ACCOUNTS;
        let amount = rand::random_range(1..=10);
        let marker = format!("bank-marker/{worker}/{attempt}");
        let reads = async {
            let txn = client.begin(Isolation::RepeatableRead).await?;
            let debited = txn.get(account(from)).await?;
            let credited = txn.get(account(to)).await?;
            Ok::<_, Error>((txn, debited, credited))
        };
        let (mut txn, debited, credited) = match reads.await {
            Ok(read) => read,
            Err(_) => {
                // The client retried within its deadline before giving up: try the next
                // transfer at once.
                log.failed_reads += 1;
                continue;
            }
        };
        txn.put(account(from), (balance(debited)? - amount).to_string());
        txn.put(account(to), (balance(credited)? + amount).to_string());
        txn.put(&marker, format!("{from}->{to}:{amount}"));
        let outcome = match txn.commit().await {
            Ok(_) => Outcome::Committed,
            Err(Error::TxnAborted { reason, .. }) => {
                *log.aborts.entry(reason).or_default() += 1;
                Outcome::Aborted
            }
            Err(_) => Outcome::Unknown,
        };
        if outcome == Outcome::Committed {
            committed.fetch_add(1, Ordering::Relaxed);
        }
        log.transfers.push(Transfer {
            marker,
            from,
            to,
            amount,
            outcome,
            during_move: moving.load(Ordering::Relaxed),
        });
    }
    Ok(log)
}

/// Waits until every shard's voters are its placement and each of `running` hosts exactly
/// the shards placement gives it.
async fn wait_for_placement(cluster: &Cluster, client: &Client, running: &[u64]) -> Result<()> {
    wait_until("every shard settled on placement", REBALANCE_WAIT, || async {
        let status = client.rebalance_status().await.ok()?;
        (status.shards_settled == status.shards_total).then_some(())
    })
    .await?;
    wait_until(
        "every node to host exactly its placement",
        REBALANCE_WAIT,
        || async {
            let ring = cluster.ring(running[0]).await.ok()?;
            for &id in running {
                let mut want: Vec<u32> = ring.shards_of_node(id).into_iter().map(|shard| shard.0).collect();
                want.sort_unstable();
                if cluster.hosted_shards(id).await.ok()? != want {
                    return None;
                }
            }
            Some(())
        },
    )
    .await?;
    Ok(())
}

/// Waits until `committed` reaches `target`.
async fn wait_for_commits(committed: &AtomicUsize, target: usize, what: &str) -> Result<()> {
    wait_until(what, Duration::from_secs(60), || async {
        (committed.load(Ordering::Relaxed) >= target).then_some(())
    })
    .await?;
    Ok(())
}

/// Concurrent repeatable-read transfers (each with a marker key in the same transaction)
/// between accounts spread over 16 shards, while a 4th node joins and shards move to it,
/// then node 2 is decommissioned and its shards (and leaderships) move off it:
/// the total is conserved; every transfer reported committed has its marker, none reported
/// aborted has one, and the final balances are exactly the opening ones plus the transfers
/// whose markers exist (no commit lost, none half-applied); no lock is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_survive_shards_moving() -> Result<()> {
    let mut options = ClusterOptions {
        shards: 16,
        ..ClusterOptions::default()
    };
    options
        .node_args
        .extend(["--membership-interval-ms", "200", "--max-concurrent-moves", "4"].map(String::from));
    let mut cluster = Cluster::start(options).await?;
    let client = cluster.client().await?;
    let mut opening = client.begin(Isolation::RepeatableRead).await?;
    for index in 0..ACCOUNTS {
        opening.put(account(index), OPENING.to_string());
    }
    opening.commit().await?;

    let stop = Arc::new(AtomicBool::new(false));
    let moving = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..WORKERS)
        .map(|worker| {
            tokio::spawn(transfer_worker(
                client.clone(),
                worker,
                stop.clone(),
                moving.clone(),
                committed.clone(),
            ))
        })
        .collect();
    wait_for_commits(&committed, 20, "transfers to get going").await?;

    // Grow to 4 nodes, then decommission node 2: shards move onto a node, then off one
    // (with its leaderships).
    let addr = cluster.start_node(4).await?;
    moving.store(true, Ordering::Relaxed);
    let moves_began = Instant::now();
    assert!(client.add_node(4, &addr).await?.changed);
    wait_for_placement(&cluster, &client, &[1, 2, 3, 4]).await?;
    let joined = moves_began.elapsed();
    let hosted_by_new_node = cluster.hosted_shards(4).await?.len();
    assert!(hosted_by_new_node > 0, "shards moved to node 4");
    assert!(client.decommission_node(2).await?.changed);
    wait_for_placement(&cluster, &client, &[1, 3, 4]).await?;
    wait_until("node 2 to hold no replica", REBALANCE_WAIT, || async {
        cluster.hosted_shards(2).await.ok()?.is_empty().then_some(())
    })
    .await?;
    moving.store(false, Ordering::Relaxed);
    let moves_took = moves_began.elapsed();
    let settled_commits = committed.load(Ordering::Relaxed);
    wait_for_commits(&committed, settled_commits + 20, "transfers on the new placement").await?;
    stop.store(true, Ordering::Relaxed);
    let mut transfers = Vec::new();
    let mut failed_reads = 0;
    let mut aborts: BTreeMap<String, usize> = BTreeMap::new();
    for worker in workers {
        let log = worker.await.context("transfer worker")??;
        transfers.extend(log.transfers);
        failed_reads += log.failed_reads;
        for (reason, count) in log.aborts {
            *aborts.entry(reason).or_default() += count;
        }
    }

    // Every marker and balance, read after every transfer finished.
    let accounts: Vec<String> = (0..ACCOUNTS).map(account).collect();
    let finals: Vec<i64> = client
        .batch_get(&accounts)
        .await?
        .into_iter()
        .map(balance)
        .collect::<Result<_>>()?;
    let total: i64 = finals.iter().sum();
    assert_eq!(total, ACCOUNTS as i64 * OPENING, "money is conserved: {finals:?}");
    let mut expected: BTreeMap<usize, i64> = (0..ACCOUNTS).map(|index| (index, OPENING)).collect();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for chunk in transfers.chunks(500) {
        let markers = client
            .batch_get(chunk.iter().map(|transfer| transfer.marker.as_str()))
            .await?;
        for (transfer, marker) in chunk.iter().zip(markers) {
            let applied = marker.is_some();
            let kind = match (transfer.outcome, applied) {
                (Outcome::Committed, true) => "committed",
                (Outcome::Aborted, false) => "aborted",
                (Outcome::Unknown, true) => "unknown, committed",
                (Outcome::Unknown, false) => "unknown, not committed",
                (outcome, _) => {
                    bail!("transfer {transfer:?} reported {outcome:?}, marker present: {applied}")
                }
            };
            *counts.entry(kind).or_default() += 1;
            if applied {
                *expected.entry(transfer.from).or_default() -= transfer.amount;
                *expected.entry(transfer.to).or_default() += transfer.amount;
            }
        }
    }
    let expected: Vec<i64> = expected.into_values().collect();
    assert_eq!(
        finals, expected,
        "the balances are the opening ones plus the committed transfers"
    );
    let during_move = transfers
        .iter()
        .filter(|transfer| transfer.during_move && transfer.outcome == Outcome::Committed)
        .count();
    assert!(during_move > 0, "no transfer committed while shards moved");
    let left = all_locks(&cluster).await?;
    assert!(left.is_empty(), "locks left after the final reads: {left:?}");
    eprintln!(
        "shard moves: {hosted_by_new_node} replicas on node 4 after {:.1}s, node 2 empty after {:.1}s; \
         transfers {counts:?}, {during_move} committed during the moves, {failed_reads} failed before their commit; aborts {aborts:?}",
        joined.as_secs_f64(),
        moves_took.as_secs_f64()
    );
    Ok(())
}
