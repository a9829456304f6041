//! The version order of each rw-register key, inferred only from what the checked isolation
//! level guarantees.
//!
//! A register read returns one value, not the history of the key, so unlike list-append the
//! order in which versions were installed is not observed: it must be inferred, and every
//! inference is an assumption about the database. An assumption the level does not make
//! would turn a history the level allows into a false anomaly, so each rule below is used
//! only at the levels under which breaking it is itself an anomaly the level forbids. Then a
//! history valid at the level satisfies every rule used, each inferred `a < b` holds in its
//! true version order, and every edge derived from them lies in (or stands for a path of)
//! its true dependency graph.
//!
//! 1. **Initial version** (every level): the initial `nil` precedes every committed version.
//!    True by definition (the keys are fresh and never deleted).
//! 2. **Writes follow reads** (read committed and up): a committed transaction T that read
//!    version `a` of a key and wrote `b` to it installed `b` after `a`. Otherwise `b < a`:
//!    T `-ww->*` the writer of `a` `-wr->` T, a `G1c` cycle. Not at read uncommitted, where a
//!    read may see a provisional version committed after T's own (in ringkv, a dirty read).
//! 3. **Real time, per key** (strict serializable): when T1 completed `ok` before T2 was
//!    invoked, the last version of a key T1 saw or wrote precedes the first T2 saw or wrote
//!    (Elle's "linearizable keys"). Otherwise the cycle through T1 `-rt->` T2 is a
//!    realtime anomaly. The frontier sweep links each transaction touching the key only to
//!    the latest ones touching it before it; rule 2 (first ≤ last within a transaction)
//!    chains them.
//! 4. **Next version** (repeatable read and up): T read `a` (its first read of the key) and
//!    wrote `b`, so `b` comes *right after* `a`: a version `c` in between would give T
//!    `-rw->` the writer of the version after `a` `-ww->*` T, a cycle with one
//!    anti-dependency (`G-single`). Snapshot isolation's first-committer-wins is what makes
//!    ringkv keep it. Two transactions claiming the same `a` are a lost update (reported by
//!    the caller) and neither claim is used. A claim `a ⋖ b` moves every other successor of
//!    `a` behind `b` and every other predecessor of `b` before `a`, until nothing moves.
//!
//! The rules are added in that order; when one makes a key's order cyclic, the rules the
//! level guarantees contradict each other (`cyclic-versions`, forbidden at the level): the
//! cycle is reported and the key keeps the order from the rules before. Last, an edge from
//! `nil` is dropped when its target has another predecessor (which `nil` precedes anyway).

use std::collections::{BTreeSet, HashMap};

use super::graph::{shortest_path, strongly_connected, Budget};
use super::Isolation;

/// A version of a key: `None` is the initial `nil`, `Some(v)` the version a write of `v`
/// installed.
pub(super) type Version = Option<u64>;

/// Most claim moves (rule 4) one key may take before the rule is given up for it.
const MAX_MOVES_PER_KEY: u64 = 20_000_000;

/// Most versions of a contradiction quoted in its description.
const MAX_QUOTED_VERSIONS: usize = 12;

/// The inference rules a level's guarantees justify (rule 1 always applies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Rules {
    /// Rule 2.
    pub(super) writes_follow_reads: bool,
    /// Rule 3.
    pub(super) realtime: bool,
    /// Rule 4.
    pub(super) next_version: bool,
}

impl Rules {
    /// The rules sound at `level`.
    pub(super) fn for_level(level: Isolation) -> Rules {
        Rules {
            writes_follow_reads: level >= Isolation::ReadCommitted,
            realtime: level >= Isolation::StrictSerializable,
            next_version: level >= Isolation::RepeatableRead,
        }
    }

    /// The rules' names, for notes.
    pub(super) fn names(self) -> Vec<&'static str> {
        let mut names = vec![RULE_INITIAL];
        if self.writes_follow_reads {
            names.push(RULE_WRITES_FOLLOW_READS);
        }
        if self.realtime {
            names.push(RULE_REALTIME);
        }
        if self.next_version {
            names.push(RULE_NEXT_VERSION);
        }
        names
    }
}

const RULE_INITIAL: &str = "initial nil first";
const RULE_WRITES_FOLLOW_READS: &str = "writes follow reads";
const RULE_REALTIME: &str = "real-time order per key";
const RULE_NEXT_VERSION: &str = "first committer wins (a read-then-write installs the next version)";

