//! Elle's list-append checker (Kingsbury & Alvaro, "Elle: Inferring Isolation Anomalies from
//! Experimental Observations", VLDB 2020), in Rust, for histories of `:txn` operations made of
//! `[:append k v]` and `[:r k list]` micro-operations.
//!
//! Why list-append: every value is appended at most once per key and every read returns the
//! whole list, so one read shows not only which versions of a key exist but the order in which
//! they were installed. That recovers the version order Adya's dependency graph needs without
//! access to the database's internals:
//!
//! 1. **Version order** (`txns`): the longest read of a key is its version order; every other
//!    read must be a prefix of it (`incompatible-order`). Appends no read observed have no known
//!    position and produce no edge.
//! 2. **Per-read anomalies**: a read observing a value whose transaction failed (`G1a`), ending
//!    at a value that is not its writer's last append to the key (`G1b`), holding a value nobody
//!    appended (`garbage-read`); a value appended twice (`duplicate-append`); a read after the
//!    transaction's own appends that does not end with them (`internal`); two committed
//!    transactions that read the same version of a key and both appended to it (`lost-update`).
//! 3. **Dependency graph** (`graph`) over committed transactions (`ok`, and `info` ones whose
//!    appends some read observed): `ww`, `wr` and `rw` edges from the version orders, and
//!    `realtime` edges (T1 completed before T2 was invoked), transitively reduced.
//! 4. **Cycles** (`cycles`): strongly connected components (iterative Tarjan), then inside
//!    each a breadth-first search for a short cycle, classified by its edges as Elle does:
//!    `G0`, `G1c`, `G-single`, `G-nonadjacent`, `G2-item`, and their `-realtime` variants.
//!
//! An [`Isolation`] level forbids a set of [`AnomalyKind`]s ([`Isolation::forbidden`]); the
//! verdict is invalid when any forbidden kind was found. Every anomaly found is listed, also
//! those the level allows (the notes say which), so a run at READ COMMITTED can show that the
//! anomalies it allows do happen. [`analyze`] returns the full [`Report`] independently of a
//! level.
//!
//! The rw-register checker ([`rw_register`]: `:rw-txn` operations of `[:w k v]` and
//! `[:r k v]`) shares the graph, the cycle search, the kinds and the levels; a register read
//! does not show the version order, so `versions` infers it per key from what the checked
//! level guarantees, and its report is made for that level.
//!
//! Transactions are named `T<n>`, `n` being the history index of their invocation.
//!
//! Reads and the transaction's own appends. A transaction reads its own buffered appends: a
//! read of `k` after appending to `k` returns the committed list followed by the transaction's
//! appends. The checker removes that suffix before using the read as an observation of the
//! committed order, because at the weaker levels a transaction's appends land after whatever
//! committed in between, not right after the list it read. `internal` is therefore only "a read
//! after own appends ends with them, and no read shows an own append elsewhere"; two reads of
//! the same key in one transaction may differ (READ COMMITTED reads each at a fresh timestamp),
//! and the dependency edges of both reads catch that at the levels that forbid it.
//!
//! Limits: the searches that find a *more specific* cycle class (a `G-single` rather than any
//! cycle through an anti-dependency, a `G0-realtime` rather than any cycle through a realtime
//! edge) try a bounded number of starting edges under a global work budget. The searches that
//! decide each level's verdict are linear and never skipped: every non-trivial component of
//! the `ww`, `ww`+`wr`, `ww`+`wr`+`rw` and all-edges graphs yields a cycle, and a closed walk
//! whose anti-dependency edges are never adjacent (what snapshot isolation forbids) is found
//! through a product graph whenever one exists, then split into a simple cycle (or shown to
//! contain a `ww`/`wr` cycle, which is forbidden too). Each component reports at most one cycle
//! per search, not every cycle.
//!
//! Differences from Elle: `internal` is the weaker check above; a value nobody appended is a
//! `garbage-read`; a committed append after a failed one in a version order is not a separate
//! `dirty-update` (the read that shows both is a `G1a`); no process-order edges; `lost-update`
//! compares the last read of a key before a transaction's first append to it.

mod cycles;
mod graph;
pub mod rw_register;
mod txns;
mod versions;

#[cfg(test)]
mod rw_register_tests;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::checker::{Anomaly, Checker, Listing, Validity, Verdict};
use crate::history::{History, HistoryError};

