//! The lock workload: clients take turns holding a few locks with short leases and, while
//! holding one, write to a resource that checks fencing tokens; checked by
//! [`crate::checker::lock`] (README "Leases, locks and elections": a lock does not promise
//! mutual exclusion under pauses; the fencing token is what keeps a resource safe).
//!
//! Each of [`LOCKS`] locks `jepsen/lock/<l>` guards one resource, the key
//! `jepsen/lock-resource/<l>`, holding `<seq> <token>`: how many writes it accepted and the
//! highest token among them. A guarded write reads it and, when its token is at least the
//! resource's, compare-and-sets it to `<seq + 1> <token>`; a lower token is refused (the
//! resource's check, done atomically by the compare-and-set on the version read). Every
//! write records the `(seq, token)` it read and the `seq` it wrote, so the checker can put
//! the accepted writes in the order they took effect.
//!
//! A client grants a lease of [`LEASE_TTL`], keeps it alive, acquires a lock, makes one to
//! three guarded writes and releases it. One acquisition in [`PAUSE_ONE_IN`] plays a
//! process pause (the GC pause or SIGSTOP of Jepsen's etcd analysis): the client stops
//! its keep-alive, sleeps [`HOLDER_PAUSE`] (twice the TTL, so its lease lapses and another
//! client takes the lock), then writes as if it still held the lock — a stale holder the
//! resource must refuse once the new holder wrote. The nemeses pause and skew nodes too:
//! a keep-alive that cannot reach the cluster in time also leaves a holder stale.
//!
//! `unfenced` (`--unsafe-unfenced-resource`) is the negative control: the resource
//! accepts every token, so a stale holder's write lands after the new holder's and the
//! checker must find the tokens going back.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringkv_client::{CasOutcome, Client, Versioned};
use tokio_util::sync::CancellationToken;

use crate::history::{OpType, OpValue, Process, Recorder, F};
use crate::workload::{complete_err, completion_for};

/// Locks in the run (every client contends for all of them).
pub const LOCKS: u64 = 2;

/// The TTL of each holder's lease: the shortest a lease takes, so that a lapsed holder is
/// replaced quickly.
pub const LEASE_TTL: Duration = Duration::from_secs(1);

/// How long a pausing holder sleeps with its keep-alive stopped: past its lease's TTL.
pub const HOLDER_PAUSE: Duration = Duration::from_secs(2);

/// One acquisition in this many plays a process pause.
pub const PAUSE_ONE_IN: u32 = 4;

/// Longest an acquisition may wait for the lock (others hold it, the cluster is faulted);
/// past it the acquisition is recorded as of unknown outcome and its lease revoked.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause before granting a lease again after a grant failed (bounded pacing: a faulted
/// cluster is not hammered; a failed grant is not an operation of the model).
const LEASE_GRANT_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Most guarded writes per holding.
const MAX_WRITES_PER_HOLDING: u32 = 3;

/// Times a guarded write reads the resource again after losing a compare-and-set race.
const MAX_RESOURCE_RACES: usize = 8;

/// The lock's key.
pub fn lock_key(lock: u64) -> Vec<u8> {
    format!("jepsen/lock/{lock}").into_bytes()
}

/// The key of the resource lock `lock` guards.
pub fn resource_key(lock: u64) -> Vec<u8> {
    format!("jepsen/lock-resource/{lock}").into_bytes()
}

/// The resource's `(seq, token)` as stored; `(0, 0)` for one never written.
fn parse_resource(value: &Versioned) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(&value.value).ok()?;
    let (seq, token) = text.split_once(' ')?;
    Some((seq.parse().ok()?, token.parse().ok()?))
}

fn encode_resource(seq: u64, token: u64) -> Vec<u8> {
    format!("{seq} {token}").into_bytes()
}

/// How a guarded write ended.
struct WriteOutcome {
    op_type: OpType,
    seq: Option<u64>,
    seen: Option<(u64, u64)>,
    error: Option<String>,
}

/// One guarded write of `token` to lock `lock`'s resource (see the module docs).
async fn guarded_write(client: &Client, lock: u64, token: u64, unfenced: bool) -> WriteOutcome {
    let key = resource_key(lock);
    let failed = |op_type, seen, error: String| WriteOutcome {
        op_type,
        seq: None,
        seen,
        error: Some(error),
    };
    // A failed read changed nothing.
    let mut current = match client.get(&key).await {
        Ok(current) => current,
        Err(err) => return failed(OpType::Fail, None, err.to_string()),
    };
    for _ in 0..MAX_RESOURCE_RACES {
        let (version, seen) = match &current {
            None => (0, (0, 0)),
            Some(stored) => match parse_resource(stored) {
                Some(seen) => (stored.version, seen),
                None => return failed(OpType::Fail, None, "the resource holds garbage".to_string()),
            },
        };
        if !unfenced && token < seen.1 {
            return failed(
                OpType::Fail,
                Some(seen),
                format!("refused: the resource saw token {}", seen.1),
            );
        }
        let seq = seen.0 + 1;
        match client
            .compare_and_swap(&key, version, Some(encode_resource(seq, token)))
            .await
        {
            Ok(CasOutcome::Swapped { .. }) => {
                return WriteOutcome {
                    op_type: OpType::Ok,
                    seq: Some(seq),
                    seen: Some(seen),
                    error: None,
                }
            }
            Ok(CasOutcome::Mismatch { current: now }) => current = now,
            Err(err) => {
                return WriteOutcome {
                    op_type: completion_for(&err),
                    seq: Some(seq),
                    seen: Some(seen),
                    error: Some(err.to_string()),
                }
            }
        }
    }
    failed(OpType::Fail, None, "the resource kept changing".to_string())
}

