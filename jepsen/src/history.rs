//! Jepsen-style histories: every client operation is recorded twice, once when it is invoked
//! and once when it completes (`ok`, `fail` or `info`), and nemesis faults are recorded as
//! single `info` operations.
//!
//! - [`Op`] is one event of a history; [`History`] is the ordered list of events.
//! - [`Recorder`] is the thread-safe, cheaply cloneable handle workers record through. It
//!   assigns dense indexes in recording order and times in nanoseconds since its start.
//! - [`History::pairs`] matches each invocation with its completion (per process, at most one
//!   outstanding operation), which is what the checkers consume.
//!
//! Outcome vocabulary (as in Jepsen): `ok` means the operation took effect exactly once
//! between its invocation and its completion; `fail` means it certainly did not take effect;
//! `info` means the outcome is unknown (for example a timeout): it may take effect at any time
//! after its invocation, or never. An invocation with no completion at the end of the history
//! is treated as `info`.
//!
//! JSON form ([`History::to_json`], [`History::from_json`]): JSON Lines, one serde-encoded
//! [`Op`] object per line, in index order, each line ending with `\n`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Who performed an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Process {
    /// A client worker; a process performs at most one operation at a time.
    Client(u64),
    /// The fault injector.
    Nemesis,
}

/// What kind of event an [`Op`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpType {
    /// The operation was sent.
    Invoke,
    /// The operation took effect (exactly once, between invocation and completion).
    Ok,
    /// The operation certainly did not take effect.
    Fail,
    /// The outcome is unknown: it may take effect at any time after the invocation, or never.
    Info,
}

/// The function an operation performs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum F {
    /// Register read of one key.
    Read,
    /// Register write of one key.
    Write,
    /// Register compare-and-set of one key.
    Cas,
    /// Set workload: add one unique element.
    Add,
    /// Set workload: read the whole set (the final read, after the faults are healed).
    ReadAll,
    /// Timestamp workload: take one timestamp of the cluster's timestamp oracle.
    Timestamp,
    /// Snapshot workload: write number `n` of a chain (value `n` to the chain's key `n % 4`).
    ChainWrite,
    /// Snapshot workload: read all keys of a chain as of one timestamp of the oracle.
    SnapshotRead,
    /// A nemesis action, named as in Jepsen (`"kill"`, `"partition-start"`, ...).
    Nemesis(String),
    /// List-append workload: one transaction of [`MicroOp`]s (Elle's `:txn`).
    Txn,
    /// Bank workload: one transaction moving an amount from one account to another.
    Transfer,
    /// Bank workload: one transaction reading every account's balance.
    BankRead,
    /// Rw-register workload: one transaction of [`RwMicroOp`]s (Elle's rw-register
    /// transaction; EDN `:f :rw-txn`, so that it is never taken for a list-append one).
    RwTxn,
    /// Register workload: a read of any replica (`ReadConsistency::Stale`), which may be
    /// old but must return a value some write wrote ([`OpValue::Register`]).
    StaleRead,
    /// Batch workload: one batch writing the same value to every key of a group, or
    /// deleting every key of it ([`OpValue::Register`]: the group and the value, `nil` for
    /// the deletes).
    BatchWrite,
    /// Batch workload: every key of a group read together ([`OpValue::GroupRead`]).
    BatchRead,
    /// Scan workload: a put (or, with `nil`, a delete) of one scan key
    /// ([`OpValue::Register`]).
    ScanWrite,
    /// Scan workload: every page of a scan of the workload's keys ([`OpValue::Scan`]).
    Scan,
    /// Delete-range workload: one batch writing a fresh value to every key of a range
    /// ([`OpValue::RangeFill`]).
    RangeFill,
    /// Delete-range workload: a delete-range of one range ([`OpValue::Range`]).
    DeleteRange,
    /// Delete-range workload: every page of a scan of one range ([`OpValue::Scan`]).
    RangeRead,
    /// Lock workload: acquire a lock ([`OpValue::Lock`]; the fencing token in an `ok`
    /// completion).
    LockAcquire,
    /// Lock workload: a write to the lock's resource guarded by a fencing token
    /// ([`OpValue::GuardedWrite`]); `fail` with `refused` when the resource had seen a
    /// higher token.
    GuardedWrite,
    /// Lock workload: release a lock held with a token ([`OpValue::Lock`]); `fail` when the
    /// holder's lease had lapsed and it no longer held it.
    LockRelease,
    /// Watch workload: a put of a unique value to one watched key ([`OpValue::KeyWrite`]:
    /// the version assigned as its result).
    WatchPut,
    /// Watch workload: a delete of one watched key ([`OpValue::KeyWrite`] without a value:
    /// whether a value existed as its result).
    WatchDelete,
    /// Watch workload: one watch stream of a watcher, from where its last one got to
    /// ([`OpValue::Watch`]).
    Watch,
    /// TTL workload: a put with a time to live (or none) of one key ([`OpValue::TtlWrite`]).
    TtlPut,
    /// TTL workload: `expire` (a time to live) or `persist` (time to live 0) of one key
    /// ([`OpValue::TtlWrite`] without a value).
    TtlExpire,
    /// TTL workload: a linearizable get of one key, after a timestamp of the oracle taken
    /// once the op was invoked ([`OpValue::TtlRead`]).
    TtlRead,
    /// TTL workload: a get of one key at a timestamp of the oracle ([`OpValue::TtlRead`]).
    TtlReadAt,
}

