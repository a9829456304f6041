//! Client workloads: each client is a process in the history; every operation is recorded
//! as an invoke and a completion (`ok`, `fail` when it certainly did not happen, `info`
//! when its outcome is unknown).
//!
//! The snapshot workload writes "chains": a writer process writes its chain one write at a
//! time, write `n` (from 1) storing the value `n` in the chain's key `n % CHAIN_KEYS`; readers
//! read all keys of a chain as of one timestamp of the oracle. A write of unknown outcome may
//! still take effect later, so it ends its chain and the writer starts a new one (see
//! [`crate::checker::snapshot`] for what a read must see).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringkv_client::{CasOutcome, Client, Error, ReadConsistency};
use ringkv_proto::v1;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::history::{Op, OpType, OpValue, Process, Recorder, F};

/// The workloads the harness runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Reads, writes and compare-and-swaps on a few registers; checked for linearizability.
    Register,
    /// Unique adds and a final read; checked for lost and duplicated acknowledged adds.
    Set,
    /// Timestamps of the timestamp oracle; checked to be unique and in real-time order.
    Timestamp,
    /// Chains of sequential writes across shards, read as of timestamps of the oracle; each
    /// read checked to be a consistent prefix of its chain, in real-time order. Even processes
    /// write, odd ones read.
    Snapshot,
    /// Transactions of reads and appends over a few lists (Elle's list-append), at the run's
    /// isolation level; checked for the anomalies that level forbids (`checker::elle`).
    Append,
    /// Transfers between a few accounts and reads of all of them (Jepsen's bank), at the
    /// run's isolation level; every snapshot read must sum to the total (`checker::bank`).
    Bank,
    /// Transactions of reads and writes over a few registers (Elle's rw-register), at the
    /// run's isolation level; checked for the anomalies that level forbids
    /// (`checker::elle::rw_register`).
    RwRegister,
    /// Batches writing one value to every key of a small group (or deleting them all),
    /// groups on one shard or two, and reads of whole groups; checked atomic per shard
    /// (`checker::batch`).
    Batch,
    /// Paged scans with small page limits over keys put and deleted concurrently; checked
    /// in order, without duplicates, invented or skipped keys (`checker::scan`).
    Scan,
    /// Ranges filled, scanned and deleted with delete-range, replayed after failures;
    /// nothing written before an acknowledged delete-range may be read after it
    /// (`checker::delete_range`).
    DeleteRange,
    /// Writers put and delete a few keys while watchers watch their prefix, resuming from
    /// their last position after every break; every acknowledged write must be delivered
    /// exactly once, per key in commit order (`checker::watch`).
    Watch,
    /// Puts with times to live, expires and persists, read linearizably and at timestamps;
    /// no value may be read past its expiry or come back after it expired (`checker::ttl`).
    Ttl,
    /// Clients take turns holding a few locks on 1 s leases (some pausing past their TTL)
    /// and write to a resource that refuses lower fencing tokens; accepted writes must be
    /// in token order (`checker::lock`), overlapping holders are reported.
    Lock,
}

impl Workload {
    /// Every workload, as `--workload all` runs them.
    pub fn all() -> Vec<Workload> {
        use clap::ValueEnum;
        Workload::value_variants().to_vec()
    }

    /// The name `--workload` takes.
    pub fn name(self) -> String {
        use clap::ValueEnum;
        self.to_possible_value()
            .map_or_else(|| format!("{self:?}"), |value| value.get_name().to_string())
    }
}

/// Where register reads go.
#[derive(Debug, Clone)]
pub struct DirectReads {
    /// Node addresses (kept current by the cluster as nodes come and go); a fraction of
    /// reads goes straight to a random node (asking for a linearizable read), which only a
    /// correct node refuses when it is not the leader.
    pub node_addrs: Arc<std::sync::RwLock<Vec<String>>>,
    pub ring: ringkv_ring::Ring,
    /// The harness's client certificate when the cluster speaks TLS.
    pub tls: Option<ringkv_client::ClientTls>,
}

/// Shared state of the register workload.
pub struct RegisterShared {
    pub keys: u64,
    /// Values are padded to this many bytes (0: just the number).
    value_bytes: usize,
    next_value: AtomicU64,
    pub direct: Option<DirectReads>,
}

impl RegisterShared {
    pub fn new(keys: u64, value_bytes: usize, direct: Option<DirectReads>) -> Arc<RegisterShared> {
        Arc::new(RegisterShared {
            keys,
            value_bytes,
            next_value: AtomicU64::new(1),
            direct,
        })
    }
}

