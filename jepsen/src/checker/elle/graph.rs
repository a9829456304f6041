//! The dependency graph over committed transactions (Adya's direct serialization graph,
//! plus real-time order), and the two graph algorithms the cycle search needs: strongly
//! connected components (Tarjan, iterative) and shortest paths (breadth-first).
//!
//! Nodes are `u32`; edges are kept sorted by source in one array with an offset per node
//! (compressed sparse rows), each edge with its kind and the key that justifies it.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;

use super::txns::{Observed, Outcome, Txn};
use super::GraphStats;

/// No node / no component.
pub(super) const NONE: u32 = u32::MAX;

/// Why one transaction must precede another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum EdgeKind {
    /// Write-write: T2 appended the value right after T1's in a key's version order.
    Ww,
    /// Write-read: T2 read a list ending at T1's value.
    Wr,
    /// Read-write (anti-dependency): T1 read a list that T2's value comes right after.
    Rw,
    /// Real time: T1 completed before T2 was invoked.
    Realtime,
}

impl EdgeKind {
    fn bit(self) -> u8 {
        match self {
            EdgeKind::Ww => 1,
            EdgeKind::Wr => 2,
            EdgeKind::Rw => 4,
            EdgeKind::Realtime => 8,
        }
    }
}

/// A set of edge kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Kinds(u8);

impl Kinds {
    pub(super) const WW: Kinds = Kinds(1);
    pub(super) const WW_WR: Kinds = Kinds(1 | 2);
    pub(super) const WW_WR_RW: Kinds = Kinds(1 | 2 | 4);
    pub(super) const WW_REALTIME: Kinds = Kinds(1 | 8);
    pub(super) const WW_WR_REALTIME: Kinds = Kinds(1 | 2 | 8);
    pub(super) const ALL: Kinds = Kinds(1 | 2 | 4 | 8);

    pub(super) fn contains(self, kind: EdgeKind) -> bool {
        self.0 & kind.bit() != 0
    }
}

/// One dependency between two committed transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Edge {
    pub(super) from: u32,
    pub(super) to: u32,
    pub(super) kind: EdgeKind,
    /// The key whose version order or read gives the edge (0 for realtime edges).
    pub(super) key: u64,
}

/// The dependency graph.
#[derive(Debug, Default)]
pub(super) struct Graph {
    /// Node → position of its transaction in the extracted list.
    pub(super) txn_of: Vec<u32>,
    /// Node `n`'s out-edges are `edges[offsets[n]..offsets[n + 1]]`.
    offsets: Vec<usize>,
    pub(super) edges: Vec<Edge>,
}

impl Graph {
    /// Builds the list-append graph: a node per committed transaction; `ww`, `wr` and `rw`
    /// edges from the usable version orders and observations; realtime edges (see
    /// [`Graph::from_txn_edges`]).
    pub(super) fn build(txns: &[Txn], observed: &Observed) -> Graph {
        let writer_txn =
            |key: u64, value: u64| -> Option<u32> { Some(observed.writers.get(&(key, value))?.txn) };
        let mut edges = Vec::new();
        let mut push = |from: u32, to: u32, kind: EdgeKind, key: u64| {
            edges.push(Edge { from, to, kind, key });
        };
        for (key, order) in observed.orders.iter().filter(|(_, order)| order.usable) {
            for pair in order.values.windows(2) {
                if let (Some(from), Some(to)) = (writer_txn(*key, pair[0]), writer_txn(*key, pair[1])) {
                    push(from, to, EdgeKind::Ww, *key);
                }
            }
        }
        for observation in &observed.observations {
            let Some(order) = observed.orders.get(&observation.key).filter(|order| order.usable) else {
                continue;
            };
            let reader = observation.txn;
            let key = observation.key;
            let values = observed.values(txns, observation);
            if let Some(writer) = values.last().and_then(|last| writer_txn(key, *last)) {
                push(writer, reader, EdgeKind::Wr, key);
            }
            if observation.compatible {
                let next_writer = order
                    .values
                    .get(values.len())
                    .and_then(|next| writer_txn(key, *next));
                if let Some(next_writer) = next_writer {
                    push(reader, next_writer, EdgeKind::Rw, key);
                }
            }
        }
        Graph::from_txn_edges(txns, &observed.committed, edges)
    }