/// The argument or result of an operation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpValue {
    /// A register key with the value written (write) or read (read completion); `None` is
    /// `nil`: the value a read invocation carries, and the value of a never-written key.
    Register {
        /// Register key.
        key: u64,
        /// Written or read value; `None` is `nil`.
        value: Option<u64>,
    },
    /// Compare-and-set of `key` from `from` to `to`.
    Cas {
        /// Register key.
        key: u64,
        /// Expected current value.
        from: u64,
        /// New value.
        to: u64,
    },
    /// The element a set `add` inserts.
    Add(u64),
    /// The elements a final set read returned, in the order returned; `None` is `nil` (no
    /// result: the value of the invocation, or of a read that did not succeed).
    ReadAll(Option<Vec<u64>>),
    /// A timestamp of the oracle: `None` (`nil`) in the invocation, the timestamp in an `ok`
    /// completion.
    Timestamp(Option<u64>),
    /// Write number `n` (counting from 1) of chain `chain`: the value `n` written to the
    /// chain's key `n % 4`.
    ChainWrite {
        /// Chain id (unique per chain; one writer per chain).
        chain: u64,
        /// Write number within the chain, which is also the value written.
        n: u64,
    },
    /// A snapshot read of every key of chain `chain`.
    SnapshotRead {
        /// Chain id.
        chain: u64,
        /// Timestamp of the oracle the keys were read at: `None` (`nil`) in the invocation and
        /// in a read that did not succeed.
        ts: Option<u64>,
        /// The value of each key of the chain (key `j` at position `j`; `None` is `nil`, a key
        /// with no value at `ts`); `None` (`nil`) in the invocation and in a read that did
        /// not succeed.
        values: Option<Vec<Option<u64>>>,
    },
    /// Free text, used for nemesis descriptions.
    Text(String),
    /// No value.
    Nil,
    /// The micro-operations of a transaction, in order: in the invocation every read is
    /// `values: None`; in an `ok` completion every read carries the list it returned.
    Txn(Vec<MicroOp>),
    /// A transfer of `amount` from account `from` to account `to`.
    Transfer {
        /// Account debited.
        from: u64,
        /// Account credited.
        to: u64,
        /// Amount moved.
        amount: u64,
    },
    /// Every account's balance, account `i` at position `i` (`None`: no balance stored);
    /// `None` (`nil`) in the invocation and in a read that did not succeed.
    Balances(Option<Vec<Option<i64>>>),
    /// The micro-operations of an rw-register transaction, in order: in the invocation (and
    /// in a `fail` or `info` completion) every read is `value: None`; in an `ok` completion
    /// every read carries what it returned.
    RwTxn(Vec<RwMicroOp>),
    /// Every key of batch group `group` read together: key `j` of the group at position `j`.
    GroupRead {
        /// Group id.
        group: u64,
        /// The shard of each key of the group (key `j` at position `j`): a batch is atomic
        /// on the keys of one shard.
        shards: Vec<u32>,
        /// The timestamp of the oracle the keys were read at; `None` (`nil`) for a
        /// linearizable read, in the invocation and in a read that did not succeed.
        ts: Option<u64>,
        /// The value of each key (`None`: no value); `None` (`nil`) in the invocation and in
        /// a read that did not succeed.
        values: Option<Vec<Option<u64>>>,
    },
    /// A scan of range `range` (the scan workload's one range is 0), paged `page_limit`
    /// entries at a time.
    Scan {
        /// Range id.
        range: u64,
        /// Most entries asked for per page.
        page_limit: u32,
        /// Pages the scan took (0 in the invocation).
        pages: u32,
        /// The timestamp of the oracle every page was read at; `None` (`nil`) when each
        /// shard's part is read linearizably when it answers.
        ts: Option<u64>,
        /// The `(key, value)` pairs returned, in the order returned; `None` (`nil`) in the
        /// invocation and in a scan that did not succeed.
        entries: Option<Vec<(u64, u64)>>,
    },
    /// Value `value` written to keys `0..keys` of range `range`, in one batch.
    RangeFill {
        /// Range id.
        range: u64,
        /// Keys of the range written.
        keys: u64,
        /// The value written, unique per fill.
        value: u64,
    },
    /// A range id (the argument of a delete-range).
    Range(u64),
    /// A lock and the fencing token it was (or is being) held with: `None` (`nil`) in an
    /// acquisition's invocation and in one that did not succeed.
    Lock {
        /// Lock id.
        lock: u64,
        /// Fencing token.
        token: Option<u64>,
    },
    /// A write to lock `lock`'s resource with fencing token `token`. The resource is one key
    /// holding `[seq token]`: how many writes it accepted, and the token of the last one.
    GuardedWrite {
        /// Lock id.
        lock: u64,
        /// The writer's fencing token.
        token: u64,
        /// The write's place in the resource's order (`seen.0 + 1`) when it took effect, or
        /// would have (outcome unknown); `None` (`nil`) in the invocation and when refused.
        seq: Option<u64>,
        /// The resource's `(seq, token)` the write read last: the state it replaced, or the
        /// one that refused it; `(0, 0)` for a resource never written; `None` (`nil`) in the
        /// invocation and when the resource could not be read.
        seen: Option<(u64, u64)>,
    },
    /// A put (`value`) or delete (`None`) of watch key `key`. `result`: `None` in the
    /// invocation and in a completion that is not `ok`; for an acknowledged put the version
    /// it got, for an acknowledged delete 1 when a value existed (and was deleted), else 0.
    KeyWrite {
        /// Watch key.
        key: u64,
        /// The value put, unique in the run; `None` (`nil`) for a delete.
        value: Option<u64>,
        /// The put's version, or whether the delete found a value (1) or not (0).
        result: Option<u64>,
    },
    /// One watch stream of a watcher: it started from `from` (per shard, the progress it
    /// resumed from: every change at or below it was delivered before) and ended at `to`
    /// (the same, when the stream ended), delivering `events` in between.
    Watch {
        /// `(shard, progress)` the stream resumed from.
        from: Vec<(u32, u64)>,
        /// `(shard, progress)` when it ended; `None` (`nil`) in the invocation.
        to: Option<Vec<(u32, u64)>>,
        /// The events it delivered, in delivery order; `None` (`nil`) in the invocation.
        events: Option<Vec<WatchedEvent>>,
    },
    /// A put with a time to live (`value`), or an expire / persist (`None`) of TTL key
    /// `key`.
    TtlWrite {
        /// TTL key.
        key: u64,
        /// The value put, unique in the run; `None` (`nil`) for expire and persist.
        value: Option<u64>,
        /// Time to live in ms; 0: none (a put that never expires, or a persist).
        ttl_ms: u64,
    },
    /// A get of TTL key `key`: `ts` is the timestamp of the oracle the read was judged
    /// against — for [`F::TtlReadAt`] the one it read at, for [`F::TtlRead`] one taken before
    /// the get was sent (the node judges expiry at a later one) — `value` what it returned
    /// and `expires_at_ts` the value's expiry (0: never).
    TtlRead {
        /// TTL key.
        key: u64,
        /// The timestamp; `None` (`nil`) in the invocation and in a read that failed.
        ts: Option<u64>,
        /// The value read; `None` (`nil`) when absent, in the invocation and in a failed read.
        value: Option<u64>,
        /// Its expiry as an oracle timestamp (0: never); `None` (`nil`) when absent, in the
        /// invocation and in a failed read.
        expires_at_ts: Option<u64>,
    },
}

