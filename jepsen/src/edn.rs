//! Jepsen EDN export of histories, and a parser for reading them back.
//!
//! [`history_to_edn`] writes one op map per line, keys in a fixed order:
//!
//! ```text
//! {:index 0, :time 1000, :type :invoke, :process 0, :f :write, :value [3 7]}
//! {:index 1, :time 2500, :type :ok, :process 0, :f :write, :value [3 7]}
//! {:index 2, :time 2600, :type :invoke, :process 1, :f :read, :value [3 nil]}
//! {:index 3, :time 2900, :type :info, :process :nemesis, :f :kill, :value "kill -9 n2"}
//! {:index 4, :time 3100, :type :fail, :process 1, :f :cas, :value [3 [7 8]], :error "timeout"}
//! ```
//!
//! Values by function: register reads and writes are `[key value]` (`nil` for no value),
//! compare-and-set is `[key [from to]]`, a set `:add` is the element, the final set read
//! (`:f :read-all`) is a vector of elements or `nil`, a `:timestamp` is the timestamp taken
//! (`nil` in the invocation), a `:chain-write` is `[chain n]`, a `:snapshot-read` is
//! `[chain ts [v0 v1 v2 v3]]` (`[chain nil nil]` in the invocation and in a failed read; `nil`
//! for a key with no value), a `:txn` is Elle's list-append transaction, a vector of
//! micro-operations `[[:append 3 7] [:r 3 [1 2 7]]]` (`[:r 3 nil]` in the invocation), a bank
//! `:transfer` is `{:from 1, :to 2, :amount 5}` and a `:bank-read` maps every account to its
//! balance, `{0 100, 1 95, 2 nil}` (`nil` in the invocation; Jepsen's bank checker calls it
//! `:read`), an `:rw-txn` is Elle's rw-register transaction, a vector of micro-operations
//! `[[:w 3 7] [:r 4 2] [:r 5 nil]]` (below), a nemesis value is a string. A `:stale-read`,
//! a `:batch-write` (`[group value]`, `nil` deleting the group) and a `:scan-write` are
//! `[key value]` like a register op; a `:batch-read` is `[group [shard ...] ts [v ...]]`
//! (`ts` `nil` for a linearizable read); a `:scan` and a `:range-read` are
//! `[range page-limit pages ts [[key value] ...]]`; a `:range-fill` is `[range keys value]`
//! and a `:delete-range` its range; a `:lock-acquire` and a `:lock-release` are `[lock token]`
//! (`nil` before the token is known) and a `:guarded-write` `[lock token seq [seen-seq
//! seen-token]]`. A [`OpValue::Nil`] prints as `nil`.
//! Jepsen's own set checker calls the final read `:read`; ringkv keeps `:read-all` so that a
//! set read is never confused with a register read.
//!
//! Rw-register transactions. Elle writes both of its transactional workloads as `:f :txn`
//! and tells them apart by their micro-operations; ringkv writes rw-register ones as
//! `:f :rw-txn`, because one `:txn` micro-op is ambiguous: `[:r k nil]` is an unread
//! list-append read, an unread register read, and a register read that found no value.
//! Elle ignores `:f` (it checks the ops it is given), so an `:rw-txn` history is still one
//! Elle's rw-register checker reads once the ops are selected by `:f`. Within an
//! `:rw-txn`, `[:r k nil]` is a read that found no value in an `:ok` op and an unread read
//! in any other op (an invocation, `:fail`, `:info`), as in Elle. The parser also reads
//! Elle's own spelling: a `:txn` op holding a `[:w k v]`, a `[:r k 3]`, or (in an `:ok` op,
//! where a list-append read is always a vector) a `[:r k nil]` is an rw-register
//! transaction; a `:txn` op whose micro-ops are only `[:r k nil]` outside an `:ok` op is
//! read as list-append unless the op it pairs with (same process) is an rw-register one.
//!
//! Nemesis function names become keywords; characters a keyword cannot hold are written as
//! `_`, so names should stick to letters, digits and `-`.
//!
//! The parser ([`parse`], [`parse_all`], [`parse_history`]) reads exactly the EDN subset the
//! exporter writes: maps, vectors, keywords, integers, strings (with `\" \\ \n \t \r \uXXXX`
//! escapes), `nil`, commas as whitespace and `;` comments. It never panics on malformed
//! input: every problem is an [`EdnError`] with a line and column.
//!
//! Round trip: `parse_history(&history_to_edn(h))` equals `h`, with one exception: for a
//! `:read-all` op, `nil` always reads back as `OpValue::ReadAll(None)` (never `OpValue::Nil`),
//! and for a `:timestamp` op as `OpValue::Timestamp(None)`; and an `:rw-txn` read's `nil`
//! reads back by the op's type (above), and an `:ok` `:txn` op with an unread `[:r k nil]`
//! reads as rw-register (ringkv records every read of an `ok` transaction).

use std::fmt::{self, Write as _};

use std::collections::HashMap;

use crate::history::{History, MicroOp, Op, OpType, OpValue, Process, RwMicroOp, WatchedEvent, F};

/// Deepest nesting of vectors and maps the parser accepts (ours is at most 3).
pub const MAX_DEPTH: usize = 64;

/// A parsed EDN value (the subset ringkv writes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edn {
    /// `nil`.
    Nil,
    /// An integer; `i128` holds every `u64` and `i64`.
    Integer(i128),
    /// A string, unescaped.
    String(String),
    /// A keyword, without its leading `:`.
    Keyword(String),
    /// `[a b c]`.
    Vector(Vec<Edn>),
    /// `{k v, ...}`, entries in written order.
    Map(Vec<(Edn, Edn)>),
}

impl Edn {
    /// The value of keyword key `name` in a map (`None` for absent keys and non-maps).
    pub fn get(&self, name: &str) -> Option<&Edn> {
        let Edn::Map(entries) = self else {
            return None;
        };
        entries.iter().find_map(|(key, value)| match key {
            Edn::Keyword(keyword) if keyword == name => Some(value),
            _ => None,
        })
    }

    fn keyword(name: &str) -> Edn {
        Edn::Keyword(name.to_string())
    }

    fn unsigned(value: u64) -> Edn {
        Edn::Integer(i128::from(value))
    }

    fn optional(value: Option<u64>) -> Edn {
        value.map_or(Edn::Nil, Edn::unsigned)
    }

    fn describe(&self) -> &'static str {
        match self {
            Edn::Nil => "nil",
            Edn::Integer(_) => "an integer",
            Edn::String(_) => "a string",
            Edn::Keyword(_) => "a keyword",
            Edn::Vector(_) => "a vector",
            Edn::Map(_) => "a map",
        }
    }
}

impl fmt::Display for Edn {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Edn::Nil => out.write_str("nil"),
            Edn::Integer(value) => write!(out, "{value}"),
            Edn::String(text) => write_string(out, text),
            Edn::Keyword(name) => {
                out.write_char(':')?;
                for character in name.chars() {
                    out.write_char(if is_symbol_char(character) { character } else { '_' })?;
                }
                Ok(())
            }
            Edn::Vector(items) => {
                out.write_char('[')?;
                for (position, item) in items.iter().enumerate() {
                    if position > 0 {
                        out.write_char(' ')?;
                    }
                    write!(out, "{item}")?;
                }
                out.write_char(']')
            }
            Edn::Map(entries) => {
                out.write_char('{')?;
                for (position, (key, value)) in entries.iter().enumerate() {
                    if position > 0 {
                        out.write_str(", ")?;
                    }
                    write!(out, "{key} {value}")?;
                }
                out.write_char('}')
            }
        }
    }
}

fn write_string(out: &mut fmt::Formatter<'_>, text: &str) -> fmt::Result {
    out.write_char('"')?;
    for character in text.chars() {
        match character {
            '"' => out.write_str("\\\"")?,
            '\\' => out.write_str("\\\\")?,
            '\n' => out.write_str("\\n")?,
            '\t' => out.write_str("\\t")?,
            '\r' => out.write_str("\\r")?,
            control if control.is_control() => write!(out, "\\u{:04x}", u32::from(control))?,
            other => out.write_char(other)?,
        }
    }
    out.write_char('"')
}

/// Characters a keyword name may contain (after the first `:`).
fn is_symbol_char(character: char) -> bool {
    character.is_ascii_alphanumeric() || "-_?!.*+<>=/".contains(character)
}

/// An EDN document or history could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EdnError {
    /// The text is not EDN of the supported subset.
    #[error("edn syntax error at line {line}, column {column}: {reason}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column, in characters.
        column: usize,
        /// What was wrong.
        reason: String,
    },
    /// The value is EDN but not a history op as ringkv writes it.
    #[error("invalid history op at line {line}: {reason}")]
    InvalidOp {
        /// 1-based line where the op map starts.
        line: usize,
        /// What was wrong.
        reason: String,
    },
}