/// One committed transaction's contact with a key, for rule 3.
#[derive(Debug, Clone, Copy)]
pub(super) struct Touch {
    pub(super) invoke_index: u64,
    /// The completion, for an `ok` transaction (only those can precede another in real time).
    pub(super) ok_completion_index: Option<u64>,
    /// The first version it read, else the one it wrote.
    pub(super) first: Version,
    /// The version it wrote, else the first it read.
    pub(super) last: Version,
}

/// What the history shows about one key.
#[derive(Debug, Clone, Default)]
pub(super) struct KeyFacts {
    /// Every committed version (the final write of each committed transaction).
    pub(super) versions: Vec<u64>,
    /// Rule 2: a committed transaction read the first version and then installed the second.
    pub(super) read_then_wrote: Vec<(Version, u64)>,
    /// Rule 4: as above, the read being the transaction's first of the key; at most one per
    /// written version.
    pub(super) first_read_then_wrote: Vec<(Version, u64)>,
    /// Rule 3: every committed transaction that read a version of the key or wrote one.
    pub(super) touches: Vec<Touch>,
}

/// The rules of a level contradicting each other on a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Contradiction {
    /// The rule whose addition closed the cycle.
    pub(super) rule: &'static str,
    /// The versions of one cycle, in order (the first repeated at the end is implied).
    pub(super) cycle: Vec<Version>,
}

/// The inferred version order of one key.
#[derive(Debug, Clone, Default)]
pub(super) struct Inferred {
    /// `(a, b)`: `a` precedes `b`. Not transitively closed: a path means precedence too.
    pub(super) edges: Vec<(Version, Version)>,
    pub(super) contradictions: Vec<Contradiction>,
    /// Rules given up for the key because they would take too long.
    pub(super) gave_up: Vec<&'static str>,
}

/// Infers the version order of one key from `facts` with `rules`.
pub(super) fn infer(facts: &KeyFacts, rules: Rules) -> Inferred {
    let ids = VersionIds::new(&facts.versions);
    let mut inferred = Inferred::default();
    let mut order = Order::new(ids.len());
    for id in 1..ids.len() as u32 {
        order.add(0, id);
    }
    if rules.writes_follow_reads {
        let mut candidate = order.clone();
        for (read, written) in &facts.read_then_wrote {
            if let (Some(read), Some(written)) = (ids.id(*read), ids.id(Some(*written))) {
                candidate.add(read, written);
            }
        }
        order = accept(order, candidate, RULE_WRITES_FOLLOW_READS, &ids, &mut inferred);
    }
    if rules.realtime {
        let mut candidate = order.clone();
        for (last, first) in realtime_pairs(&facts.touches) {
            if let (Some(last), Some(first)) = (ids.id(last), ids.id(first)) {
                candidate.add(last, first);
            }
        }
        order = accept(order, candidate, RULE_REALTIME, &ids, &mut inferred);
    }
    if rules.next_version {
        let claims = next_version_claims(&facts.first_read_then_wrote, &ids);
        if !claims.is_empty() {
            let mut candidate = order.clone();
            for (read, written) in &claims {
                candidate.add(*read, *written);
            }
            // A cycle among the claims themselves would keep the moves below going round.
            if let Some(cycle) = candidate.cycle() {
                inferred.contradictions.push(Contradiction {
                    rule: RULE_NEXT_VERSION,
                    cycle: cycle.iter().map(|id| ids.version(*id)).collect(),
                });
            } else if candidate.apply_claims(&claims, MAX_MOVES_PER_KEY) {
                order = accept(order, candidate, RULE_NEXT_VERSION, &ids, &mut inferred);
            } else {
                inferred.gave_up.push(RULE_NEXT_VERSION);
            }
        }
    }
    for id in 1..ids.len() as u32 {
        if order.pred[id as usize].len() > 1 {
            order.remove(0, id);
        }
    }
    inferred.edges = order
        .succ
        .iter()
        .enumerate()
        .flat_map(|(from, successors)| {
            let ids = &ids;
            successors
                .iter()
                .map(move |to| (ids.version(from as u32), ids.version(*to)))
        })
        .collect();
    inferred
}