/// Name of this checker in verdicts.
pub const CHECKER_NAME: &str = "list-append";

/// Most anomalies of one kind listed in a report (all are counted).
pub const MAX_LISTED_PER_KIND: usize = 16;

/// The isolation levels a list-append history can be checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// Adya PL-1: no dirty writes (`G0`).
    ReadUncommitted,
    /// Adya PL-2: no dirty writes, aborted reads, intermediate reads or `ww`/`wr` cycles.
    ReadCommitted,
    /// Snapshot isolation (as in PostgreSQL): additionally no cycle whose anti-dependency edges
    /// are all non-adjacent, and no lost update; write skew (`G2-item`) is allowed.
    RepeatableRead,
    /// Adya PL-3: no dependency cycle at all.
    Serializable,
    /// Serializable in an order that respects real time: no cycle even with `realtime` edges.
    StrictSerializable,
}

impl Isolation {
    /// Every level, weakest first.
    pub const ALL: [Isolation; 5] = [
        Isolation::ReadUncommitted,
        Isolation::ReadCommitted,
        Isolation::RepeatableRead,
        Isolation::Serializable,
        Isolation::StrictSerializable,
    ];

    /// The level's name, as serialized.
    pub fn name(self) -> &'static str {
        match self {
            Isolation::ReadUncommitted => "read-uncommitted",
            Isolation::ReadCommitted => "read-committed",
            Isolation::RepeatableRead => "repeatable-read",
            Isolation::Serializable => "serializable",
            Isolation::StrictSerializable => "strict-serializable",
        }
    }

    /// The anomaly kinds this level forbids (Adya; Elle's `direct-proscribed-anomalies`).
    /// Each level forbids everything the weaker levels forbid. The structural kinds
    /// (`duplicate-append`, `incompatible-order`, `internal`, `garbage-read`) break the
    /// list-append or rw-register model itself and are forbidden at every level; so is
    /// `cyclic-versions`, which the rw-register checker reports only when what the level
    /// checked guarantees contradicts itself.
    pub fn forbidden(self) -> &'static [AnomalyKind] {
        // `AnomalyKind::ALL` lists the kinds grouped by the weakest level forbidding them.
        let kinds = &AnomalyKind::ALL;
        match self {
            // The four structural kinds, cyclic-versions and G0.
            Isolation::ReadUncommitted => &kinds[..6],
            // + G1a, G1b, G1c.
            Isolation::ReadCommitted => &kinds[..9],
            // + G-single, G-nonadjacent, lost-update.
            Isolation::RepeatableRead => &kinds[..12],
            // + G2-item: every cycle without realtime edges.
            Isolation::Serializable => &kinds[..13],
            // + the realtime variants.
            Isolation::StrictSerializable => kinds,
        }
    }

    /// Whether this level forbids `kind`.
    pub fn forbids(self, kind: AnomalyKind) -> bool {
        self.forbidden().contains(&kind)
    }
}

impl fmt::Display for Isolation {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        out.write_str(self.name())
    }
}