/// The EDN form of one op (see the module docs for the layout).
pub fn op_to_edn(op: &Op) -> Edn {
    let mut entries = vec![
        (Edn::keyword("index"), Edn::unsigned(op.index)),
        (Edn::keyword("time"), Edn::unsigned(op.time_ns)),
        (Edn::keyword("type"), Edn::keyword(op_type_name(op.op_type))),
        (
            Edn::keyword("process"),
            match op.process {
                Process::Client(client) => Edn::unsigned(client),
                Process::Nemesis => Edn::keyword("nemesis"),
            },
        ),
        (Edn::keyword("f"), Edn::keyword(f_name(&op.f))),
        (Edn::keyword("value"), value_to_edn(&op.value)),
    ];
    if let Some(error) = &op.error {
        entries.push((Edn::keyword("error"), Edn::String(error.clone())));
    }
    Edn::Map(entries)
}

/// The whole history as EDN, one op map per line, each line ending with `\n`.
pub fn history_to_edn(history: &History) -> String {
    let mut out = String::new();
    for op in &history.ops {
        // Writing into a String cannot fail.
        let _ = writeln!(out, "{}", op_to_edn(op));
    }
    out
}

fn op_type_name(op_type: OpType) -> &'static str {
    match op_type {
        OpType::Invoke => "invoke",
        OpType::Ok => "ok",
        OpType::Fail => "fail",
        OpType::Info => "info",
    }
}

fn f_name(f: &F) -> &str {
    match f {
        F::Read => "read",
        F::Write => "write",
        F::Cas => "cas",
        F::Add => "add",
        F::ReadAll => "read-all",
        F::Timestamp => "timestamp",
        F::ChainWrite => "chain-write",
        F::SnapshotRead => "snapshot-read",
        F::Nemesis(name) => name,
        F::Txn => "txn",
        F::Transfer => "transfer",
        F::BankRead => "bank-read",
        F::RwTxn => "rw-txn",
        F::StaleRead => "stale-read",
        F::BatchWrite => "batch-write",
        F::BatchRead => "batch-read",
        F::ScanWrite => "scan-write",
        F::Scan => "scan",
        F::RangeFill => "range-fill",
        F::DeleteRange => "delete-range",
        F::RangeRead => "range-read",
        F::LockAcquire => "lock-acquire",
        F::GuardedWrite => "guarded-write",
        F::LockRelease => "lock-release",
        F::WatchPut => "watch-put",
        F::WatchDelete => "watch-delete",
        F::Watch => "watch",
        F::TtlPut => "ttl-put",
        F::TtlExpire => "expire",
        F::TtlRead => "ttl-read",
        F::TtlReadAt => "ttl-read-at",
    }
}

fn value_to_edn(value: &OpValue) -> Edn {
    match value {
        OpValue::Register { key, value } => Edn::Vector(vec![Edn::unsigned(*key), Edn::optional(*value)]),
        OpValue::Cas { key, from, to } => Edn::Vector(vec![
            Edn::unsigned(*key),
            Edn::Vector(vec![Edn::unsigned(*from), Edn::unsigned(*to)]),
        ]),
        OpValue::Add(element) => Edn::unsigned(*element),
        OpValue::ReadAll(None) => Edn::Nil,
        OpValue::ReadAll(Some(elements)) => {
            Edn::Vector(elements.iter().map(|element| Edn::unsigned(*element)).collect())
        }
        OpValue::Timestamp(timestamp) => Edn::optional(*timestamp),
        OpValue::ChainWrite { chain, n } => Edn::Vector(vec![Edn::unsigned(*chain), Edn::unsigned(*n)]),
        OpValue::SnapshotRead { chain, ts, values } => Edn::Vector(vec![
            Edn::unsigned(*chain),
            Edn::optional(*ts),
            values.as_ref().map_or(Edn::Nil, |values| {
                Edn::Vector(values.iter().map(|value| Edn::optional(*value)).collect())
            }),
        ]),
        OpValue::Text(text) => Edn::String(text.clone()),
        OpValue::Nil => Edn::Nil,
        OpValue::Txn(micro_ops) => Edn::Vector(micro_ops.iter().map(micro_op_to_edn).collect()),
        OpValue::RwTxn(micro_ops) => Edn::Vector(micro_ops.iter().map(rw_micro_op_to_edn).collect()),
        OpValue::Transfer { from, to, amount } => Edn::Map(vec![
            (Edn::keyword("from"), Edn::unsigned(*from)),
            (Edn::keyword("to"), Edn::unsigned(*to)),
            (Edn::keyword("amount"), Edn::unsigned(*amount)),
        ]),
        OpValue::Balances(None) => Edn::Nil,
        OpValue::Balances(Some(balances)) => Edn::Map(
            balances
                .iter()
                .enumerate()
                .map(|(account, balance)| {
                    (
                        Edn::unsigned(account as u64),
                        balance.map_or(Edn::Nil, |balance| Edn::Integer(balance.into())),
                    )
                })
                .collect(),
        ),
        OpValue::GroupRead {
            group,
            shards,
            ts,
            values,
        } => Edn::Vector(vec![
            Edn::unsigned(*group),
            Edn::Vector(
                shards
                    .iter()
                    .map(|shard| Edn::unsigned(u64::from(*shard)))
                    .collect(),
            ),
            Edn::optional(*ts),
            values.as_ref().map_or(Edn::Nil, |values| {
                Edn::Vector(values.iter().map(|value| Edn::optional(*value)).collect())
            }),
        ]),
        OpValue::Scan {
            range,
            page_limit,
            pages,
            ts,
            entries,
        } => Edn::Vector(vec![
            Edn::unsigned(*range),
            Edn::unsigned(u64::from(*page_limit)),
            Edn::unsigned(u64::from(*pages)),
            Edn::optional(*ts),
            entries.as_ref().map_or(Edn::Nil, |entries| {
                Edn::Vector(
                    entries
                        .iter()
                        .map(|(key, value)| Edn::Vector(vec![Edn::unsigned(*key), Edn::unsigned(*value)]))
                        .collect(),
                )
            }),
        ]),
        OpValue::RangeFill { range, keys, value } => Edn::Vector(vec![
            Edn::unsigned(*range),
            Edn::unsigned(*keys),
            Edn::unsigned(*value),
        ]),
        OpValue::Range(range) => Edn::unsigned(*range),
        OpValue::Lock { lock, token } => Edn::Vector(vec![Edn::unsigned(*lock), Edn::optional(*token)]),
        OpValue::GuardedWrite {
            lock,
            token,
            seq,
            seen,
        } => Edn::Vector(vec![
            Edn::unsigned(*lock),
            Edn::unsigned(*token),
            Edn::optional(*seq),
            seen.map_or(Edn::Nil, |(seen_seq, seen_token)| {
                Edn::Vector(vec![Edn::unsigned(seen_seq), Edn::unsigned(seen_token)])
            }),
        ]),
        OpValue::KeyWrite { key, value, result } => Edn::Vector(vec![
            Edn::unsigned(*key),
            Edn::optional(*value),
            Edn::optional(*result),
        ]),
        OpValue::Watch { from, to, events } => Edn::Vector(vec![
            progress_to_edn(from),
            to.as_ref().map_or(Edn::Nil, |to| progress_to_edn(to)),
            events.as_ref().map_or(Edn::Nil, |events| {
                Edn::Vector(
                    events
                        .iter()
                        .map(|event| {
                            Edn::Vector(vec![
                                Edn::unsigned(event.key),
                                Edn::optional(event.value),
                                Edn::unsigned(event.version),
                                Edn::unsigned(event.commit_ts),
                                Edn::unsigned(u64::from(event.shard)),
                            ])
                        })
                        .collect(),
                )
            }),
        ]),
        OpValue::TtlWrite { key, value, ttl_ms } => Edn::Vector(vec![
            Edn::unsigned(*key),
            Edn::optional(*value),
            Edn::unsigned(*ttl_ms),
        ]),
        OpValue::TtlRead {
            key,
            ts,
            value,
            expires_at_ts,
        } => Edn::Vector(vec![
            Edn::unsigned(*key),
            Edn::optional(*ts),
            Edn::optional(*value),
            Edn::optional(*expires_at_ts),
        ]),
    }
}

/// `[[shard progress] ...]` of a watch.
fn progress_to_edn(progress: &[(u32, u64)]) -> Edn {
    Edn::Vector(
        progress
            .iter()
            .map(|(shard, ts)| Edn::Vector(vec![Edn::unsigned(u64::from(*shard)), Edn::unsigned(*ts)]))
            .collect(),
    )
}

/// `[[shard progress] ...]` read back.
fn progress_from_edn(progress: &Edn) -> Result<Vec<(u32, u64)>, String> {
    let Edn::Vector(items) = progress else {
        return Err(format!(
            "a watch's progress must be a vector, found {}",
            progress.describe()
        ));
    };
    items
        .iter()
        .map(|item| match item {
            Edn::Vector(pair) => match pair.as_slice() {
                [shard, ts] => Ok((to_u32(shard, "shard")?, to_u64(ts, "progress")?)),
                _ => Err("a watch's progress entry must be [shard ts]".to_string()),
            },
            other => Err(format!(
                "a watch's progress entry must be a vector, found {}",
                other.describe()
            )),
        })
        .collect()
}