/// `candidate` if it is acyclic, else `previous`, recording the contradiction.
fn accept(
    previous: Order,
    candidate: Order,
    rule: &'static str,
    ids: &VersionIds,
    inferred: &mut Inferred,
) -> Order {
    match candidate.cycle() {
        None => candidate,
        Some(cycle) => {
            inferred.contradictions.push(Contradiction {
                rule,
                cycle: cycle.iter().map(|id| ids.version(*id)).collect(),
            });
            previous
        }
    }
}

/// Rule 4's claims as ids: those whose read no other claim shares (a shared read is a lost
/// update: at most one of them installed the next version, and which is unknown).
fn next_version_claims(pairs: &[(Version, u64)], ids: &VersionIds) -> Vec<(u32, u32)> {
    let mut by_read: HashMap<u32, Vec<u32>> = HashMap::new();
    for (read, written) in pairs {
        if let (Some(read), Some(written)) = (ids.id(*read), ids.id(Some(*written))) {
            if read != written {
                by_read.entry(read).or_default().push(written);
            }
        }
    }
    let mut claims: Vec<(u32, u32)> = by_read
        .into_iter()
        .filter_map(|(read, written)| match written.as_slice() {
            [only] => Some((read, *only)),
            _ => None,
        })
        .collect();
    claims.sort_unstable();
    claims
}

/// Rule 3's pairs `(last version of T1, first version of T2)` for T1 `ok`, completed before
/// T2 was invoked, with no transaction touching the key in between (a frontier sweep over
/// invocations and completions, as for the graph's realtime edges).
fn realtime_pairs(touches: &[Touch]) -> Vec<(Version, Version)> {
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(touches.len() * 2);
    for (position, touch) in touches.iter().enumerate() {
        events.push((touch.invoke_index, false, position));
        if let Some(completion) = touch.ok_completion_index {
            events.push((completion, true, position));
        }
    }
    events.sort_unstable();
    let mut pairs = Vec::new();
    let mut frontier: Vec<usize> = Vec::new();
    let mut predecessors: Vec<Vec<usize>> = vec![Vec::new(); touches.len()];
    for (_, is_completion, position) in events {
        if is_completion {
            let superseded = &predecessors[position];
            frontier.retain(|member| !superseded.contains(member));
            frontier.push(position);
        } else {
            for member in &frontier {
                let (last, first) = (touches[*member].last, touches[position].first);
                if last != first {
                    pairs.push((last, first));
                }
            }
            predecessors[position] = frontier.clone();
        }
    }
    pairs
}

/// Dense ids of a key's versions: 0 is `nil`.
struct VersionIds {
    values: Vec<u64>,
    id_of: HashMap<u64, u32>,
}

impl VersionIds {
    fn new(versions: &[u64]) -> VersionIds {
        let mut values = Vec::with_capacity(versions.len());
        let mut id_of = HashMap::with_capacity(versions.len());
        for value in versions {
            if let std::collections::hash_map::Entry::Vacant(vacant) = id_of.entry(*value) {
                vacant.insert(values.len() as u32 + 1);
                values.push(*value);
            }
        }
        VersionIds { values, id_of }
    }

    /// Number of ids, `nil` included.
    fn len(&self) -> usize {
        self.values.len() + 1
    }

    fn id(&self, version: Version) -> Option<u32> {
        match version {
            None => Some(0),
            Some(value) => self.id_of.get(&value).copied(),
        }
    }

    fn version(&self, id: u32) -> Version {
        id.checked_sub(1)
            .and_then(|position| self.values.get(position as usize))
            .copied()
    }
}

/// A precedence relation over version ids, both directions indexed.
#[derive(Debug, Clone)]
struct Order {
    succ: Vec<BTreeSet<u32>>,
    pred: Vec<BTreeSet<u32>>,
}

impl Order {
    fn new(count: usize) -> Order {
        Order {
            succ: vec![BTreeSet::new(); count],
            pred: vec![BTreeSet::new(); count],
        }
    }

    fn add(&mut self, from: u32, to: u32) {
        if from != to {
            self.succ[from as usize].insert(to);
            self.pred[to as usize].insert(from);
        }
    }

    fn remove(&mut self, from: u32, to: u32) {
        self.succ[from as usize].remove(&to);
        self.pred[to as usize].remove(&from);
    }