/// The kinds of anomaly the list-append and rw-register checkers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AnomalyKind {
    /// The same value appended twice to one key, or a read holding a value twice.
    #[serde(rename = "duplicate-append")]
    DuplicateAppend,
    /// Two reads of a key of which neither is a prefix of the other.
    #[serde(rename = "incompatible-order")]
    IncompatibleOrder,
    /// A read inconsistent with its own transaction's earlier appends (or writes).
    #[serde(rename = "internal")]
    Internal,
    /// A read holding a value no transaction appended (or wrote) to that key.
    #[serde(rename = "garbage-read")]
    GarbageRead,
    /// rw-register: the version order of a key that the checked level guarantees is cyclic
    /// (e.g. writes follow reads one way and first-committer-wins the other).
    #[serde(rename = "cyclic-versions")]
    CyclicVersions,
    /// A cycle of write-write dependencies (dirty write).
    G0,
    /// Aborted read: a committed read observed a value whose transaction failed.
    G1a,
    /// Intermediate read: a read ends at a value its writer later followed with another
    /// append (or write) to the same key.
    G1b,
    /// A cycle of write-write and write-read dependencies, at least one write-read.
    G1c,
    /// A cycle with exactly one anti-dependency (`rw`) edge (read skew).
    #[serde(rename = "G-single")]
    GSingle,
    /// A cycle with several anti-dependency edges, no two adjacent.
    #[serde(rename = "G-nonadjacent")]
    GNonadjacent,
    /// Two committed transactions read the same version of a key and both appended to (or
    /// wrote) it.
    #[serde(rename = "lost-update")]
    LostUpdate,
    /// A cycle with anti-dependency edges, two of them adjacent (write skew).
    #[serde(rename = "G2-item")]
    G2Item,
    /// [`AnomalyKind::G0`] with real-time edges.
    #[serde(rename = "G0-realtime")]
    G0Realtime,
    /// [`AnomalyKind::G1c`] with real-time edges.
    #[serde(rename = "G1c-realtime")]
    G1cRealtime,
    /// [`AnomalyKind::GSingle`] with real-time edges.
    #[serde(rename = "G-single-realtime")]
    GSingleRealtime,
    /// [`AnomalyKind::GNonadjacent`] with real-time edges.
    #[serde(rename = "G-nonadjacent-realtime")]
    GNonadjacentRealtime,
    /// [`AnomalyKind::G2Item`] with real-time edges.
    #[serde(rename = "G2-item-realtime")]
    G2ItemRealtime,
}

impl AnomalyKind {
    /// Every kind, grouped by the weakest level that forbids it ([`Isolation::forbidden`]).
    pub const ALL: [AnomalyKind; 18] = [
        AnomalyKind::DuplicateAppend,
        AnomalyKind::IncompatibleOrder,
        AnomalyKind::Internal,
        AnomalyKind::GarbageRead,
        AnomalyKind::CyclicVersions,
        AnomalyKind::G0,
        AnomalyKind::G1a,
        AnomalyKind::G1b,
        AnomalyKind::G1c,
        AnomalyKind::GSingle,
        AnomalyKind::GNonadjacent,
        AnomalyKind::LostUpdate,
        AnomalyKind::G2Item,
        AnomalyKind::G0Realtime,
        AnomalyKind::G1cRealtime,
        AnomalyKind::GSingleRealtime,
        AnomalyKind::GNonadjacentRealtime,
        AnomalyKind::G2ItemRealtime,
    ];

    /// The kind's name, as in Elle (and in [`Anomaly::kind`]).
    pub fn name(self) -> &'static str {
        match self {
            AnomalyKind::DuplicateAppend => "duplicate-append",
            AnomalyKind::IncompatibleOrder => "incompatible-order",
            AnomalyKind::Internal => "internal",
            AnomalyKind::GarbageRead => "garbage-read",
            AnomalyKind::CyclicVersions => "cyclic-versions",
            AnomalyKind::G0 => "G0",
            AnomalyKind::G1a => "G1a",
            AnomalyKind::G1b => "G1b",
            AnomalyKind::G1c => "G1c",
            AnomalyKind::GSingle => "G-single",
            AnomalyKind::GNonadjacent => "G-nonadjacent",
            AnomalyKind::LostUpdate => "lost-update",
            AnomalyKind::G2Item => "G2-item",
            AnomalyKind::G0Realtime => "G0-realtime",
            AnomalyKind::G1cRealtime => "G1c-realtime",
            AnomalyKind::GSingleRealtime => "G-single-realtime",
            AnomalyKind::GNonadjacentRealtime => "G-nonadjacent-realtime",
            AnomalyKind::G2ItemRealtime => "G2-item-realtime",
        }
    }
}

impl fmt::Display for AnomalyKind {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        out.write_str(self.name())
    }
}

/// A list-append or rw-register history the model does not fit.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The invoke/complete discipline is broken.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// A transaction carries a value of the wrong shape.
    #[error("op {index}: {reason}")]
    Malformed {
        /// History index of the offending event.
        index: u64,
        /// What was wrong.
        reason: &'static str,
    },
}

/// How many transactions of each outcome a history holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnCounts {
    /// Completed `ok`.
    pub ok: usize,
    /// Completed `fail`.
    pub failed: usize,
    /// Completed `info` or never completed.
    pub info: usize,
    /// Of the `info` ones, those with an append some read observed (so they committed).
    pub info_observed: usize,
}