    /// The graph over the committed transactions (`committed[position]`), one node each, with
    /// `txn_edges` (whose ends are positions in `txns`; those with an end not committed, and
    /// loops, are left out) and realtime edges between `ok` transactions and the committed
    /// transactions invoked after they completed, transitively reduced.
    pub(super) fn from_txn_edges<M>(
        txns: &[Txn<M>],
        committed: &[bool],
        txn_edges: impl IntoIterator<Item = Edge>,
    ) -> Graph {
        let mut node_of = vec![NONE; txns.len()];
        let mut txn_of = Vec::new();
        for (position, committed) in committed.iter().enumerate().take(txns.len()) {
            if *committed {
                node_of[position] = txn_of.len() as u32;
                txn_of.push(position as u32);
            }
        }
        let node = |position: u32| {
            node_of
                .get(position as usize)
                .copied()
                .filter(|node| *node != NONE)
        };
        let mut edges: Vec<Edge> = txn_edges
            .into_iter()
            .filter_map(|edge| {
                let (from, to) = (node(edge.from)?, node(edge.to)?);
                (from != to).then_some(Edge { from, to, ..edge })
            })
            .collect();
        edges.extend(realtime_edges(txns, &txn_of));
        // Stable: of several edges of one kind between two nodes, the first key found stays.
        edges.sort_by_key(|edge| (edge.from, edge.to, edge.kind));
        edges.dedup_by_key(|edge| (edge.from, edge.to, edge.kind));
        let mut offsets = vec![0; txn_of.len() + 1];
        for edge in &edges {
            offsets[edge.from as usize + 1] += 1;
        }
        for node in 0..txn_of.len() {
            offsets[node + 1] += offsets[node];
        }
        Graph {
            txn_of,
            offsets,
            edges,
        }
    }

    pub(super) fn node_count(&self) -> usize {
        self.txn_of.len()
    }

    /// The ids (positions in `edges`) of `node`'s out-edges.
    pub(super) fn out(&self, node: u32) -> Range<usize> {
        let node = node as usize;
        match (self.offsets.get(node), self.offsets.get(node + 1)) {
            (Some(start), Some(end)) => *start..*end,
            _ => 0..0,
        }
    }

    pub(super) fn stats(&self) -> GraphStats {
        let count = |kind: EdgeKind| self.edges.iter().filter(|edge| edge.kind == kind).count();
        GraphStats {
            nodes: self.node_count(),
            ww_edges: count(EdgeKind::Ww),
            wr_edges: count(EdgeKind::Wr),
            rw_edges: count(EdgeKind::Rw),
            realtime_edges: count(EdgeKind::Realtime),
            ..GraphStats::default()
        }
    }
}

/// Realtime edges T1 → T2 (T1 `ok`, T2 committed, T1 completed before T2 was invoked), only
/// those not implied by two others: none where some `ok` T3 was invoked after T1 completed
/// and completed before T2 was invoked.
///
/// A sweep over invocations and completions in history order keeps the frontier: the `ok`
/// transactions completed so far that no later-invoked transaction has completed after. Each
/// invocation links the frontier to the new transaction; each completion removes the
/// completing transaction's own predecessors from the frontier and adds it. Frontier members
/// overlap pairwise in time, so the frontier is no larger than the concurrency and the edges
/// number at most transactions × concurrency.
fn realtime_edges<M>(txns: &[Txn<M>], txn_of: &[u32]) -> Vec<Edge> {
    let mut events: Vec<(u64, bool, u32)> = Vec::with_capacity(txn_of.len() * 2);
    for (node, position) in txn_of.iter().enumerate() {
        let txn = &txns[*position as usize];
        events.push((txn.invoke_index, false, node as u32));
        if let (Outcome::Ok, Some(completion)) = (txn.outcome, txn.completion_index) {
            events.push((completion, true, node as u32));
        }
    }
    events.sort_unstable();
    let mut edges: Vec<Edge> = Vec::new();
    let mut predecessors: Vec<Range<usize>> = vec![0..0; txn_of.len()];
    let mut frontier: Vec<u32> = Vec::new();
    let mut is_predecessor = vec![false; txn_of.len()];
    for (_, is_completion, node) in events {
        if is_completion {
            let own = &edges[predecessors[node as usize].clone()];
            if !own.is_empty() {
                for edge in own {
                    is_predecessor[edge.from as usize] = true;
                }
                frontier.retain(|member| !is_predecessor[*member as usize]);
                for edge in own {
                    is_predecessor[edge.from as usize] = false;
                }
            }
            frontier.push(node);
        } else {
            let start = edges.len();
            edges.extend(frontier.iter().map(|from| Edge {
                from: *from,
                to: node,
                kind: EdgeKind::Realtime,
                key: 0,
            }));
            predecessors[node as usize] = start..edges.len();
        }
    }
    edges
}

/// The non-trivial strongly connected components of a graph.
#[derive(Debug, Default)]
pub(super) struct Components {
    /// Node → its component, or [`NONE`] for a node in no cycle.
    pub(super) of: Vec<u32>,
    /// Node → its position in its component's member list.
    pub(super) local: Vec<u32>,
    /// The nodes of each component.
    pub(super) members: Vec<Vec<u32>>,
}

/// The strongly connected components with two or more nodes of the graph on `0..count`
/// whose successors of `node` `successors(node, out)` appends to `out` (Tarjan, with an
/// explicit stack instead of recursion so that long paths cannot overflow the thread's
/// stack). Linear in nodes and edges. Self-loops are not reported.
pub(super) fn strongly_connected(count: usize, successors: impl FnMut(u32, &mut Vec<u32>)) -> Components {
    let mut tarjan = Tarjan {
        successors,
        order: vec![UNVISITED; count],
        low_link: vec![0; count],
        on_stack: vec![false; count],
        stack: Vec::new(),
        frames: Vec::new(),
        pending: Vec::new(),
        next_order: 0,
        components: Components {
            of: vec![NONE; count],
            local: vec![NONE; count],
            members: Vec::new(),
        },
    };
    for root in 0..count as u32 {
        if tarjan.order[root as usize] == UNVISITED {
            tarjan.run(root);
        }
    }
    tarjan.components
}