/// One event a watch delivered (watch workload).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WatchedEvent {
    /// Watch key.
    pub key: u64,
    /// The value put; `None` (`nil`) for a delete.
    pub value: Option<u64>,
    /// The key's version after a put (0 for a delete).
    pub version: u64,
    /// The oracle timestamp the change committed at.
    pub commit_ts: u64,
    /// The shard holding the key.
    pub shard: u32,
}

/// One step of a list-append transaction (Elle's `[:append k v]` and `[:r k list]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MicroOp {
    /// Append `value` to the list stored at `key`. The workload appends every value at most
    /// once per key.
    Append {
        /// List key.
        key: u64,
        /// Appended value, unique per key.
        value: u64,
    },
    /// Read the whole list stored at `key`.
    Read {
        /// List key.
        key: u64,
        /// The list read, oldest element first: `None` (`nil`) in an invocation and in a
        /// transaction that did not complete `ok`; the empty list for a never-written key.
        values: Option<Vec<u64>>,
    },
}

impl MicroOp {
    /// The key this micro-operation reads or appends to.
    pub fn key(&self) -> u64 {
        match self {
            MicroOp::Append { key, .. } | MicroOp::Read { key, .. } => *key,
        }
    }
}

/// One step of an rw-register transaction (Elle's `[:w k v]` and `[:r k v]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RwMicroOp {
    /// Write `value` to the register at `key`. The workload writes every value at most once.
    Write {
        /// Register key.
        key: u64,
        /// Written value, unique in the run.
        value: u64,
    },
    /// Read the register at `key`.
    Read {
        /// Register key.
        key: u64,
        /// `None` when not read (the invocation, and a transaction that did not complete
        /// `ok`); `Some(None)` for a register never written (`nil`); `Some(Some(v))` for `v`.
        /// In JSON: the field is absent when not read, `null` for `nil`.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "read_result"
        )]
        value: Option<Option<u64>>,
    },
}