/// The size of the dependency graph and what the cycle search covered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphStats {
    /// Committed transactions (graph nodes).
    pub nodes: usize,
    /// `ww` edges.
    pub ww_edges: usize,
    /// `wr` edges.
    pub wr_edges: usize,
    /// `rw` edges.
    pub rw_edges: usize,
    /// `realtime` edges (transitively reduced).
    pub realtime_edges: usize,
    /// Non-trivial strongly connected components of the `ww` graph.
    pub ww_components: usize,
    /// ... of the `ww` + `wr` graph.
    pub ww_wr_components: usize,
    /// ... of the `ww` + `wr` + `rw` graph.
    pub ww_wr_rw_components: usize,
    /// ... of the graph with every edge kind including `realtime`.
    pub realtime_components: usize,
    /// Whether the searches for more specific cycle classes ran out of their work budget
    /// (the level verdicts do not depend on them).
    pub budget_exhausted: bool,
}

/// Which transactional workload a [`Report`] is about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Model {
    /// `:txn` operations of `[:append k v]` and `[:r k list]` (this module's checker).
    #[default]
    ListAppend,
    /// `:rw-txn` operations of `[:w k v]` and `[:r k v]` ([`rw_register`]).
    RwRegister,
}

impl Model {
    /// The checker's name in verdicts.
    pub fn checker_name(self) -> &'static str {
        match self {
            Model::ListAppend => CHECKER_NAME,
            Model::RwRegister => rw_register::CHECKER_NAME,
        }
    }

    /// Whether this model's checker can report `kind` (the verdict lists only those).
    pub fn reports(self, kind: AnomalyKind) -> bool {
        match self {
            Model::ListAppend => kind != AnomalyKind::CyclicVersions,
            Model::RwRegister => !matches!(
                kind,
                AnomalyKind::DuplicateAppend | AnomalyKind::IncompatibleOrder
            ),
        }
    }
}

/// Everything the list-append (or rw-register) checker found in one history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The workload's model: names the checker in the verdict.
    pub model: Model,
    /// The anomalies found, at most [`MAX_LISTED_PER_KIND`] of each kind (unless asked for
    /// all), in the order found.
    pub anomalies: Vec<Anomaly>,
    /// How many anomalies of each kind were found (listed or not).
    pub counts: BTreeMap<AnomalyKind, usize>,
    /// Transactions by outcome.
    pub txns: TxnCounts,
    /// The dependency graph.
    pub graph: GraphStats,
    /// What was skipped and why.
    pub notes: Vec<String>,
}

impl Report {
    /// The kinds of anomaly found, in [`AnomalyKind::ALL`] order.
    pub fn kinds(&self) -> Vec<AnomalyKind> {
        self.counts.keys().copied().collect()
    }

    /// Whether an anomaly of `kind` was found.
    pub fn has(&self, kind: AnomalyKind) -> bool {
        self.counts.contains_key(&kind)
    }