/// `[key value version commit-ts shard]` of one watch event read back.
fn watched_event_from_edn(event: &Edn) -> Result<WatchedEvent, String> {
    match event {
        Edn::Vector(items) => match items.as_slice() {
            [key, value, version, commit_ts, shard] => Ok(WatchedEvent {
                key: to_u64(key, "key")?,
                value: to_optional_u64(value, "value")?,
                version: to_u64(version, "version")?,
                commit_ts: to_u64(commit_ts, "commit-ts")?,
                shard: to_u32(shard, "shard")?,
            }),
            _ => Err("a watch event must be [key value version commit-ts shard]".to_string()),
        },
        other => Err(format!(
            "a watch event must be a vector, found {}",
            other.describe()
        )),
    }
}

/// `[:append k v]`, or `[:r k [v ...]]` (`[:r k nil]` without a result), as Elle writes them.
fn micro_op_to_edn(micro_op: &MicroOp) -> Edn {
    match micro_op {
        MicroOp::Append { key, value } => Edn::Vector(vec![
            Edn::keyword("append"),
            Edn::unsigned(*key),
            Edn::unsigned(*value),
        ]),
        MicroOp::Read { key, values } => Edn::Vector(vec![
            Edn::keyword("r"),
            Edn::unsigned(*key),
            values.as_ref().map_or(Edn::Nil, |values| {
                Edn::Vector(values.iter().map(|value| Edn::unsigned(*value)).collect())
            }),
        ]),
    }
}

fn micro_op_from_edn(micro_op: &Edn) -> Result<MicroOp, String> {
    let shape_error = || format!("txn micro-op must be [:append k v] or [:r k list], found {micro_op}");
    let Edn::Vector(items) = micro_op else {
        return Err(shape_error());
    };
    match items.as_slice() {
        [Edn::Keyword(f), key, value] if f == "append" => Ok(MicroOp::Append {
            key: to_u64(key, "key")?,
            value: to_u64(value, "value")?,
        }),
        [Edn::Keyword(f), key, Edn::Nil] if f == "r" => Ok(MicroOp::Read {
            key: to_u64(key, "key")?,
            values: None,
        }),
        [Edn::Keyword(f), key, Edn::Vector(values)] if f == "r" => Ok(MicroOp::Read {
            key: to_u64(key, "key")?,
            values: Some(
                values
                    .iter()
                    .map(|value| to_u64(value, "value"))
                    .collect::<Result<_, _>>()?,
            ),
        }),
        _ => Err(shape_error()),
    }
}

/// `[:w k v]`, or `[:r k v]` (`[:r k nil]` without a result or for no value), as Elle
/// writes them.
fn rw_micro_op_to_edn(micro_op: &RwMicroOp) -> Edn {
    match micro_op {
        RwMicroOp::Write { key, value } => Edn::Vector(vec![
            Edn::keyword("w"),
            Edn::unsigned(*key),
            Edn::unsigned(*value),
        ]),
        RwMicroOp::Read { key, value } => Edn::Vector(vec![
            Edn::keyword("r"),
            Edn::unsigned(*key),
            Edn::optional(value.flatten()),
        ]),
    }
}

/// An rw-register micro-op of an op of type `op_type`: `[:r k nil]` found no value in an
/// `:ok` op, and was not read in any other.
fn rw_micro_op_from_edn(micro_op: &Edn, op_type: OpType) -> Result<RwMicroOp, String> {
    let shape_error = || format!("rw-register micro-op must be [:w k v] or [:r k v], found {micro_op}");
    let Edn::Vector(items) = micro_op else {
        return Err(shape_error());
    };
    match items.as_slice() {
        [Edn::Keyword(f), key, value] if f == "w" => Ok(RwMicroOp::Write {
            key: to_u64(key, "key")?,
            value: to_u64(value, "value")?,
        }),
        [Edn::Keyword(f), key, Edn::Nil] if f == "r" => Ok(RwMicroOp::Read {
            key: to_u64(key, "key")?,
            value: (op_type == OpType::Ok).then_some(None),
        }),
        [Edn::Keyword(f), key, value @ Edn::Integer(_)] if f == "r" => Ok(RwMicroOp::Read {
            key: to_u64(key, "key")?,
            value: Some(Some(to_u64(value, "value")?)),
        }),
        _ => Err(shape_error()),
    }
}

/// Whether the value of a `:txn` op of type `op_type` is Elle's rw-register transaction: it
/// holds a write `[:w k v]`, a read of one value `[:r k 3]`, or — in an `:ok` op, where a
/// list-append read is always a vector — a read of `nil`.
fn is_elle_rw_register(value: &Edn, op_type: OpType) -> bool {
    let Edn::Vector(micro_ops) = value else {
        return false;
    };
    micro_ops.iter().any(|micro_op| {
        let Edn::Vector(items) = micro_op else {
            return false;
        };
        match items.as_slice() {
            [Edn::Keyword(f), _, _] if f == "w" => true,
            [Edn::Keyword(f), _, Edn::Integer(_)] if f == "r" => true,
            [Edn::Keyword(f), _, Edn::Nil] if f == "r" => op_type == OpType::Ok,
            _ => false,
        }
    })
}

/// Elle's `:txn` ops that could not be told apart on their own (only unread `[:r k nil]`
/// reads, read as list-append) take the rw-register flavour of the op they pair with (the
/// invocation or completion of the same process) when that one is an Elle-spelled
/// rw-register op too (`elle_rw_register[position]`: `:f :txn` read as rw-register).
fn adopt_rw_register_pairs(ops: &mut [Op], elle_rw_register: &[bool]) {
    let mut outstanding: HashMap<u64, usize> = HashMap::new();
    for position in 0..ops.len() {
        let Process::Client(client) = ops[position].process else {
            continue;
        };
        if ops[position].op_type == OpType::Invoke {
            outstanding.insert(client, position);
            continue;
        }
        let Some(invoke) = outstanding.remove(&client) else {
            continue;
        };
        let elle_spelled = |at: usize| elle_rw_register.get(at).copied().unwrap_or(false);
        let unresolved = match (&ops[invoke].f, &ops[position].f) {
            (F::Txn, F::RwTxn) if elle_spelled(position) => invoke,
            (F::RwTxn, F::Txn) if elle_spelled(invoke) => position,
            _ => continue,
        };
        let op = &mut ops[unresolved];
        let OpValue::Txn(micro_ops) = &op.value else {
            continue;
        };
        let reads: Option<Vec<RwMicroOp>> = micro_ops
            .iter()
            .map(|micro_op| match micro_op {
                MicroOp::Read { key, values: None } => Some(RwMicroOp::Read {
                    key: *key,
                    value: None,
                }),
                _ => None,
            })
            .collect();
        if let Some(reads) = reads {
            op.f = F::RwTxn;
            op.value = OpValue::RwTxn(reads);
        }
    }
}

/// Parses exactly one EDN value (surrounding whitespace and comments allowed).
pub fn parse(input: &str) -> Result<Edn, EdnError> {
    let mut parser = Parser::new(input);
    parser.skip_whitespace();
    let value = parser.value(0)?;
    parser.skip_whitespace();
    if parser.position < parser.bytes.len() {
        return Err(parser.error("unexpected text after the value"));
    }
    Ok(value)
}

/// Parses a sequence of top-level EDN values.
pub fn parse_all(input: &str) -> Result<Vec<Edn>, EdnError> {
    Ok(parse_all_with_lines(input)?
        .into_iter()
        .map(|(_, value)| value)
        .collect())
}

fn parse_all_with_lines(input: &str) -> Result<Vec<(usize, Edn)>, EdnError> {
    let mut parser = Parser::new(input);
    let mut values = Vec::new();
    // Lines counted incrementally: counting from the start for every value is quadratic
    // (a 600 s run's history is about 100 MB).
    let (mut line, mut counted_to) = (1, 0);
    loop {
        parser.skip_whitespace();
        if parser.position >= parser.bytes.len() {
            return Ok(values);
        }
        let newlines = parser.bytes[counted_to..parser.position]
            .iter()
            .filter(|byte| **byte == b'\n')
            .count();
        line += newlines;
        counted_to = parser.position;
        values.push((line, parser.value(0)?));
    }
}

/// Reads a history written by [`history_to_edn`]: a sequence of op maps.
///
/// `:index` may be absent (the op's position is used) and unknown keys are ignored, so
/// Jepsen-written register histories read too; `:error` may be a string or a keyword.
pub fn parse_history(input: &str) -> Result<History, EdnError> {
    let values = parse_all_with_lines(input)?;
    let mut ops = Vec::with_capacity(values.len());
    let mut elle_rw_register = Vec::with_capacity(values.len());
    for (position, (line, value)) in values.iter().enumerate() {
        let op = op_from_edn(value, position as u64)
            .map_err(|reason| EdnError::InvalidOp { line: *line, reason })?;
        let spelled_txn = matches!(value.get("f"), Some(Edn::Keyword(name)) if name == "txn");
        elle_rw_register.push(spelled_txn && op.f == F::RwTxn);
        ops.push(op);
    }
    adopt_rw_register_pairs(&mut ops, &elle_rw_register);
    Ok(History { ops })
}