/// A present `value` field of a register read: its result (`null`: `nil`), told apart from
/// an absent one (not read).
fn read_result<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(deserializer).map(Some)
}

impl RwMicroOp {
    /// The key this micro-operation reads or writes.
    pub fn key(&self) -> u64 {
        match self {
            RwMicroOp::Write { key, .. } | RwMicroOp::Read { key, .. } => *key,
        }
    }
}

/// One event of a history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Dense position in the history, starting at 0, in recording order.
    pub index: u64,
    /// Nanoseconds since the recorder started.
    pub time_ns: u64,
    /// Who performed the operation.
    pub process: Process,
    /// Invocation or outcome.
    pub op_type: OpType,
    /// The function performed.
    pub f: F,
    /// Argument (invocation) or result (completion).
    pub value: OpValue,
    /// Error message of a failed or indeterminate completion.
    pub error: Option<String>,
}

impl Op {
    /// Whether this event belongs to a client (not the nemesis).
    pub fn is_client(&self) -> bool {
        matches!(self.process, Process::Client(_))
    }
}

/// A history does not follow the invoke/complete discipline.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// Indexes must strictly increase along the history.
    #[error("op index {index} follows index {previous}: indexes must strictly increase")]
    NonMonotonicIndex {
        /// Index of the offending op.
        index: u64,
        /// Index of the op before it.
        previous: u64,
    },
    /// A client process invoked an operation while another of its operations was outstanding.
    #[error("op {index}: process {process:?} invoked while op {outstanding} is outstanding")]
    OverlappingInvoke {
        /// Index of the second invocation.
        index: u64,
        /// The process.
        process: Process,
        /// Index of the outstanding invocation.
        outstanding: u64,
    },
    /// A completion with no outstanding invocation of the same process.
    #[error("op {index}: completion for process {process:?} without an outstanding invocation")]
    CompletionWithoutInvoke {
        /// Index of the completion.
        index: u64,
        /// The process.
        process: Process,
    },
    /// A completion whose function differs from its invocation's.
    #[error("op {index}: completion f {completion:?} differs from invocation {invoke_index} f {invoke:?}")]
    MismatchedCompletion {
        /// Index of the completion.
        index: u64,
        /// Index of the invocation.
        invoke_index: u64,
        /// Function of the invocation.
        invoke: F,
        /// Function of the completion.
        completion: F,
    },
    /// A JSON line could not be decoded.
    #[error("history json line {line}: {source}")]
    Json {
        /// 1-based line number.
        line: usize,
        /// The decoding error.
        source: serde_json::Error,
    },
}