    /// Applies the claims `a ⋖ b` (each `a` and each `b` in at most one, no cycle among
    /// them): moves every edge `a → s` (`s ≠ b`) to `b → s` and every `p → b` (`p ≠ a`) to
    /// `p → a`, until nothing moves. An edge's source only moves forward and its target only
    /// backward along the chains of claims, so this ends. `false` if it would take more than
    /// `max_moves` moves.
    fn apply_claims(&mut self, claims: &[(u32, u32)], max_moves: u64) -> bool {
        let mut moves = 0u64;
        loop {
            let mut moved = false;
            for (read, written) in claims.iter().copied() {
                let later: Vec<u32> = self.succ[read as usize]
                    .iter()
                    .copied()
                    .filter(|successor| *successor != written)
                    .collect();
                for successor in later {
                    self.remove(read, successor);
                    self.add(written, successor);
                    moves += 1;
                    moved = true;
                }
                let earlier: Vec<u32> = self.pred[written as usize]
                    .iter()
                    .copied()
                    .filter(|predecessor| *predecessor != read)
                    .collect();
                for predecessor in earlier {
                    self.remove(predecessor, written);
                    self.add(predecessor, read);
                    moves += 1;
                    moved = true;
                }
                if moves > max_moves {
                    return false;
                }
            }
            if !moved {
                return true;
            }
        }
    }

    /// One cycle of versions, if the relation has any.
    fn cycle(&self) -> Option<Vec<u32>> {
        let components = strongly_connected(self.succ.len(), |node, out| {
            out.extend(self.succ[node as usize].iter().copied());
        });
        let members = components.members.first()?;
        let component = components.of[*members.first()? as usize];
        let start = *members.first()?;
        let inside = |node: u32| components.of[node as usize] == component;
        let next = self.succ[start as usize]
            .iter()
            .copied()
            .find(|node| inside(*node))?;
        // Edge "ids" are the target nodes: the path lists the versions after `next`.
        let path = shortest_path(
            u64::from(next),
            |state| state == u64::from(start),
            |state, out| {
                out.extend(
                    self.succ[state as usize]
                        .iter()
                        .filter(|node| inside(**node))
                        .map(|node| (u64::from(*node), *node as usize)),
                );
            },
            &mut Budget::unlimited(),
        )?;
        let mut cycle = vec![start, next];
        cycle.extend(path.iter().map(|node| *node as u32));
        cycle.pop();
        Some(cycle)
    }
}

/// A version for descriptions: its value, or `nil`.
pub(super) fn show_version(version: Version) -> String {
    version.map_or_else(|| "nil".to_string(), |value| value.to_string())
}