    /// The verdict at `level`: invalid when any kind the level forbids was found. Every
    /// anomaly found is listed, the allowed ones too; a note names the allowed kinds.
    pub fn verdict(&self, level: Isolation) -> Verdict {
        let forbidden: Vec<String> = self
            .counts
            .iter()
            .filter(|(kind, _)| level.forbids(**kind))
            .map(|(kind, count)| format!("{kind} ({count})"))
            .collect();
        let allowed: Vec<String> = self
            .counts
            .iter()
            .filter(|(kind, _)| !level.forbids(**kind))
            .map(|(kind, count)| format!("{kind} ({count})"))
            .collect();
        let mut notes = vec![
            format!(
                "checked against {level}, which forbids {}",
                level
                    .forbidden()
                    .iter()
                    .filter(|kind| self.model.reports(**kind))
                    .map(|kind| kind.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            format!(
                "{} transactions: {} ok, {} failed, {} unknown ({} of them observed, so committed)",
                self.txns.ok + self.txns.failed + self.txns.info,
                self.txns.ok,
                self.txns.failed,
                self.txns.info,
                self.txns.info_observed
            ),
            format!(
                "dependency graph: {} transactions, {} ww, {} wr, {} rw, {} realtime edges; cyclic components: \
                 {} ww, {} ww+wr, {} ww+wr+rw, {} ww+wr+rw+realtime",
                self.graph.nodes,
                self.graph.ww_edges,
                self.graph.wr_edges,
                self.graph.rw_edges,
                self.graph.realtime_edges,
                self.graph.ww_components,
                self.graph.ww_wr_components,
                self.graph.ww_wr_rw_components,
                self.graph.realtime_components
            ),
        ];
        if !forbidden.is_empty() {
            notes.push(format!("forbidden at {level}: {}", forbidden.join(", ")));
        }
        if !allowed.is_empty() {
            notes.push(format!(
                "allowed at {level} (listed, not violations): {}",
                allowed.join(", ")
            ));
        }
        for (kind, count) in &self.counts {
            let listed = self
                .anomalies
                .iter()
                .filter(|anomaly| anomaly.kind == kind.name())
                .count();
            if *count > listed {
                notes.push(format!(
                    "{kind}: {count} found, the first {listed} listed (--all-violations lists every one)"
                ));
            }
        }
        notes.extend(self.notes.iter().cloned());
        Verdict {
            validity: if forbidden.is_empty() {
                Validity::Valid
            } else {
                Validity::Invalid
            },
            checker: self.model.checker_name().to_string(),
            ops_checked: self.txns.ok + self.txns.failed + self.txns.info,
            anomalies: self.anomalies.clone(),
            notes,
        }
    }
}

/// Collects anomalies: counts every one, lists the first [`MAX_LISTED_PER_KIND`] per kind
/// (every one with [`Listing::All`]).
#[derive(Debug)]
struct Findings {
    listed: Vec<Anomaly>,
    counts: BTreeMap<AnomalyKind, usize>,
    limit_per_kind: usize,
}

impl Default for Findings {
    fn default() -> Self {
        Findings::new(Listing::Sample)
    }
}

impl Findings {
    fn new(listing: Listing) -> Findings {
        Findings {
            listed: Vec::new(),
            counts: BTreeMap::new(),
            limit_per_kind: listing.limit(MAX_LISTED_PER_KIND),
        }
    }

    fn add(&mut self, kind: AnomalyKind, key: Option<u64>, description: String, ops: Vec<u64>) {
        let count = self.counts.entry(kind).or_insert(0);
        *count += 1;
        if *count <= self.limit_per_kind {
            self.listed.push(Anomaly {
                kind: kind.name().to_string(),
                key,
                description,
                ops,
            });
        }
    }
}

/// Finds every list-append anomaly in the `:txn` operations of `history` (other operations
/// are ignored). Fails when the history does not fit the model: broken invoke/complete
/// pairing, a transaction without micro-operations, an `ok` one without read results.
pub fn analyze(history: &History) -> Result<Report, ModelError> {
    analyze_with(history, Listing::Sample)
}

/// [`analyze`], listing as many anomalies of each kind as `listing` says.
pub fn analyze_with(history: &History, listing: Listing) -> Result<Report, ModelError> {
    let mut txns = txns::extract(history)?;
    let mut findings = Findings::new(listing);
    txns::strip_aborted_reads(&mut txns, &mut findings);
    let observed = txns::observe(&txns, &mut findings);
    let graph = graph::Graph::build(&txns, &observed);
    let mut stats = graph.stats();
    cycles::search(&graph, &txns, &mut findings, &mut stats);
    Ok(Report {
        model: Model::ListAppend,
        anomalies: findings.listed,
        counts: findings.counts,
        txns: observed.counts,
        graph: stats,
        notes: observed.notes,
    })
}

/// Checks the `:txn` operations of `history` against `level`; `Unknown` when the history does
/// not fit the model.
pub fn check(history: &History, level: Isolation) -> Verdict {
    check_with(history, level, Listing::Sample)
}

/// [`check`], listing as many anomalies of each kind as `listing` says.
pub fn check_with(history: &History, level: Isolation, listing: Listing) -> Verdict {
    match analyze_with(history, listing) {
        Ok(report) => report.verdict(level),
        Err(error) => Verdict::unknown(CHECKER_NAME, error.to_string()),
    }
}

/// The list-append checker at one isolation level, as a [`Checker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListAppendChecker {
    /// The level the history must satisfy.
    pub level: Isolation,
}

impl Checker for ListAppendChecker {
    fn name(&self) -> &'static str {
        CHECKER_NAME
    }

    fn check(&self, history: &History) -> Verdict {
        check(history, self.level)
    }
}