/// An invocation matched with its completion.
#[derive(Debug, Clone, Copy)]
pub struct OpPair<'a> {
    /// The invocation.
    pub invoke: &'a Op,
    /// The completion, or `None` when the history ended while the operation was outstanding.
    pub completion: Option<&'a Op>,
}

impl OpPair<'_> {
    /// The outcome: the completion's type, or [`OpType::Info`] when there is no completion.
    pub fn outcome(&self) -> OpType {
        self.completion
            .map_or(OpType::Info, |completion| completion.op_type)
    }

    /// The process that performed the operation.
    pub fn process(&self) -> Process {
        self.invoke.process
    }

    /// The function performed.
    pub fn f(&self) -> &F {
        &self.invoke.f
    }

    /// The completion's value if there is a completion, else the invocation's.
    pub fn result_value(&self) -> &OpValue {
        self.completion
            .map_or(&self.invoke.value, |completion| &completion.value)
    }
}

/// Number of events of each kind in a history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpCounts {
    /// Client invocations.
    pub invoke: usize,
    /// Client `ok` completions.
    pub ok: usize,
    /// Client `fail` completions.
    pub fail: usize,
    /// Client `info` completions.
    pub info: usize,
    /// Client invocations with no completion at the end of the history.
    pub unfinished: usize,
    /// Nemesis events.
    pub nemesis: usize,
}

/// An ordered list of events, as recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The events in index order.
    pub ops: Vec<Op>,
}

impl History {
    /// A history of the given events (kept in the given order).
    pub fn new(ops: Vec<Op>) -> Self {
        Self { ops }
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether there are no events.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Client events (invocations and completions), in order.
    pub fn client_ops(&self) -> impl Iterator<Item = &Op> + '_ {
        self.ops.iter().filter(|op| op.is_client())
    }