fn op_from_edn(value: &Edn, position: u64) -> Result<Op, String> {
    if !matches!(value, Edn::Map(_)) {
        return Err(format!("expected an op map, found {}", value.describe()));
    }
    let required = |name: &str| value.get(name).ok_or_else(|| format!("missing :{name}"));
    let index = match value.get("index") {
        Some(index) => to_u64(index, "index")?,
        None => position,
    };
    let time_ns = to_u64(required("time")?, "time")?;
    let op_type = match to_keyword(required("type")?, "type")? {
        "invoke" => OpType::Invoke,
        "ok" => OpType::Ok,
        "fail" => OpType::Fail,
        "info" => OpType::Info,
        other => return Err(format!("unknown :type :{other}")),
    };
    let process = match required("process")? {
        Edn::Keyword(name) if name == "nemesis" => Process::Nemesis,
        other => Process::Client(to_u64(other, "process")?),
    };
    let f_keyword = to_keyword(required("f")?, "f")?;
    let f = match (process, f_keyword) {
        (Process::Nemesis, name) => F::Nemesis(name.to_string()),
        (_, "read") => F::Read,
        (_, "write") => F::Write,
        (_, "cas") => F::Cas,
        (_, "add") => F::Add,
        (_, "read-all") => F::ReadAll,
        (_, "timestamp") => F::Timestamp,
        (_, "chain-write") => F::ChainWrite,
        (_, "snapshot-read") => F::SnapshotRead,
        (_, "txn") if is_elle_rw_register(value.get("value").unwrap_or(&Edn::Nil), op_type) => F::RwTxn,
        (_, "txn") => F::Txn,
        (_, "rw-txn") => F::RwTxn,
        (_, "transfer") => F::Transfer,
        (_, "bank-read") => F::BankRead,
        (_, "stale-read") => F::StaleRead,
        (_, "batch-write") => F::BatchWrite,
        (_, "batch-read") => F::BatchRead,
        (_, "scan-write") => F::ScanWrite,
        (_, "scan") => F::Scan,
        (_, "range-fill") => F::RangeFill,
        (_, "delete-range") => F::DeleteRange,
        (_, "range-read") => F::RangeRead,
        (_, "lock-acquire") => F::LockAcquire,
        (_, "guarded-write") => F::GuardedWrite,
        (_, "lock-release") => F::LockRelease,
        (_, "watch-put") => F::WatchPut,
        (_, "watch-delete") => F::WatchDelete,
        (_, "watch") => F::Watch,
        (_, "ttl-put") => F::TtlPut,
        (_, "expire") => F::TtlExpire,
        (_, "ttl-read") => F::TtlRead,
        (_, "ttl-read-at") => F::TtlReadAt,
        (_, name) => F::Nemesis(name.to_string()),
    };
    let value_edn = value.get("value").unwrap_or(&Edn::Nil);
    let op_value = value_from_edn(&f, op_type, value_edn)?;
    let error = match value.get("error") {
        None | Some(Edn::Nil) => None,
        Some(Edn::String(text)) => Some(text.clone()),
        Some(Edn::Keyword(name)) => Some(name.clone()),
        Some(other) => Some(other.to_string()),
    };
    Ok(Op {
        index,
        time_ns,
        process,
        op_type,
        f,
        value: op_value,
        error,
    })
}

fn value_from_edn(f: &F, op_type: OpType, value: &Edn) -> Result<OpValue, String> {
    let shape_error = |expected: &str| format!("{} value must be {expected}, found {value}", f_name(f));
    match (f, value) {
        (F::ReadAll, Edn::Nil) => Ok(OpValue::ReadAll(None)),
        (F::Timestamp, Edn::Nil) => Ok(OpValue::Timestamp(None)),
        (F::BankRead, Edn::Nil) => Ok(OpValue::Balances(None)),
        (_, Edn::Nil) => Ok(OpValue::Nil),
        (F::Read | F::Write | F::StaleRead | F::BatchWrite | F::ScanWrite, Edn::Vector(items)) => {
            match items.as_slice() {
                [key, Edn::Nil] => Ok(OpValue::Register {
                    key: to_u64(key, "key")?,
                    value: None,
                }),
                [key, register_value] => Ok(OpValue::Register {
                    key: to_u64(key, "key")?,
                    value: Some(to_u64(register_value, "value")?),
                }),
                _ => Err(shape_error("[key value]")),
            }
        }
        (F::Cas, Edn::Vector(items)) => match items.as_slice() {
            [key, Edn::Vector(pair)] => match pair.as_slice() {
                [from, to] => Ok(OpValue::Cas {
                    key: to_u64(key, "key")?,
                    from: to_u64(from, "from")?,
                    to: to_u64(to, "to")?,
                }),
                _ => Err(shape_error("[key [from to]]")),
            },
            _ => Err(shape_error("[key [from to]]")),
        },
        (F::Add, element) => Ok(OpValue::Add(to_u64(element, "element")?)),
        (F::Timestamp, timestamp) => Ok(OpValue::Timestamp(Some(to_u64(timestamp, "timestamp")?))),
        (F::ReadAll, Edn::Vector(items)) => {
            let elements = items
                .iter()
                .map(|item| to_u64(item, "element"))
                .collect::<Result<_, _>>()?;
            Ok(OpValue::ReadAll(Some(elements)))
        }
        (F::ChainWrite, Edn::Vector(items)) => match items.as_slice() {
            [chain, n] => Ok(OpValue::ChainWrite {
                chain: to_u64(chain, "chain")?,
                n: to_u64(n, "n")?,
            }),
            _ => Err(shape_error("[chain n]")),
        },
        (F::SnapshotRead, Edn::Vector(items)) => match items.as_slice() {
            [chain, ts, values] => Ok(OpValue::SnapshotRead {
                chain: to_u64(chain, "chain")?,
                ts: to_optional_u64(ts, "ts")?,
                values: match values {
                    Edn::Nil => None,
                    Edn::Vector(values) => Some(
                        values
                            .iter()
                            .map(|value| to_optional_u64(value, "value"))
                            .collect::<Result<_, _>>()?,
                    ),
                    _ => return Err(shape_error("[chain ts [values]]")),
                },
            }),
            _ => Err(shape_error("[chain ts [values]]")),
        },
        (F::Txn, Edn::Vector(micro_ops)) => Ok(OpValue::Txn(
            micro_ops
                .iter()
                .map(micro_op_from_edn)
                .collect::<Result<_, _>>()?,
        )),
        (F::RwTxn, Edn::Vector(micro_ops)) => Ok(OpValue::RwTxn(
            micro_ops
                .iter()
                .map(|micro_op| rw_micro_op_from_edn(micro_op, op_type))
                .collect::<Result<_, _>>()?,
        )),
        (F::Transfer, Edn::Map(_)) => {
            let field = |name: &str| {
                value
                    .get(name)
                    .ok_or_else(|| shape_error("{:from a, :to b, :amount n}"))
                    .and_then(|field| to_u64(field, name))
            };
            Ok(OpValue::Transfer {
                from: field("from")?,
                to: field("to")?,
                amount: field("amount")?,
            })
        }
        (F::BankRead, Edn::Map(entries)) => {
            let mut balances = vec![None; entries.len()];
            for (account, balance) in entries {
                let slot = usize::try_from(to_u64(account, "account")?)
                    .ok()
                    .and_then(|account| balances.get_mut(account))
                    .ok_or_else(|| shape_error("{account balance ...} with accounts 0..n"))?;
                *slot = match balance {
                    Edn::Nil => None,
                    Edn::Integer(balance) => Some(
                        i64::try_from(*balance).map_err(|_| format!("balance {balance} is out of range"))?,
                    ),
                    other => return Err(format!("a balance must be an integer or nil, found {other}")),
                };
            }
            Ok(OpValue::Balances(Some(balances)))
        }
        (F::BatchRead, Edn::Vector(items)) => match items.as_slice() {
            [group, Edn::Vector(shards), ts, values] => Ok(OpValue::GroupRead {
                group: to_u64(group, "group")?,
                shards: shards
                    .iter()
                    .map(|shard| {
                        let shard = to_u64(shard, "shard")?;
                        u32::try_from(shard).map_err(|_| format!(":shard {shard} is out of range"))
                    })
                    .collect::<Result<_, _>>()?,
                ts: to_optional_u64(ts, "ts")?,
                values: optional_values(values)
                    .ok_or_else(|| shape_error("[group [shards] ts [values]]"))??,
            }),
            _ => Err(shape_error("[group [shards] ts [values]]")),
        },
        (F::Scan | F::RangeRead, Edn::Vector(items)) => match items.as_slice() {
            [range, page_limit, pages, ts, entries] => Ok(OpValue::Scan {
                range: to_u64(range, "range")?,
                page_limit: to_u32(page_limit, "page-limit")?,
                pages: to_u32(pages, "pages")?,
                ts: to_optional_u64(ts, "ts")?,
                entries: match entries {
                    Edn::Nil => None,
                    Edn::Vector(entries) => Some(
                        entries
                            .iter()
                            .map(|entry| match entry {
                                Edn::Vector(pair) => match pair.as_slice() {
                                    [key, value] => Ok((to_u64(key, "key")?, to_u64(value, "value")?)),
                                    _ => Err(shape_error("[range limit pages ts [[key value] ...]]")),
                                },
                                _ => Err(shape_error("[range limit pages ts [[key value] ...]]")),
                            })
                            .collect::<Result<_, _>>()?,
                    ),
                    _ => return Err(shape_error("[range limit pages ts [[key value] ...]]")),
                },
            }),
            _ => Err(shape_error("[range limit pages ts [[key value] ...]]")),
        },
        (F::RangeFill, Edn::Vector(items)) => match items.as_slice() {
            [range, keys, fill_value] => Ok(OpValue::RangeFill {
                range: to_u64(range, "range")?,
                keys: to_u64(keys, "keys")?,
                value: to_u64(fill_value, "value")?,
            }),
            _ => Err(shape_error("[range keys value]")),
        },
        (F::DeleteRange, range) => Ok(OpValue::Range(to_u64(range, "range")?)),
        (F::LockAcquire | F::LockRelease, Edn::Vector(items)) => match items.as_slice() {
            [lock, token] => Ok(OpValue::Lock {
                lock: to_u64(lock, "lock")?,
                token: to_optional_u64(token, "token")?,
            }),
            _ => Err(shape_error("[lock token]")),
        },
        (F::GuardedWrite, Edn::Vector(items)) => match items.as_slice() {
            [lock, token, seq, seen] => Ok(OpValue::GuardedWrite {
                lock: to_u64(lock, "lock")?,
                token: to_u64(token, "token")?,
                seq: to_optional_u64(seq, "seq")?,
                seen: match seen {
                    Edn::Nil => None,
                    Edn::Vector(pair) => match pair.as_slice() {
                        [seen_seq, seen_token] => {
                            Some((to_u64(seen_seq, "seen seq")?, to_u64(seen_token, "seen token")?))
                        }
                        _ => return Err(shape_error("[lock token seq [seen-seq seen-token]]")),
                    },
                    _ => return Err(shape_error("[lock token seq [seen-seq seen-token]]")),
                },
            }),
            _ => Err(shape_error("[lock token seq [seen-seq seen-token]]")),
        },
        (F::LockAcquire | F::LockRelease, _) => Err(shape_error("[lock token]")),
        (F::GuardedWrite, _) => Err(shape_error("[lock token seq [seen-seq seen-token]]")),
        (F::WatchPut | F::WatchDelete, Edn::Vector(items)) => match items.as_slice() {
            [key, written, result] => Ok(OpValue::KeyWrite {
                key: to_u64(key, "key")?,
                value: to_optional_u64(written, "value")?,
                result: to_optional_u64(result, "result")?,
            }),
            _ => Err(shape_error("[key value result]")),
        },
        (F::Watch, Edn::Vector(items)) => match items.as_slice() {
            [from, to, events] => Ok(OpValue::Watch {
                from: progress_from_edn(from)?,
                to: match to {
                    Edn::Nil => None,
                    to => Some(progress_from_edn(to)?),
                },
                events: match events {
                    Edn::Nil => None,
                    Edn::Vector(events) => Some(
                        events
                            .iter()
                            .map(watched_event_from_edn)
                            .collect::<Result<_, _>>()?,
                    ),
                    _ => return Err(shape_error("[from to [events]]")),
                },
            }),
            _ => Err(shape_error("[from to [events]]")),
        },
        (F::TtlPut | F::TtlExpire, Edn::Vector(items)) => match items.as_slice() {
            [key, written, ttl_ms] => Ok(OpValue::TtlWrite {
                key: to_u64(key, "key")?,
                value: to_optional_u64(written, "value")?,
                ttl_ms: to_u64(ttl_ms, "ttl-ms")?,
            }),
            _ => Err(shape_error("[key value ttl-ms]")),
        },
        (F::TtlRead | F::TtlReadAt, Edn::Vector(items)) => match items.as_slice() {
            [key, ts, read, expires_at_ts] => Ok(OpValue::TtlRead {
                key: to_u64(key, "key")?,
                ts: to_optional_u64(ts, "ts")?,
                value: to_optional_u64(read, "value")?,
                expires_at_ts: to_optional_u64(expires_at_ts, "expires-at-ts")?,
            }),
            _ => Err(shape_error("[key ts value expires-at-ts]")),
        },
        (F::WatchPut | F::WatchDelete, _) => Err(shape_error("[key value result]")),
        (F::Watch, _) => Err(shape_error("[from to [events]]")),
        (F::TtlPut | F::TtlExpire, _) => Err(shape_error("[key value ttl-ms]")),
        (F::TtlRead | F::TtlReadAt, _) => Err(shape_error("[key ts value expires-at-ts]")),
        (F::Nemesis(_), Edn::String(text)) => Ok(OpValue::Text(text.clone())),
        // Jepsen nemeses often carry structured values: keep them as their EDN text.
        (F::Nemesis(_), other) => Ok(OpValue::Text(other.to_string())),
        (F::Read | F::Write | F::StaleRead | F::BatchWrite | F::ScanWrite, _) => {
            Err(shape_error("[key value]"))
        }
        (F::BatchRead, _) => Err(shape_error("[group [shards] ts [values]]")),
        (F::Scan | F::RangeRead, _) => Err(shape_error("[range limit pages ts [[key value] ...]]")),
        (F::RangeFill, _) => Err(shape_error("[range keys value]")),
        (F::Cas, _) => Err(shape_error("[key [from to]]")),
        (F::ReadAll, _) => Err(shape_error("a vector or nil")),
        (F::ChainWrite, _) => Err(shape_error("[chain n]")),
        (F::SnapshotRead, _) => Err(shape_error("[chain ts [values]]")),
        (F::Txn | F::RwTxn, _) => Err(shape_error("a vector of micro-ops")),
        (F::Transfer, _) => Err(shape_error("{:from a, :to b, :amount n}")),
        (F::BankRead, _) => Err(shape_error("{account balance ...} or nil")),
    }
}