/// A contradiction's cycle for descriptions: `1 < 2 < 3 < 1`.
pub(super) fn show_cycle(cycle: &[Version]) -> String {
    let mut parts: Vec<String> = cycle
        .iter()
        .take(MAX_QUOTED_VERSIONS)
        .map(|version| show_version(*version))
        .collect();
    if cycle.len() > MAX_QUOTED_VERSIONS {
        parts.push(format!("... ({} more)", cycle.len() - MAX_QUOTED_VERSIONS));
    }
    if let Some(first) = cycle.first() {
        parts.push(show_version(*first));
    }
    parts.join(" < ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(versions: &[u64]) -> KeyFacts {
        KeyFacts {
            versions: versions.to_vec(),
            ..KeyFacts::default()
        }
    }

    fn sorted(mut edges: Vec<(Version, Version)>) -> Vec<(Version, Version)> {
        edges.sort_unstable();
        edges
    }

    const ALL_RULES: Rules = Rules {
        writes_follow_reads: true,
        realtime: true,
        next_version: true,
    };

    /// Only the initial version is known to precede blind writes: nothing orders them.
    #[test]
    fn blind_writes_stay_unordered() {
        let inferred = infer(&facts(&[1, 2, 3]), ALL_RULES);
        assert_eq!(
            sorted(inferred.edges),
            [(None, Some(1)), (None, Some(2)), (None, Some(3))]
        );
        assert!(inferred.contradictions.is_empty());
    }

    /// Writes follow reads only where the level guarantees it; `nil → 2` goes once 2 has
    /// another predecessor.
    #[test]
    fn writes_follow_reads_at_read_committed_only() {
        let mut key = facts(&[1, 2]);
        key.read_then_wrote.push((Some(1), 2));
        let read_uncommitted = infer(&key, Rules::for_level(Isolation::ReadUncommitted));
        assert_eq!(sorted(read_uncommitted.edges), [(None, Some(1)), (None, Some(2))]);
        let read_committed = infer(&key, Rules::for_level(Isolation::ReadCommitted));
        assert_eq!(
            sorted(read_committed.edges),
            [(None, Some(1)), (Some(1), Some(2))]
        );
    }

    /// A read-then-write of `nil` installs the first version: every other one comes after
    /// it, and chains of next versions become one order.
    #[test]
    fn next_versions_chain_into_one_order() {
        let mut key = facts(&[1, 2, 3, 4]);
        key.first_read_then_wrote = vec![(None, 1), (Some(3), 4)];
        key.read_then_wrote = key.first_read_then_wrote.clone();
        let inferred = infer(&key, Rules::for_level(Isolation::RepeatableRead));
        assert!(inferred.contradictions.is_empty());
        // 1 first; 2 and 3 after it (unordered between them); 4 right after 3.
        assert_eq!(
            sorted(inferred.edges),
            [
                (None, Some(1)),
                (Some(1), Some(2)),
                (Some(1), Some(3)),
                (Some(3), Some(4))
            ]
        );
        let read_committed = infer(&key, Rules::for_level(Isolation::ReadCommitted));
        assert_eq!(
            sorted(read_committed.edges),
            [
                (None, Some(1)),
                (None, Some(2)),
                (None, Some(3)),
                (Some(3), Some(4))
            ]
        );
    }

    /// Two transactions that read the same version and wrote the key (a lost update):
    /// neither claim is used.
    #[test]
    fn shared_reads_claim_nothing() {
        let mut key = facts(&[1, 2, 3]);
        key.first_read_then_wrote = vec![(Some(1), 2), (Some(1), 3)];
        key.read_then_wrote = key.first_read_then_wrote.clone();
        let inferred = infer(&key, ALL_RULES);
        assert_eq!(
            sorted(inferred.edges),
            [(None, Some(1)), (Some(1), Some(2)), (Some(1), Some(3))]
        );
    }

    /// Real time orders the last version a transaction touched before the first of every
    /// transaction invoked after it completed; a read of `nil` after a completed write
    /// contradicts the initial version (a stale read), and the rule is left out.
    #[test]
    fn real_time_orders_versions_and_stale_reads_contradict() {
        let touch =
            |invoke_index: u64, ok_completion_index: Option<u64>, first: Version, last: Version| Touch {
                invoke_index,
                ok_completion_index,
                first,
                last,
            };
        let mut key = facts(&[1, 2]);
        key.touches = vec![
            touch(0, Some(1), Some(1), Some(1)),
            touch(2, Some(3), Some(2), Some(2)),
        ];
        let inferred = infer(&key, ALL_RULES);
        assert_eq!(sorted(inferred.edges), [(None, Some(1)), (Some(1), Some(2))]);
        key.touches.push(touch(4, Some(5), None, None));
        let stale = infer(&key, ALL_RULES);
        assert_eq!(
            stale.contradictions,
            [Contradiction {
                rule: RULE_REALTIME,
                cycle: vec![Some(2), None],
            }]
        );
        assert_eq!(show_cycle(&stale.contradictions[0].cycle), "2 < nil < 2");
        assert_eq!(sorted(stale.edges), [(None, Some(1)), (None, Some(2))]);
        let serializable = infer(&key, Rules::for_level(Isolation::Serializable));
        assert!(serializable.contradictions.is_empty());
    }

    /// Writes-follow-reads both ways round is a contradiction.
    #[test]
    fn opposite_read_then_writes_contradict() {
        let mut key = facts(&[1, 2]);
        key.read_then_wrote = vec![(Some(1), 2), (Some(2), 1)];
        let inferred = infer(&key, Rules::for_level(Isolation::ReadCommitted));
        assert_eq!(inferred.contradictions.len(), 1);
        assert_eq!(inferred.contradictions[0].rule, RULE_WRITES_FOLLOW_READS);
        assert_eq!(sorted(inferred.edges), [(None, Some(1)), (None, Some(2))]);
    }
}