    /// Nemesis events, in order.
    pub fn nemesis_ops(&self) -> impl Iterator<Item = &Op> + '_ {
        self.ops.iter().filter(|op| !op.is_client())
    }

    /// Matches every client invocation with the next completion of the same process, in
    /// invocation order. Nemesis events are skipped. An invocation still outstanding at the
    /// end has `completion: None` (its outcome counts as `info`).
    ///
    /// Fails when indexes do not strictly increase, a process invokes while it has an
    /// outstanding operation, a completion has no invocation, or a completion's function
    /// differs from its invocation's.
    pub fn pairs(&self) -> Result<Vec<OpPair<'_>>, HistoryError> {
        let mut pairs: Vec<OpPair<'_>> = Vec::new();
        let mut outstanding_by_client: HashMap<u64, usize> = HashMap::new();
        let mut previous_index: Option<u64> = None;
        for op in &self.ops {
            if let Some(previous) = previous_index {
                if op.index <= previous {
                    return Err(HistoryError::NonMonotonicIndex {
                        index: op.index,
                        previous,
                    });
                }
            }
            previous_index = Some(op.index);
            let Process::Client(client) = op.process else {
                continue;
            };
            if op.op_type == OpType::Invoke {
                if let Some(&pair_position) = outstanding_by_client.get(&client) {
                    return Err(HistoryError::OverlappingInvoke {
                        index: op.index,
                        process: op.process,
                        outstanding: pairs[pair_position].invoke.index,
                    });
                }
                outstanding_by_client.insert(client, pairs.len());
                pairs.push(OpPair {
                    invoke: op,
                    completion: None,
                });
                continue;
            }
            let Some(pair_position) = outstanding_by_client.remove(&client) else {
                return Err(HistoryError::CompletionWithoutInvoke {
                    index: op.index,
                    process: op.process,
                });
            };
            let pair = &mut pairs[pair_position];
            if pair.invoke.f != op.f {
                return Err(HistoryError::MismatchedCompletion {
                    index: op.index,
                    invoke_index: pair.invoke.index,
                    invoke: pair.invoke.f.clone(),
                    completion: op.f.clone(),
                });
            }
            pair.completion = Some(op);
        }
        Ok(pairs)
    }

    /// Counts events by kind. Invocations without a completion are counted as `unfinished`
    /// (a process's last invocation with no later event of that process).
    pub fn counts(&self) -> OpCounts {
        let mut counts = OpCounts::default();
        let mut outstanding_by_client: HashMap<u64, bool> = HashMap::new();
        for op in &self.ops {
            let Process::Client(client) = op.process else {
                counts.nemesis += 1;
                continue;
            };
            match op.op_type {
                OpType::Invoke => counts.invoke += 1,
                OpType::Ok => counts.ok += 1,
                OpType::Fail => counts.fail += 1,
                OpType::Info => counts.info += 1,
            }
            outstanding_by_client.insert(client, op.op_type == OpType::Invoke);
        }
        counts.unfinished = outstanding_by_client
            .values()
            .filter(|outstanding| **outstanding)
            .count();
        counts
    }

    /// JSON Lines: one [`Op`] object per line, in order, each line ending with `\n`.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        let mut out = String::new();
        for op in &self.ops {
            out.push_str(&serde_json::to_string(op)?);
            out.push('\n');
        }
        Ok(out)
    }

    /// Reads the JSON Lines form written by [`History::to_json`]; blank lines are skipped.
    pub fn from_json(input: &str) -> Result<History, HistoryError> {
        let mut ops = Vec::new();
        for (line_number, line) in input.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let op = serde_json::from_str(line).map_err(|source| HistoryError::Json {
                line: line_number + 1,
                source,
            })?;
            ops.push(op);
        }
        Ok(History { ops })
    }
}

/// The thread-safe handle client workers and the nemesis record events through.
///
/// Clones share one history. Each event gets the next dense index and its time (nanoseconds
/// since `start`) under the same lock, so index order and time order agree.
#[derive(Debug, Clone)]
pub struct Recorder {
    shared: Arc<Mutex<RecorderState>>,
}

#[derive(Debug)]
struct RecorderState {
    start: Instant,
    ops: Vec<Op>,
}

impl Recorder {
    /// A recorder whose times count from `start`.
    pub fn new(start: Instant) -> Self {
        Self {
            shared: Arc::new(Mutex::new(RecorderState {
                start,
                ops: Vec::new(),
            })),
        }
    }

    /// Records and returns the invocation of `f` with `value` by `process`.
    pub fn invoke(&self, process: Process, f: F, value: OpValue) -> Op {
        self.record(process, OpType::Invoke, f, value, None)
    }

    /// Records and returns the completion of `invoke` (same process and function).
    ///
    /// `op_type` must be `Ok`, `Fail` or `Info`; an `Invoke` is recorded as `Info` (and
    /// asserts in debug builds), so a mistaken call cannot break the history's pairing.
    pub fn complete(&self, invoke: &Op, op_type: OpType, value: OpValue, error: Option<String>) -> Op {
        debug_assert_eq!(invoke.op_type, OpType::Invoke, "complete() takes the invocation");
        debug_assert_ne!(op_type, OpType::Invoke, "a completion cannot be an invocation");
        let completion_type = if op_type == OpType::Invoke {
            OpType::Info
        } else {
            op_type
        };
        self.record(invoke.process, completion_type, invoke.f.clone(), value, error)
    }