/// A vector of optional values (`Some(Ok(None))` for `nil`); `None` when it is neither.
fn optional_values(values: &Edn) -> Option<Result<Option<Vec<Option<u64>>>, String>> {
    match values {
        Edn::Nil => Some(Ok(None)),
        Edn::Vector(values) => Some(
            values
                .iter()
                .map(|value| to_optional_u64(value, "value"))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
        ),
        _ => None,
    }
}

fn to_u32(value: &Edn, what: &str) -> Result<u32, String> {
    let number = to_u64(value, what)?;
    u32::try_from(number).map_err(|_| format!(":{what} {number} is out of range"))
}

fn to_optional_u64(value: &Edn, what: &str) -> Result<Option<u64>, String> {
    match value {
        Edn::Nil => Ok(None),
        other => to_u64(other, what).map(Some),
    }
}

fn to_u64(value: &Edn, what: &str) -> Result<u64, String> {
    match value {
        Edn::Integer(integer) => u64::try_from(*integer)
            .map_err(|_| format!(":{what} {integer} is not an unsigned 64-bit integer")),
        other => Err(format!(":{what} must be an integer, found {}", other.describe())),
    }
}

fn to_keyword<'a>(value: &'a Edn, what: &str) -> Result<&'a str, String> {
    match value {
        Edn::Keyword(name) => Ok(name),
        other => Err(format!(":{what} must be a keyword, found {}", other.describe())),
    }
}