const UNVISITED: u32 = u32::MAX;

/// The state of one run of Tarjan's algorithm.
struct Tarjan<S> {
    successors: S,
    /// Visit order of each node ([`UNVISITED`] before).
    order: Vec<u32>,
    low_link: Vec<u32>,
    on_stack: Vec<bool>,
    stack: Vec<u32>,
    /// One frame per node being visited: (node, start of its successors in `pending`, next
    /// successor to look at). The top frame's successors run to the end of `pending`.
    frames: Vec<(u32, usize, usize)>,
    pending: Vec<u32>,
    next_order: u32,
    components: Components,
}

impl<S: FnMut(u32, &mut Vec<u32>)> Tarjan<S> {
    fn visit(&mut self, node: u32) {
        self.order[node as usize] = self.next_order;
        self.low_link[node as usize] = self.next_order;
        self.next_order += 1;
        self.stack.push(node);
        self.on_stack[node as usize] = true;
        let start = self.pending.len();
        (self.successors)(node, &mut self.pending);
        self.frames.push((node, start, start));
    }

    /// Visits everything reachable from `root` (unvisited).
    fn run(&mut self, root: u32) {
        self.visit(root);
        while let Some(frame) = self.frames.last_mut() {
            let (node, start, next) = *frame;
            if let Some(successor) = self.pending.get(next).copied() {
                frame.2 += 1;
                if self.order[successor as usize] == UNVISITED {
                    self.visit(successor);
                } else if self.on_stack[successor as usize] {
                    let low = self.low_link[node as usize].min(self.order[successor as usize]);
                    self.low_link[node as usize] = low;
                }
                continue;
            }
            self.frames.pop();
            self.pending.truncate(start);
            if let Some((parent, _, _)) = self.frames.last() {
                let low = self.low_link[*parent as usize].min(self.low_link[node as usize]);
                self.low_link[*parent as usize] = low;
            }
            if self.low_link[node as usize] == self.order[node as usize] {
                self.pop_component(node);
            }
        }
    }

    /// Pops the component whose root is `root` off the stack; keeps it if non-trivial.
    fn pop_component(&mut self, root: u32) {
        let mut component = Vec::new();
        while let Some(member) = self.stack.pop() {
            self.on_stack[member as usize] = false;
            component.push(member);
            if member == root {
                break;
            }
        }
        if component.len() < 2 {
            return;
        }
        let id = self.components.members.len() as u32;
        for (position, member) in component.iter().enumerate() {
            self.components.of[*member as usize] = id;
            self.components.local[*member as usize] = position as u32;
        }
        self.components.members.push(component);
    }
}

/// A limit on the work of the searches that may be cut short.
#[derive(Debug, Clone, Copy)]
pub(super) struct Budget {
    remaining: u64,
    /// Whether a search stopped because the budget ran out.
    pub(super) exhausted: bool,
}

impl Budget {
    /// At most `steps` edge traversals in all.
    pub(super) fn new(steps: u64) -> Budget {
        Budget {
            remaining: steps,
            exhausted: false,
        }
    }

    /// No limit: for the searches the verdicts rely on (each is linear).
    pub(super) fn unlimited() -> Budget {
        Budget::new(u64::MAX)
    }

    fn spend(&mut self) -> bool {
        if self.remaining == 0 {
            self.exhausted = true;
            return false;
        }
        self.remaining -= 1;
        true
    }
}

/// The shortest path (fewest edges) from `start` to a state satisfying `is_goal`, over the
/// transitions `successors(state, out)` appends as `(next state, edge id)`; the edge ids in
/// order. `None` when no goal is reachable (without passing `start` again) or the budget ran
/// out. States are whatever the caller encodes in a `u64` (a node, or a node with flags).
pub(super) fn shortest_path(
    start: u64,
    is_goal: impl Fn(u64) -> bool,
    mut successors: impl FnMut(u64, &mut Vec<(u64, usize)>),
    budget: &mut Budget,
) -> Option<Vec<usize>> {
    let mut parent: HashMap<u64, (u64, usize)> = HashMap::new();
    let mut queue = VecDeque::from([start]);
    let mut next = Vec::new();
    while let Some(state) = queue.pop_front() {
        next.clear();
        successors(state, &mut next);
        for (successor, edge) in next.iter().copied() {
            if !budget.spend() {
                return None;
            }
            if successor == start || parent.contains_key(&successor) {
                continue;
            }
            parent.insert(successor, (state, edge));
            if is_goal(successor) {
                let mut path = vec![edge];
                let mut at = state;
                while at != start {
                    let (previous, edge) = parent.get(&at)?;
                    path.push(*edge);
                    at = *previous;
                }
                path.reverse();
                return Some(path);
            }
            queue.push_back(successor);
        }
    }
    None
}