    /// Records and returns a nemesis event (`:process :nemesis`, `:type :info`), for example
    /// `nemesis(F::Nemesis("kill".into()), OpValue::Text("kill -9 n2".into()))`.
    pub fn nemesis(&self, f: F, value: OpValue) -> Op {
        self.record(Process::Nemesis, OpType::Info, f, value, None)
    }

    /// A copy of everything recorded so far.
    pub fn history(&self) -> History {
        History {
            ops: self.lock().ops.clone(),
        }
    }

    /// Number of events recorded so far.
    pub fn len(&self) -> usize {
        self.lock().ops.len()
    }

    /// Whether nothing has been recorded yet.
    pub fn is_empty(&self) -> bool {
        self.lock().ops.is_empty()
    }

    fn record(&self, process: Process, op_type: OpType, f: F, value: OpValue, error: Option<String>) -> Op {
        let mut state = self.lock();
        let elapsed = Instant::now().saturating_duration_since(state.start);
        let time_ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let index = state.ops.len() as u64;
        let op = Op {
            index,
            time_ns,
            process,
            op_type,
            f,
            value,
            error,
        };
        state.ops.push(op.clone());
        op
    }

    /// The history is append-only, so a panic in another recording thread cannot leave it
    /// half-updated: recover from poisoning instead of propagating it.
    fn lock(&self) -> MutexGuard<'_, RecorderState> {
        self.shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(key: u64, value: Option<u64>) -> OpValue {
        OpValue::Register { key, value }
    }

    /// The recorder assigns dense indexes and non-decreasing times across clones and threads.
    #[test]
    fn recorder_assigns_dense_indexes_across_threads() {
        let recorder = Recorder::new(Instant::now());
        std::thread::scope(|scope| {
            for client in 0..4 {
                let recorder = recorder.clone();
                scope.spawn(move || {
                    for value in 0..50 {
                        let invoke =
                            recorder.invoke(Process::Client(client), F::Write, register(1, Some(value)));
                        recorder.complete(&invoke, OpType::Ok, invoke.value.clone(), None);
                    }
                });
            }
        });
        recorder.nemesis(F::Nemesis("kill".into()), OpValue::Text("kill n1".into()));
        let history = recorder.history();
        assert_eq!(history.len(), 401);
        for (position, op) in history.ops.iter().enumerate() {
            assert_eq!(op.index, position as u64);
        }
        assert!(history
            .ops
            .windows(2)
            .all(|pair| pair[0].time_ns <= pair[1].time_ns));
        let pairs = history.pairs().expect("recorded history pairs");
        assert_eq!(pairs.len(), 200);
        assert!(pairs.iter().all(|pair| pair.outcome() == OpType::Ok));
        let counts = history.counts();
        assert_eq!(
            (counts.invoke, counts.ok, counts.nemesis, counts.unfinished),
            (200, 200, 1, 0)
        );
    }