/// Shared state of the set workload: every value ever attempted.
#[derive(Default)]
pub struct SetShared {
    next_value: AtomicU64,
    pub attempted: Mutex<Vec<u64>>,
}

/// Keys per chain of the snapshot workload: write `n` of a chain goes to key `n % CHAIN_KEYS`.
pub const CHAIN_KEYS: u64 = 4;

/// Most snapshot reads (three in four) go to one of this many newest chains, which are the
/// ones writers are still extending; the rest go to any chain started so far.
const RECENT_CHAINS: u64 = 8;

/// Shared state of the snapshot workload: how many chains have started. Chain ids are
/// `0..started`, handed out in order; readers wait on it for the first chain.
pub struct SnapshotShared {
    started: tokio::sync::watch::Sender<u64>,
    /// Chain writes acknowledged so far (readers re-read a snapshot once writes went on).
    acked: tokio::sync::watch::Sender<u64>,
}

impl Default for SnapshotShared {
    fn default() -> Self {
        SnapshotShared {
            started: tokio::sync::watch::Sender::new(0),
            acked: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl SnapshotShared {
    /// Starts a new chain and returns its id.
    fn start_chain(&self) -> u64 {
        let mut chain = 0;
        self.started.send_modify(|started| {
            chain = *started;
            *started += 1;
        });
        chain
    }
}

pub fn register_key(key: u64) -> Vec<u8> {
    format!("jepsen/register/{key}").into_bytes()
}

pub fn set_key(value: u64) -> Vec<u8> {
    format!("jepsen/set/{value:012}").into_bytes()
}

/// Key `j` (`0..CHAIN_KEYS`) of snapshot chain `chain`.
pub fn chain_key(chain: u64, j: u64) -> Vec<u8> {
    format!("jepsen/snapshot/{chain}/{j}").into_bytes()
}

/// Whether an error proves the operation did not take effect.
pub(crate) fn is_definite(err: &Error) -> bool {
    !matches!(
        err,
        Error::OutcomeUnknown(_) | Error::DeadlineExceeded(_) | Error::Transport(_)
    )
}

pub(crate) fn completion_for(err: &Error) -> OpType {
    if is_definite(err) {
        OpType::Fail
    } else {
        OpType::Info
    }
}

/// A register value as stored: the number, then (when padded) a space and dots up to
/// `value_bytes`.
pub(crate) fn encode_value(value: u64, value_bytes: usize) -> Vec<u8> {
    let mut bytes = value.to_string().into_bytes();
    if bytes.len() < value_bytes {
        bytes.push(b' ');
        bytes.resize(value_bytes, b'.');
    }
    bytes
}

/// A register (or chain) value read back; something unparsable is recorded as a value
/// nobody wrote.
pub(crate) fn parse_value(bytes: &[u8]) -> u64 {
    let number = bytes.split(|&b| b == b' ').next().unwrap_or_default();
    std::str::from_utf8(number)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(u64::MAX)
}

async fn direct_read(direct: &DirectReads, key: u64, rng: &mut StdRng) -> Result<Option<u64>, String> {
    let addr = {
        let addrs = direct
            .node_addrs
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if addrs.is_empty() {
            return Err("no node address known".to_string());
        }
        addrs[rng.random_range(0..addrs.len())].clone()
    };
    let key_bytes = register_key(key);
    let shard = direct.ring.shard_for_key(&key_bytes).0;
    let channel = crate::cluster::connect(
        &addr,
        direct.tls.as_ref(),
        Duration::from_millis(500),
        Duration::from_secs(1),
    )
    .await
    .map_err(|err| format!("{err:#}"))?;
    let response = v1::shard_kv_client::ShardKvClient::new(channel)
        .read(v1::ShardReadRequest {
            shard_id: shard,
            keys: vec![key_bytes],
            consistency: v1::Consistency::Linearizable as i32,
            read_ts: 0,
            read_uncommitted: false,
            max_bytes: 0,
        })
        .await
        .map_err(|status| status.message().to_string())?
        .into_inner();
    let result = response.results.into_iter().next().ok_or("empty response")?;
    Ok(result.found.then(|| parse_value(&result.value)))
}

/// One register client process.
pub async fn register_client(
    process: u64,
    client: Client,
    shared: Arc<RegisterShared>,
    recorder: Recorder,
    seed: u64,
    stop: CancellationToken,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut last_seen: Vec<Option<u64>> = vec![None; shared.keys as usize];
    while !stop.is_cancelled() {
        let key = rng.random_range(0..shared.keys);
        let key_bytes = register_key(key);
        let roll: f64 = rng.random();
        if roll < 0.1 {
            // A read of any replica: it may be old, never invented (`checker::stale`).
            let op = recorder.invoke(
                Process::Client(process),
                F::StaleRead,
                OpValue::Register { key, value: None },
            );
            match client.get_with(&key_bytes, ReadConsistency::Stale).await {
                Ok(found) => {
                    let value = found.map(|versioned| parse_value(&versioned.value));
                    let _ = recorder.complete(&op, OpType::Ok, OpValue::Register { key, value }, None);
                }
                Err(err) => complete_err(&recorder, &op, OpType::Fail, err.to_string()),
            }
        } else if roll < 0.45 {
            let direct = shared.direct.as_ref().filter(|_| rng.random_bool(0.3));
            let op = recorder.invoke(
                Process::Client(process),
                F::Read,
                OpValue::Register { key, value: None },
            );
            let result = match direct {
                Some(direct) => direct_read(direct, key, &mut rng).await,
                None => match client.get(&key_bytes).await {
                    Ok(found) => Ok(found.map(|versioned| parse_value(&versioned.value))),
                    Err(err) => Err(err.to_string()),
                },
            };
            match result {
                Ok(value) => {
                    last_seen[key as usize] = value;
                    let _ = recorder.complete(&op, OpType::Ok, OpValue::Register { key, value }, None);
                }
                // A failed read changed nothing.
                Err(err) => complete_err(&recorder, &op, OpType::Fail, err),
            }
        } else if roll < 0.8 {
            let value = shared.next_value.fetch_add(1, Ordering::Relaxed);
            let op = recorder.invoke(
                Process::Client(process),
                F::Write,
                OpValue::Register {
                    key,
                    value: Some(value),
                },
            );
            match client
                .put(&key_bytes, encode_value(value, shared.value_bytes))
                .await
            {
                Ok(_) => complete_ok(&recorder, &op),
                Err(err) => complete_err(&recorder, &op, completion_for(&err), err.to_string()),
            }
        } else {
            let Some(from) = last_seen[key as usize] else {
                continue;
            };
            let to = shared.next_value.fetch_add(1, Ordering::Relaxed);
            let op = recorder.invoke(Process::Client(process), F::Cas, OpValue::Cas { key, from, to });
            let to_bytes = encode_value(to, shared.value_bytes);
            cas(&client, &recorder, &op, &key_bytes, from, to_bytes).await;
        }
    }
}

/// cas(from, to): read the version, then compare-and-swap on it. Values are unique, so the
/// version still matching at the swap means the value was still `from` then.
async fn cas(client: &Client, recorder: &Recorder, op: &Op, key: &[u8], from: u64, to: Vec<u8>) {
    let current = match client.get(key).await {
        Ok(current) => current,
        Err(err) => return complete_err(recorder, op, OpType::Fail, err.to_string()),
    };
    let Some(current) = current.filter(|versioned| parse_value(&versioned.value) == from) else {
        return complete_err(recorder, op, OpType::Fail, "value is not `from`".to_string());
    };
    match client.compare_and_swap(key, current.version, Some(to)).await {
        Ok(CasOutcome::Swapped { .. }) => complete_ok(recorder, op),
        Ok(CasOutcome::Mismatch { .. }) => {
            complete_err(recorder, op, OpType::Fail, "version changed".to_string())
        }
        Err(err) => complete_err(recorder, op, completion_for(&err), err.to_string()),
    }
}

pub(crate) fn complete_err(recorder: &Recorder, op: &Op, op_type: OpType, error: String) {
    let _ = recorder.complete(op, op_type, op.value.clone(), Some(error));
}

pub(crate) fn complete_ok(recorder: &Recorder, op: &Op) {
    let _ = recorder.complete(op, OpType::Ok, op.value.clone(), None);
}

/// One set client process: adds unique values.
pub async fn set_client(
    process: u64,
    client: Client,
    shared: Arc<SetShared>,
    recorder: Recorder,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        let value = shared.next_value.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut attempted) = shared.attempted.lock() {
            attempted.push(value);
        }
        let op = recorder.invoke(Process::Client(process), F::Add, OpValue::Add(value));
        match client.put(set_key(value), Vec::new()).await {
            Ok(_) => complete_ok(&recorder, &op),
            Err(err) => complete_err(&recorder, &op, completion_for(&err), err.to_string()),
        }
    }
}

/// One timestamp client process: takes timestamps one after another.
pub async fn timestamp_client(process: u64, client: Client, recorder: Recorder, stop: CancellationToken) {
    while !stop.is_cancelled() {
        let op = recorder.invoke(Process::Client(process), F::Timestamp, OpValue::Timestamp(None));
        match client.timestamp().await {
            Ok(timestamp) => {
                let _ = recorder.complete(&op, OpType::Ok, OpValue::Timestamp(Some(timestamp)), None);
            }
            Err(err) => complete_err(&recorder, &op, completion_for(&err), err.to_string()),
        }
    }
}

/// One snapshot writer process: writes its chain one write at a time, starting a new chain
/// after a write of unknown outcome.
pub async fn snapshot_writer(
    process: u64,
    client: Client,
    shared: Arc<SnapshotShared>,
    recorder: Recorder,
    stop: CancellationToken,
) {
    let mut chain = shared.start_chain();
    let mut n = 1u64;
    while !stop.is_cancelled() {
        let op = recorder.invoke(
            Process::Client(process),
            F::ChainWrite,
            OpValue::ChainWrite { chain, n },
        );
        match client
            .put(chain_key(chain, n % CHAIN_KEYS), n.to_string().into_bytes())
            .await
        {
            Ok(_) => {
                complete_ok(&recorder, &op);
                shared.acked.send_modify(|acked| *acked += 1);
                n += 1;
            }
            Err(err) => {
                let outcome = completion_for(&err);
                complete_err(&recorder, &op, outcome, err.to_string());
                if outcome == OpType::Fail {
                    // It certainly did not happen: the chain goes on without it.
                    n += 1;
                } else {
                    // It may still happen, after any later write: the chain ends here.
                    chain = shared.start_chain();
                    n = 1;
                }
            }
        }
    }
}

/// One snapshot reader process: reads every key of a chain as of a fresh timestamp of the
/// oracle, mostly one of the newest chains, and reads it again after a while; now and then it
/// reads again a snapshot it read seconds ago (at least 2 s). Waits for the first
/// chain to start.
pub async fn snapshot_reader(
    process: u64,
    client: Client,
    shared: Arc<SnapshotShared>,
    recorder: Recorder,
    seed: u64,
    stop: CancellationToken,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut started = shared.started.subscribe();
    tokio::select! {
        () = stop.cancelled() => return,
        first = started.wait_for(|started| *started > 0) => {
            // The sender lives in `shared`, which this process holds: it cannot be dropped.
            if first.is_err() {
                return;
            }
        }
    }
    // Snapshots this reader read first, at least OLD_SNAPSHOT_SPACING apart (oldest first).
    let mut remembered: VecDeque<(u64, u64, Instant)> = VecDeque::with_capacity(OLD_SNAPSHOTS_KEPT);
    while !stop.is_cancelled() {
        // Now and then a snapshot seconds old, read again: a replica that restarted or
        // installed a snapshot since must still serve it as it was, or refuse it as too old
        // (never answer "absent" for keys written since).
        let old = remembered
            .iter()
            .filter(|(_, _, read_at)| read_at.elapsed() >= OLD_SNAPSHOT_AGE)
            .count();
        if old > 0 && rng.random_bool(0.2) {
            let (chain, ts, _) = remembered[rng.random_range(0..old)];
            read_again(process, &client, &recorder, chain, ts).await;
            continue;
        }
        let chains = *started.borrow();
        let chain = if rng.random_bool(0.75) {
            rng.random_range(chains.saturating_sub(RECENT_CHAINS)..chains)
        } else {
            rng.random_range(0..chains)
        };
        // Half the reads take their timestamp themselves; the others take it first, let the
        // writers go on, then read: writes begun after the timestamp was returned must not
        // be in the snapshot.
        let ts = if rng.random_bool(0.5) {
            let op = recorder.invoke(
                Process::Client(process),
                F::SnapshotRead,
                OpValue::SnapshotRead {
                    chain,
                    ts: None,
                    values: None,
                },
            );
            let first = match client.timestamp().await {
                Ok(ts) => read_chain_at(&client, chain, ts).await.map(|values| (ts, values)),
                Err(err) => Err(err.to_string()),
            };
            match first {
                Ok((ts, values)) => {
                    let value = OpValue::SnapshotRead {
                        chain,
                        ts: Some(ts),
                        values: Some(values),
                    };
                    let _ = recorder.complete(&op, OpType::Ok, value, None);
                    let spaced = remembered
                        .back()
                        .is_none_or(|(_, _, read_at)| read_at.elapsed() >= OLD_SNAPSHOT_SPACING);
                    if spaced {
                        if remembered.len() == OLD_SNAPSHOTS_KEPT {
                            remembered.pop_front();
                        }
                        remembered.push_back((chain, ts, Instant::now()));
                    }
                    ts
                }
                // A failed read changed nothing.
                Err(err) => {
                    complete_err(&recorder, &op, OpType::Fail, err);
                    continue;
                }
            }
        } else {
            let op = recorder.invoke(Process::Client(process), F::Timestamp, OpValue::Timestamp(None));
            match client.timestamp().await {
                Ok(ts) => {
                    let _ = recorder.complete(&op, OpType::Ok, OpValue::Timestamp(Some(ts)), None);
                    ts
                }
                Err(err) => {
                    complete_err(&recorder, &op, completion_for(&err), err.to_string());
                    continue;
                }
            }
        };
        // Read the snapshot (again) once writes went on, or a while passed: it must not have
        // changed, and must not hold writes begun after the timestamp was returned.
        let mut acked = shared.acked.subscribe();
        let before = *acked.borrow_and_update();
        let _ = tokio::time::timeout(REREAD_AFTER, acked.wait_for(|acked| *acked >= before + 2)).await;
        if stop.is_cancelled() {
            break;
        }
        read_again(process, &client, &recorder, chain, ts).await;
    }
}

/// Reads `chain` as of `ts`, a timestamp taken earlier (the checker compares it with the
/// first read at `ts`, if any).
async fn read_again(process: u64, client: &Client, recorder: &Recorder, chain: u64, ts: u64) {
    let op = recorder.invoke(
        Process::Client(process),
        F::SnapshotRead,
        OpValue::SnapshotRead {
            chain,
            ts: Some(ts),
            values: None,
        },
    );
    match read_chain_at(client, chain, ts).await {
        Ok(values) => {
            let value = OpValue::SnapshotRead {
                chain,
                ts: Some(ts),
                values: Some(values),
            };
            let _ = recorder.complete(&op, OpType::Ok, value, None);
        }
        // Too old (below a replica's history floor) among others: changed nothing.
        Err(err) => complete_err(recorder, &op, OpType::Fail, err),
    }
}

/// Longest a reader waits for two more chain writes before it reads a snapshot again.
const REREAD_AFTER: Duration = Duration::from_millis(500);
/// Snapshots a reader remembers to read again later, and how far apart they are taken: some
/// seconds of them, within the nodes' default multi-version window (10 s).
const OLD_SNAPSHOTS_KEPT: usize = 16;
const OLD_SNAPSHOT_SPACING: Duration = Duration::from_millis(500);
/// How old a snapshot is before it is read again as an old one.
const OLD_SNAPSHOT_AGE: Duration = Duration::from_secs(2);

/// Reads every key of `chain` as of `ts`.
async fn read_chain_at(client: &Client, chain: u64, ts: u64) -> Result<Vec<Option<u64>>, String> {
    let keys = (0..CHAIN_KEYS).map(|j| chain_key(chain, j));
    let found = client
        .batch_get_with(keys, ReadConsistency::At(ts))
        .await
        .map_err(|err| err.to_string())?;
    if found.len() as u64 != CHAIN_KEYS {
        return Err(format!("{} results for {CHAIN_KEYS} keys", found.len()));
    }
    let values = found
        .iter()
        .map(|versioned| versioned.as_ref().map(|versioned| parse_value(&versioned.value)))
        .collect();
    Ok(values)
}

/// The final read of the set: which attempted values are present.
pub async fn set_final_read(process: u64, client: &Client, shared: &SetShared, recorder: &Recorder) -> bool {
    let attempted: Vec<u64> = shared.attempted.lock().map(|a| a.clone()).unwrap_or_default();
    let op = recorder.invoke(Process::Client(process), F::ReadAll, OpValue::ReadAll(None));
    let mut present = Vec::new();
    for chunk in attempted.chunks(500) {
        let keys: Vec<Vec<u8>> = chunk.iter().map(|value| set_key(*value)).collect();
        match client.batch_get(keys).await {
            Ok(found) => {
                for (value, got) in chunk.iter().zip(found) {
                    if got.is_some() {
                        present.push(*value);
                    }
                }
            }
            Err(err) => {
                complete_err(recorder, &op, OpType::Fail, err.to_string());
                return false;
            }
        }
    }
    let _ = recorder.complete(&op, OpType::Ok, OpValue::ReadAll(Some(present)), None);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Padded values read back as the number written; short or unpadded ones too.
    #[test]
    fn padded_register_values_round_trip() {
        for value_bytes in [0, 1, 4096] {
            let encoded = encode_value(1234, value_bytes);
            assert_eq!(encoded.len(), value_bytes.max(4));
            assert_eq!(parse_value(&encoded), 1234);
        }
        assert_eq!(parse_value(b"x 1"), u64::MAX, "garbage is a value nobody wrote");
    }
}