/// Records a guarded write of `token` to `lock`'s resource.
async fn record_guarded_write(
    process: u64,
    client: &Client,
    recorder: &Recorder,
    lock: u64,
    token: u64,
    unfenced: bool,
) {
    let value = |seq, seen| OpValue::GuardedWrite {
        lock,
        token,
        seq,
        seen,
    };
    let op = recorder.invoke(Process::Client(process), F::GuardedWrite, value(None, None));
    let outcome = guarded_write(client, lock, token, unfenced).await;
    let _ = recorder.complete(
        &op,
        outcome.op_type,
        value(outcome.seq, outcome.seen),
        outcome.error,
    );
}

/// Acquires `lock` with `lease`, recorded; the token when it is held.
async fn record_acquire(
    process: u64,
    client: &Client,
    recorder: &Recorder,
    lock: u64,
    lease: ringkv_client::LeaseId,
    stop: &CancellationToken,
) -> Option<u64> {
    let op = recorder.invoke(
        Process::Client(process),
        F::LockAcquire,
        OpValue::Lock { lock, token: None },
    );
    let acquired = tokio::select! {
        () = stop.cancelled() => {
            complete_err(recorder, &op, OpType::Info, "stopped while waiting".to_string());
            return None;
        }
        acquired = tokio::time::timeout(ACQUIRE_TIMEOUT, client.lock(lock_key(lock), lease)) => acquired,
    };
    match acquired {
        Ok(Ok(held)) => {
            let token = Some(held.fencing_token);
            let _ = recorder.complete(&op, OpType::Ok, OpValue::Lock { lock, token }, None);
            token
        }
        Ok(Err(err)) => {
            complete_err(recorder, &op, completion_for(&err), err.to_string());
            None
        }
        Err(_) => {
            complete_err(
                recorder,
                &op,
                OpType::Info,
                format!("not acquired within {ACQUIRE_TIMEOUT:?}"),
            );
            None
        }
    }
}

/// One lock client process (see the module docs).
pub async fn lock_client(
    process: u64,
    client: Client,
    unfenced: bool,
    recorder: Recorder,
    seed: u64,
    stop: CancellationToken,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    while !stop.is_cancelled() {
        let lock = rng.random_range(0..LOCKS);
        let lease = match client.lease_grant(LEASE_TTL).await {
            Ok(lease) => lease,
            Err(_) => {
                tokio::time::sleep(LEASE_GRANT_RETRY_PAUSE).await;
                continue;
            }
        };
        let keeper = client.keep_lease_alive(lease);
        let Some(token) = record_acquire(process, &client, &recorder, lock, lease.id, &stop).await else {
            keeper.shutdown().await;
            // Frees a lock whose acquisition may have landed; when the revoke fails the
            // lease (and the lock) expires after its TTL anyway.
            let _ = client.lease_revoke(lease.id).await;
            continue;
        };
        let pause = rng.random_ratio(1, PAUSE_ONE_IN);
        let writes = rng.random_range(1..=MAX_WRITES_PER_HOLDING);
        for _ in 0..writes {
            record_guarded_write(process, &client, &recorder, lock, token, unfenced).await;
        }
        let keeper = if pause {
            // The process stops, its keep-alive with it; its lease lapses meanwhile.
            keeper.shutdown().await;
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(HOLDER_PAUSE) => {}
            }
            record_guarded_write(process, &client, &recorder, lock, token, unfenced).await;
            None
        } else {
            Some(keeper)
        };
        let held = ringkv_client::Held {
            key: lock_key(lock),
            lease: lease.id,
            fencing_token: token,
            proposal: Vec::new(),
        };
        let op = recorder.invoke(
            Process::Client(process),
            F::LockRelease,
            OpValue::Lock {
                lock,
                token: Some(token),
            },
        );
        match client.unlock(&held).await {
            Ok(true) => crate::workload::complete_ok(&recorder, &op),
            Ok(false) => complete_err(&recorder, &op, OpType::Fail, "no longer held".to_string()),
            Err(err) => complete_err(&recorder, &op, completion_for(&err), err.to_string()),
        }
        if let Some(keeper) = keeper {
            keeper.shutdown().await;
        }
        // The lease is of no more use (it expires after its TTL when the revoke fails).
        let _ = client.lease_revoke(lease.id).await;
    }
}