    /// An invocation with no completion pairs with `None` and counts as `info`.
    #[test]
    fn unfinished_invocation_counts_as_info() {
        let recorder = Recorder::new(Instant::now());
        let first = recorder.invoke(Process::Client(0), F::Read, register(1, None));
        recorder.complete(&first, OpType::Ok, register(1, None), None);
        recorder.invoke(Process::Client(0), F::Write, register(1, Some(3)));
        let history = recorder.history();
        let pairs = history.pairs().expect("pairs");
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs[1].outcome(), OpType::Info);
        assert!(pairs[1].completion.is_none());
        assert_eq!(history.counts().unfinished, 1);
    }

    /// Pairing rejects a second invocation while one is outstanding, and orphan completions.
    #[test]
    fn pairing_rejects_malformed_histories() {
        let op = |index: u64, op_type: OpType| Op {
            index,
            time_ns: index,
            process: Process::Client(7),
            op_type,
            f: F::Read,
            value: OpValue::Nil,
            error: None,
        };
        let overlapping = History::new(vec![op(0, OpType::Invoke), op(1, OpType::Invoke)]);
        assert!(matches!(
            overlapping.pairs(),
            Err(HistoryError::OverlappingInvoke { index: 1, .. })
        ));
        let orphan = History::new(vec![op(0, OpType::Ok)]);
        assert!(matches!(
            orphan.pairs(),
            Err(HistoryError::CompletionWithoutInvoke { index: 0, .. })
        ));
        let unordered = History::new(vec![op(1, OpType::Invoke), op(0, OpType::Ok)]);
        assert!(matches!(
            unordered.pairs(),
            Err(HistoryError::NonMonotonicIndex { .. })
        ));
    }

    /// JSON Lines export reads back to the same history.
    #[test]
    fn json_lines_round_trip() {
        let recorder = Recorder::new(Instant::now());
        let invoke = recorder.invoke(
            Process::Client(2),
            F::Cas,
            OpValue::Cas {
                key: 4,
                from: 1,
                to: 2,
            },
        );
        recorder.complete(
            &invoke,
            OpType::Fail,
            invoke.value.clone(),
            Some("precondition".into()),
        );
        recorder.nemesis(
            F::Nemesis("partition-start".into()),
            OpValue::Text("n1 | n2 n3".into()),
        );
        let history = recorder.history();
        let json = history.to_json().expect("serialize");
        assert_eq!(json.lines().count(), 3);
        let parsed = History::from_json(&json).expect("parse");
        assert_eq!(parsed, history);
        assert!(matches!(
            History::from_json("{\"index\":"),
            Err(HistoryError::Json { line: 1, .. })
        ));
    }

    /// A list-append transaction serializes like the other values and reads back.
    #[test]
    fn txn_json_round_trip() {
        let recorder = Recorder::new(Instant::now());
        let invoke = recorder.invoke(
            Process::Client(0),
            F::Txn,
            OpValue::Txn(vec![
                MicroOp::Read { key: 3, values: None },
                MicroOp::Append { key: 3, value: 7 },
            ]),
        );
        let completion = recorder.complete(
            &invoke,
            OpType::Ok,
            OpValue::Txn(vec![
                MicroOp::Read {
                    key: 3,
                    values: Some(vec![1, 2]),
                },
                MicroOp::Append { key: 3, value: 7 },
            ]),
            None,
        );
        let json = serde_json::to_string(&completion).expect("serialize");
        assert!(
            json.contains(
                "\"f\":\"txn\",\"value\":{\"txn\":[{\"read\":{\"key\":3,\"values\":[1,2]}},\
                 {\"append\":{\"key\":3,\"value\":7}}]}"
            ),
            "{json}"
        );
        let history = recorder.history();
        let parsed = History::from_json(&history.to_json().expect("serialize")).expect("parse");
        assert_eq!(parsed, history);
    }

    /// An rw-register transaction reads back from JSON with its reads' three states: not
    /// read, `nil`, a value.
    #[test]
    fn rw_txn_json_round_trip() {
        let recorder = Recorder::new(Instant::now());
        let read = |key: u64, value: Option<Option<u64>>| RwMicroOp::Read { key, value };
        let invoke = recorder.invoke(
            Process::Client(0),
            F::RwTxn,
            OpValue::RwTxn(vec![
                read(3, None),
                read(4, None),
                RwMicroOp::Write { key: 3, value: 7 },
            ]),
        );
        let completion = recorder.complete(
            &invoke,
            OpType::Ok,
            OpValue::RwTxn(vec![
                read(3, Some(Some(5))),
                read(4, Some(None)),
                RwMicroOp::Write { key: 3, value: 7 },
            ]),
            None,
        );
        let json = serde_json::to_string(&completion).expect("serialize");
        assert!(
            json.contains(
                "\"f\":\"rw_txn\",\"value\":{\"rw_txn\":[{\"read\":{\"key\":3,\"value\":5}},\
                 {\"read\":{\"key\":4,\"value\":null}},{\"write\":{\"key\":3,\"value\":7}}]}"
            ),
            "{json}"
        );
        let history = recorder.history();
        let parsed = History::from_json(&history.to_json().expect("serialize")).expect("parse");
        assert_eq!(parsed, history);
    }
}