struct Parser<'a> {
    input: &'a str,
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Self {
        Self {
            input,
            bytes: input.as_bytes(),
            position: 0,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.position).copied()
    }

    fn line_and_column(&self, position: usize) -> (usize, usize) {
        let before = self.input.get(..position).unwrap_or(self.input);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
        let column = before.get(line_start..).map_or(0, |text| text.chars().count()) + 1;
        (line, column)
    }

    fn error_at(&self, position: usize, reason: &str) -> EdnError {
        let (line, column) = self.line_and_column(position);
        EdnError::Syntax {
            line,
            column,
            reason: reason.to_string(),
        }
    }

    fn error(&self, reason: &str) -> EdnError {
        self.error_at(self.position, reason)
    }

    fn skip_whitespace(&mut self) {
        while let Some(byte) = self.peek() {
            match byte {
                b' ' | b'\t' | b'\n' | b'\r' | b',' => self.position += 1,
                b';' => {
                    while let Some(byte) = self.peek() {
                        if byte == b'\n' {
                            break;
                        }
                        self.position += 1;
                    }
                }
                _ => return,
            }
        }
    }

    fn is_delimiter(byte: u8) -> bool {
        matches!(
            byte,
            b' ' | b'\t' | b'\n' | b'\r' | b',' | b';' | b'[' | b']' | b'{' | b'}' | b'"'
        )
    }

    /// The run of non-delimiter bytes starting at the current position (an atom's text).
    fn atom(&mut self) -> &'a str {
        let start = self.position;
        while let Some(byte) = self.peek() {
            if Self::is_delimiter(byte) {
                break;
            }
            self.position += 1;
        }
        // Delimiters are ASCII, so the run ends on a character boundary.
        self.input.get(start..self.position).unwrap_or("")
    }

    fn value(&mut self, depth: usize) -> Result<Edn, EdnError> {
        let start = self.position;
        let Some(byte) = self.peek() else {
            return Err(self.error("unexpected end of input, expected a value"));
        };
        match byte {
            b'{' | b'[' => {
                if depth >= MAX_DEPTH {
                    return Err(self.error("nesting too deep"));
                }
                self.position += 1;
                let close = if byte == b'{' { b'}' } else { b']' };
                let mut items = Vec::new();
                loop {
                    self.skip_whitespace();
                    match self.peek() {
                        None => return Err(self.error_at(start, "unclosed collection")),
                        Some(next) if next == close => {
                            self.position += 1;
                            break;
                        }
                        Some(_) => items.push(self.value(depth + 1)?),
                    }
                }
                if byte == b'[' {
                    return Ok(Edn::Vector(items));
                }
                if items.len() % 2 != 0 {
                    return Err(self.error_at(start, "map with an odd number of forms"));
                }
                let mut entries = Vec::with_capacity(items.len() / 2);
                let mut forms = items.into_iter();
                while let (Some(key), Some(value)) = (forms.next(), forms.next()) {
                    entries.push((key, value));
                }
                Ok(Edn::Map(entries))
            }
            b']' | b'}' => Err(self.error("unexpected closing delimiter")),
            b'"' => self.string(),
            b':' => {
                self.position += 1;
                let name = self.atom();
                if name.is_empty() || !name.chars().all(is_symbol_char) {
                    return Err(self.error_at(start, "invalid keyword"));
                }
                Ok(Edn::Keyword(name.to_string()))
            }
            _ => {
                let text = self.atom();
                if text == "nil" {
                    return Ok(Edn::Nil);
                }
                let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
                if digits.is_empty() || !digits.bytes().all(|digit| digit.is_ascii_digit()) {
                    return Err(self.error_at(start, &format!("unsupported token {text:?}")));
                }
                text.parse::<i128>()
                    .map(Edn::Integer)
                    .map_err(|_| self.error_at(start, "integer out of range"))
            }
        }
    }

    fn string(&mut self) -> Result<Edn, EdnError> {
        let start = self.position;
        self.position += 1;
        let mut text = String::new();
        loop {
            let run_start = self.position;
            while let Some(byte) = self.peek() {
                if byte == b'"' || byte == b'\\' {
                    break;
                }
                self.position += 1;
            }
            text.push_str(self.input.get(run_start..self.position).unwrap_or(""));
            match self.peek() {
                None => return Err(self.error_at(start, "unterminated string")),
                Some(b'"') => {
                    self.position += 1;
                    return Ok(Edn::String(text));
                }
                Some(_) => {
                    let escape_start = self.position;
                    self.position += 1;
                    let escaped = match self.peek() {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'n') => '\n',
                        Some(b't') => '\t',
                        Some(b'r') => '\r',
                        Some(b'u') => {
                            let hex = self.input.get(self.position + 1..self.position + 5).unwrap_or("");
                            let code = u32::from_str_radix(hex, 16)
                                .ok()
                                .filter(|_| hex.len() == 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
                                .and_then(char::from_u32)
                                .ok_or_else(|| self.error_at(escape_start, "invalid \\u escape"))?;
                            self.position += 4;
                            code
                        }
                        _ => return Err(self.error_at(escape_start, "invalid string escape")),
                    };
                    self.position += 1;
                    text.push(escaped);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn op(index: u64, process: Process, op_type: OpType, f: F, value: OpValue) -> Op {
        Op {
            index,
            time_ns: index * 1000,
            process,
            op_type,
            f,
            value,
            error: None,
        }
    }

    fn sample_history() -> History {
        let client = Process::Client(0);
        let mut failed_cas = op(
            5,
            Process::Client(1),
            OpType::Fail,
            F::Cas,
            OpValue::Cas {
                key: 3,
                from: 7,
                to: 8,
            },
        );
        failed_cas.error = Some("timed out: \"deadline\"\n\\retry".into());
        History::new(vec![
            op(
                0,
                client,
                OpType::Invoke,
                F::Write,
                OpValue::Register {
                    key: 3,
                    value: Some(7),
                },
            ),
            op(
                1,
                client,
                OpType::Ok,
                F::Write,
                OpValue::Register {
                    key: 3,
                    value: Some(7),
                },
            ),
            op(
                2,
                client,
                OpType::Invoke,
                F::Read,
                OpValue::Register { key: 3, value: None },
            ),
            op(
                3,
                Process::Nemesis,
                OpType::Info,
                F::Nemesis("kill".into()),
                OpValue::Text("kill -9 n2".into()),
            ),
            op(
                4,
                Process::Client(1),
                OpType::Invoke,
                F::Cas,
                OpValue::Cas {
                    key: 3,
                    from: 7,
                    to: 8,
                },
            ),
            failed_cas,
            op(
                6,
                client,
                OpType::Ok,
                F::Read,
                OpValue::Register {
                    key: 3,
                    value: Some(7),
                },
            ),
            op(7, Process::Client(2), OpType::Invoke, F::Add, OpValue::Add(11)),
            op(8, Process::Client(2), OpType::Info, F::Add, OpValue::Nil),
            op(
                9,
                Process::Client(3),
                OpType::Invoke,
                F::ReadAll,
                OpValue::ReadAll(None),
            ),
            op(
                10,
                Process::Client(3),
                OpType::Ok,
                F::ReadAll,
                OpValue::ReadAll(Some(vec![11, 2, 3])),
            ),
            op(
                11,
                Process::Client(4),
                OpType::Invoke,
                F::ChainWrite,
                OpValue::ChainWrite { chain: 2, n: 5 },
            ),
            op(
                12,
                Process::Client(5),
                OpType::Invoke,
                F::SnapshotRead,
                OpValue::SnapshotRead {
                    chain: 2,
                    ts: None,
                    values: None,
                },
            ),
            op(
                13,
                Process::Client(4),
                OpType::Ok,
                F::ChainWrite,
                OpValue::ChainWrite { chain: 2, n: 5 },
            ),
            op(
                14,
                Process::Client(5),
                OpType::Ok,
                F::SnapshotRead,
                OpValue::SnapshotRead {
                    chain: 2,
                    ts: Some(90),
                    values: Some(vec![Some(4), Some(5), Some(2), None]),
                },
            ),
            op(
                15,
                Process::Client(6),
                OpType::Invoke,
                F::Txn,
                OpValue::Txn(vec![
                    MicroOp::Append { key: 3, value: 7 },
                    MicroOp::Read { key: 3, values: None },
                ]),
            ),
            op(
                16,
                Process::Client(6),
                OpType::Ok,
                F::Txn,
                OpValue::Txn(vec![
                    MicroOp::Append { key: 3, value: 7 },
                    MicroOp::Read {
                        key: 3,
                        values: Some(vec![1, 2, 7]),
                    },
                ]),
            ),
            op(
                17,
                Process::Client(7),
                OpType::Invoke,
                F::Txn,
                OpValue::Txn(vec![MicroOp::Read { key: 4, values: None }]),
            ),
            op(
                18,
                Process::Client(7),
                OpType::Ok,
                F::Txn,
                OpValue::Txn(vec![MicroOp::Read {
                    key: 4,
                    values: Some(Vec::new()),
                }]),
            ),
            op(
                19,
                Process::Client(8),
                OpType::Invoke,
                F::Transfer,
                OpValue::Transfer {
                    from: 1,
                    to: 2,
                    amount: 5,
                },
            ),
            op(
                20,
                Process::Client(9),
                OpType::Invoke,
                F::BankRead,
                OpValue::Balances(None),
            ),
            op(
                21,
                Process::Client(9),
                OpType::Ok,
                F::BankRead,
                OpValue::Balances(Some(vec![Some(100), Some(-5), None])),
            ),
            op(
                22,
                Process::Client(10),
                OpType::Invoke,
                F::RwTxn,
                OpValue::RwTxn(vec![
                    RwMicroOp::Read { key: 3, value: None },
                    RwMicroOp::Write { key: 3, value: 9 },
                    RwMicroOp::Read { key: 4, value: None },
                ]),
            ),
            op(
                23,
                Process::Client(10),
                OpType::Ok,
                F::RwTxn,
                OpValue::RwTxn(vec![
                    RwMicroOp::Read {
                        key: 3,
                        value: Some(Some(7)),
                    },
                    RwMicroOp::Write { key: 3, value: 9 },
                    RwMicroOp::Read {
                        key: 4,
                        value: Some(None),
                    },
                ]),
            ),
        ])
    }

    /// The export matches Jepsen's EDN layout key for key.
    #[test]
    fn export_matches_jepsen_layout() {
        let edn = history_to_edn(&sample_history());
        let lines: Vec<&str> = edn.lines().collect();
        assert_eq!(
            lines[0],
            "{:index 0, :time 0, :type :invoke, :process 0, :f :write, :value [3 7]}"
        );
        assert_eq!(
            lines[2],
            "{:index 2, :time 2000, :type :invoke, :process 0, :f :read, :value [3 nil]}"
        );
        assert_eq!(
            lines[3],
            "{:index 3, :time 3000, :type :info, :process :nemesis, :f :kill, :value \"kill -9 n2\"}"
        );
        assert_eq!(
            lines[5],
            "{:index 5, :time 5000, :type :fail, :process 1, :f :cas, :value [3 [7 8]], \
             :error \"timed out: \\\"deadline\\\"\\n\\\\retry\"}"
        );
        assert_eq!(
            lines[7],
            "{:index 7, :time 7000, :type :invoke, :process 2, :f :add, :value 11}"
        );
        assert_eq!(
            lines[9],
            "{:index 9, :time 9000, :type :invoke, :process 3, :f :read-all, :value nil}"
        );
        assert_eq!(
            lines[10],
            "{:index 10, :time 10000, :type :ok, :process 3, :f :read-all, :value [11 2 3]}"
        );
        assert_eq!(
            lines[11],
            "{:index 11, :time 11000, :type :invoke, :process 4, :f :chain-write, :value [2 5]}"
        );
        assert_eq!(
            lines[12],
            "{:index 12, :time 12000, :type :invoke, :process 5, :f :snapshot-read, :value [2 nil nil]}"
        );
        assert_eq!(
            lines[14],
            "{:index 14, :time 14000, :type :ok, :process 5, :f :snapshot-read, :value [2 90 [4 5 2 nil]]}"
        );
        assert_eq!(
            lines[15],
            "{:index 15, :time 15000, :type :invoke, :process 6, :f :txn, :value [[:append 3 7] [:r 3 nil]]}"
        );
        assert_eq!(
            lines[16],
            "{:index 16, :time 16000, :type :ok, :process 6, :f :txn, :value [[:append 3 7] [:r 3 [1 2 7]]]}"
        );
        assert_eq!(
            lines[18],
            "{:index 18, :time 18000, :type :ok, :process 7, :f :txn, :value [[:r 4 []]]}"
        );
        assert_eq!(
            lines[19],
            "{:index 19, :time 19000, :type :invoke, :process 8, :f :transfer, :value {:from 1, :to 2, :amount 5}}"
        );
        assert_eq!(
            lines[20],
            "{:index 20, :time 20000, :type :invoke, :process 9, :f :bank-read, :value nil}"
        );
        assert_eq!(
            lines[21],
            "{:index 21, :time 21000, :type :ok, :process 9, :f :bank-read, :value {0 100, 1 -5, 2 nil}}"
        );
        assert_eq!(
            lines[22],
            "{:index 22, :time 22000, :type :invoke, :process 10, :f :rw-txn, :value [[:r 3 nil] [:w 3 9] [:r 4 nil]]}"
        );
        assert_eq!(
            lines[23],
            "{:index 23, :time 23000, :type :ok, :process 10, :f :rw-txn, :value [[:r 3 7] [:w 3 9] [:r 4 nil]]}"
        );
    }

    /// A list-append history as Elle writes it (no commas, no `:index`) reads as transactions.
    #[test]
    fn parses_elle_list_append_history() {
        let text = "{:type :invoke, :f :txn, :value [[:r 1 nil] [:append 1 4]], :process 0, :time 5}\n\
                    {:type :ok :f :txn :value [[:r 1 [2 3]] [:append 1 4]] :process 0 :time 9}\n\
                    {:type :fail :f :txn :value [[:append 2 1]] :process 1 :time 11 :error :conflict}\n";
        let history = parse_history(text).expect("parse");
        assert_eq!(history.ops.len(), 3);
        assert_eq!(history.ops[1].f, F::Txn);
        assert_eq!(
            history.ops[1].value,
            OpValue::Txn(vec![
                MicroOp::Read {
                    key: 1,
                    values: Some(vec![2, 3])
                },
                MicroOp::Append { key: 1, value: 4 },
            ])
        );
        assert_eq!(
            history.ops[2].value,
            OpValue::Txn(vec![MicroOp::Append { key: 2, value: 1 }])
        );
        for malformed in [
            "{:type :ok :f :txn :value [[:w 1 2] [:append 1 3]] :process 0 :time 1}",
            "{:type :ok :f :txn :value [[:r 1 [2]] [:r 1 3]] :process 0 :time 1}",
            "{:type :ok :f :txn :value [[:append 1]] :process 0 :time 1}",
            "{:type :ok :f :txn :value [[:r 1 [2 :x]]] :process 0 :time 1}",
            "{:type :ok :f :txn :value 7 :process 0 :time 1}",
        ] {
            assert!(
                matches!(parse_history(malformed), Err(EdnError::InvalidOp { .. })),
                "accepted {malformed:?}"
            );
        }
    }

    /// An rw-register history as Elle writes it (`:f :txn`, no `:index`) reads as rw-register
    /// transactions, the read-only invocations whose reads are all `nil` included (they take
    /// the flavour of their completion); `[:r k nil]` found no value in an `:ok` op.
    #[test]
    fn parses_elle_rw_register_history() {
        let text = "{:type :invoke, :f :txn, :value [[:r 1 nil] [:w 1 4]], :process 0, :time 5}\n\
                    {:type :invoke :f :txn :value [[:r 2 nil]] :process 1 :time 6}\n\
                    {:type :ok :f :txn :value [[:r 1 3] [:w 1 4]] :process 0 :time 9}\n\
                    {:type :ok :f :txn :value [[:r 2 nil]] :process 1 :time 10}\n\
                    {:type :invoke :f :txn :value [[:r 2 nil]] :process 1 :time 11}\n\
                    {:type :fail :f :txn :value [[:r 2 nil]] :process 1 :time 12 :error :conflict}\n\
                    {:type :invoke :f :txn :value [[:r 2 nil]] :process 2 :time 13}\n\
                    {:type :info :f :txn :value [[:r 2 nil]] :process 2 :time 14}\n";
        let history = parse_history(text).expect("parse");
        let fs: Vec<&F> = history.ops.iter().map(|op| &op.f).collect();
        assert_eq!(
            fs,
            [
                &F::RwTxn,
                &F::RwTxn,
                &F::RwTxn,
                &F::RwTxn,
                &F::Txn,
                &F::Txn,
                &F::Txn,
                &F::Txn
            ],
            "a read-only transaction that never completed ok stays ambiguous (list-append)"
        );
        assert_eq!(
            history.ops[0].value,
            OpValue::RwTxn(vec![
                RwMicroOp::Read { key: 1, value: None },
                RwMicroOp::Write { key: 1, value: 4 },
            ])
        );
        assert_eq!(
            history.ops[1].value,
            OpValue::RwTxn(vec![RwMicroOp::Read { key: 2, value: None }])
        );
        assert_eq!(
            history.ops[2].value,
            OpValue::RwTxn(vec![
                RwMicroOp::Read {
                    key: 1,
                    value: Some(Some(3))
                },
                RwMicroOp::Write { key: 1, value: 4 },
            ])
        );
        assert_eq!(
            history.ops[3].value,
            OpValue::RwTxn(vec![RwMicroOp::Read {
                key: 2,
                value: Some(None)
            }])
        );
        history.pairs().expect("invocations pair with their completions");
        for malformed in [
            "{:type :ok :f :rw-txn :value [[:append 1 2]] :process 0 :time 1}",
            "{:type :ok :f :rw-txn :value [[:r 1 [2]]] :process 0 :time 1}",
            "{:type :ok :f :rw-txn :value [[:w 1 nil]] :process 0 :time 1}",
            "{:type :ok :f :rw-txn :value [[:w 1]] :process 0 :time 1}",
            "{:type :ok :f :rw-txn :value 7 :process 0 :time 1}",
        ] {
            assert!(
                matches!(parse_history(malformed), Err(EdnError::InvalidOp { .. })),
                "accepted {malformed:?}"
            );
        }
    }

    /// Export then parse gives back exactly the same ops.
    #[test]
    fn round_trip_preserves_ops() {
        let history = sample_history();
        let parsed = parse_history(&history_to_edn(&history)).expect("parse our own export");
        assert_eq!(parsed, history);
    }

    /// Malformed documents and malformed ops are errors with a position, never panics.
    #[test]
    fn malformed_input_is_an_error() {
        let cases = [
            "{:index 0",
            "{:index 0 :time}",
            "[1 2",
            "]",
            "\"unterminated",
            "\"bad escape \\q\"",
            "\"bad unicode \\u12\"",
            "\"bad unicode \\u12zz\"",
            "\"\\u",
            ":",
            "1.5",
            "99999999999999999999999999999999999999999999",
            "true",
            "#{1 2}",
            "é",
        ];
        for case in cases {
            assert!(
                matches!(parse_all(case), Err(EdnError::Syntax { .. })),
                "accepted {case:?}"
            );
        }
        let deep = "[".repeat(MAX_DEPTH + 10);
        assert!(parse(&deep).is_err());
        let invalid_ops = [
            "[1 2]",
            "{:index 0, :time 1, :type :invoke, :process 0, :f :write, :value [1]}",
            "{:index 0, :time 1, :type :invoke, :process 0, :f :write, :value [-1 2]}",
            "{:index 0, :time 1, :type :maybe, :process 0, :f :write, :value nil}",
            "{:index 0, :type :invoke, :process 0, :f :write, :value nil}",
            "{:index 0, :time 1, :type :invoke, :process \"p\", :f :write, :value nil}",
            "{:index 0, :time 1, :type :invoke, :process 0, :f :cas, :value [1 [2]]}",
            "{:index 0, :time 1, :type :ok, :process 0, :f :read-all, :value [1 :x]}",
            "{:index 0, :time 1, :type :ok, :process 0, :f :add, :value \"x\"}",
            "{:index 0, :time 1, :type :ok, :process 0, :f :chain-write, :value [1]}",
            "{:index 0, :time 1, :type :ok, :process 0, :f :chain-write, :value 1}",
            "{:index 0, :time 1, :type :ok, :process 0, :f :snapshot-read, :value [1 2]}",
            "{:index 0, :time 1, :type :ok, :process 0, :f :snapshot-read, :value [1 2 3]}",
            "{:index 0, :time 1, :type :ok, :process 0, :f :snapshot-read, :value [1 2 [3 :x]]}",
        ];
        for case in invalid_ops {
            assert!(
                matches!(parse_history(case), Err(EdnError::InvalidOp { .. })),
                "accepted {case:?}"
            );
        }
        assert_eq!(
            parse_history("\n\n  {:index 0 :time}"),
            Err(EdnError::Syntax {
                line: 3,
                column: 3,
                reason: "map with an odd number of forms".into()
            })
        );
        // The line of a bad op, several ops (and a comment line) in.
        let ops = "{:time 1, :type :invoke, :process 0, :f :add, :value 1}\n\
                   ; a comment\n\
                   {:time 2, :type :ok, :process 0, :f :add, :value 1} {:time 3, :type :ok}\n";
        assert!(
            matches!(parse_history(ops), Err(EdnError::InvalidOp { line: 3, .. })),
            "{:?}",
            parse_history(ops)
        );
    }

    /// The parser accepts Jepsen's own spelling: no commas, comments, no `:index`, extra keys.
    #[test]
    fn parses_jepsen_written_history() {
        let text = "; a jepsen history\n\
                    {:type :invoke :f :read :value [1 nil] :process 4 :time 10}\n\
                    {:type :ok :f :read :value [1 5] :process 4 :time 20 :node \"n1\" :error :timeout}\n";
        let history = parse_history(text).expect("parse");
        assert_eq!(history.ops.len(), 2);
        assert_eq!(history.ops[1].index, 1);
        assert_eq!(
            history.ops[1].value,
            OpValue::Register {
                key: 1,
                value: Some(5)
            }
        );
        assert_eq!(history.ops[1].error.as_deref(), Some("timeout"));
    }

    fn arbitrary_op() -> impl Strategy<Value = Op> {
        let client_call = prop_oneof![
            (any::<u64>(), proptest::option::of(any::<u64>()))
                .prop_map(|(key, value)| (F::Read, OpValue::Register { key, value })),
            (any::<u64>(), proptest::option::of(any::<u64>()))
                .prop_map(|(key, value)| (F::Write, OpValue::Register { key, value })),
            (any::<u64>(), any::<u64>(), any::<u64>())
                .prop_map(|(key, from, to)| (F::Cas, OpValue::Cas { key, from, to })),
            any::<u64>().prop_map(|element| (F::Add, OpValue::Add(element))),
            proptest::option::of(proptest::collection::vec(any::<u64>(), 0..5))
                .prop_map(|elements| (F::ReadAll, OpValue::ReadAll(elements))),
            proptest::option::of(any::<u64>())
                .prop_map(|timestamp| (F::Timestamp, OpValue::Timestamp(timestamp))),
            (any::<u64>(), any::<u64>())
                .prop_map(|(chain, n)| (F::ChainWrite, OpValue::ChainWrite { chain, n })),
            (
                any::<u64>(),
                proptest::option::of(any::<u64>()),
                proptest::option::of(proptest::collection::vec(
                    proptest::option::of(any::<u64>()),
                    0..5
                )),
            )
                .prop_map(|(chain, ts, values)| (
                    F::SnapshotRead,
                    OpValue::SnapshotRead { chain, ts, values }
                )),
            proptest::collection::vec(
                prop_oneof![
                    (any::<u64>(), any::<u64>()).prop_map(|(key, value)| MicroOp::Append { key, value }),
                    (
                        any::<u64>(),
                        proptest::option::of(proptest::collection::vec(any::<u64>(), 0..4))
                    )
                        .prop_map(|(key, values)| MicroOp::Read { key, values }),
                ],
                0..4
            )
            .prop_map(|micro_ops| (F::Txn, OpValue::Txn(micro_ops))),
            proptest::collection::vec(
                prop_oneof![
                    (any::<u64>(), any::<u64>()).prop_map(|(key, value)| RwMicroOp::Write { key, value }),
                    (
                        any::<u64>(),
                        proptest::option::of(proptest::option::of(any::<u64>()))
                    )
                        .prop_map(|(key, value)| RwMicroOp::Read { key, value }),
                ],
                0..4
            )
            .prop_map(|micro_ops| (F::RwTxn, OpValue::RwTxn(micro_ops))),
            (any::<u64>(), any::<u64>(), any::<u64>())
                .prop_map(|(from, to, amount)| (F::Transfer, OpValue::Transfer { from, to, amount })),
            proptest::option::of(proptest::collection::vec(
                proptest::option::of(any::<i64>()),
                0..5
            ))
            .prop_map(|balances| (F::BankRead, OpValue::Balances(balances))),
            (any::<u64>(), proptest::option::of(any::<u64>()))
                .prop_map(|(lock, token)| (F::LockAcquire, OpValue::Lock { lock, token })),
            (
                any::<u64>(),
                any::<u64>(),
                proptest::option::of(any::<u64>()),
                proptest::option::of((any::<u64>(), any::<u64>()))
            )
                .prop_map(|(lock, token, seq, seen)| (
                    F::GuardedWrite,
                    OpValue::GuardedWrite {
                        lock,
                        token,
                        seq,
                        seen
                    }
                )),
            Just((F::SnapshotRead, OpValue::Nil)),
            Just((F::Write, OpValue::Nil)),
        ];
        let client =
            (any::<u64>(), client_call).prop_map(|(client, (f, value))| (Process::Client(client), f, value));
        let nemesis =
            ("[a-z][a-z0-9-]{0,12}", proptest::option::of(any::<String>())).prop_map(|(name, text)| {
                (
                    Process::Nemesis,
                    F::Nemesis(name),
                    text.map_or(OpValue::Nil, OpValue::Text),
                )
            });
        let op_type = prop_oneof![
            Just(OpType::Invoke),
            Just(OpType::Ok),
            Just(OpType::Fail),
            Just(OpType::Info)
        ];
        (
            any::<u64>(),
            any::<u64>(),
            op_type,
            prop_oneof![client, nemesis],
            proptest::option::of(any::<String>()),
        )
            .prop_map(|(index, time_ns, op_type, (process, f, value), error)| Op {
                index,
                time_ns,
                process,
                op_type,
                f,
                value: recordable(op_type, value),
                error,
            })
    }

    /// `value` as the workloads record it in an op of type `op_type`: an rw-register read
    /// has its result in an `ok` op (`nil`: no value) and none in any other.
    fn recordable(op_type: OpType, value: OpValue) -> OpValue {
        if let OpValue::Txn(micro_ops) = value {
            // Likewise every list-append read of an `ok` transaction has its list.
            return OpValue::Txn(
                micro_ops
                    .into_iter()
                    .map(|micro_op| match micro_op {
                        MicroOp::Read { key, values: None } if op_type == OpType::Ok => MicroOp::Read {
                            key,
                            values: Some(Vec::new()),
                        },
                        other => other,
                    })
                    .collect(),
            );
        }
        let OpValue::RwTxn(micro_ops) = value else {
            return value;
        };
        OpValue::RwTxn(
            micro_ops
                .into_iter()
                .map(|micro_op| match micro_op {
                    RwMicroOp::Read { key, value } if op_type == OpType::Ok => RwMicroOp::Read {
                        key,
                        value: Some(value.flatten()),
                    },
                    RwMicroOp::Read {
                        key,
                        value: Some(None),
                    } => RwMicroOp::Read { key, value: None },
                    other => other,
                })
                .collect(),
        )
    }

    proptest! {
        /// Any op we can record survives export and parse unchanged (strings of any text).
        #[test]
        fn round_trip_any_op(ops in proptest::collection::vec(arbitrary_op(), 0..20)) {
            let history = History::new(ops);
            let parsed = parse_history(&history_to_edn(&history));
            prop_assert_eq!(parsed, Ok(history));
        }

        /// Any cut or one-character deletion of a valid export is read or rejected, never a panic.
        #[test]
        fn damaged_export_never_panics(cut in any::<proptest::sample::Index>(), delete in any::<proptest::sample::Index>()) {
            let text = history_to_edn(&sample_history());
            let characters: Vec<char> = text.chars().collect();
            let truncated: String = characters[..cut.index(characters.len())].iter().collect();
            let _ = parse_history(&truncated);
            let mut damaged = characters.clone();
            damaged.remove(delete.index(damaged.len()));
            let damaged: String = damaged.into_iter().collect();
            let _ = parse_history(&damaged);
        }

        /// Arbitrary text never makes the parser panic.
        #[test]
        fn parser_never_panics(text in ".{0,64}") {
            let _ = parse_history(&text);
        }
    }
}
