//! Cycle search in the dependency graph, and the classification of the cycles found.
//!
//! Four passes, each over the strongly connected components of the graph restricted to some
//! edge kinds; inside a component every node reaches every other, so a path back from the end
//! of any internal edge to its start closes a cycle through that edge:
//!
//! 1. `ww` components: a cycle through any edge (`G0`);
//! 2. `ww`+`wr` components with an internal `wr` edge: a cycle through it (`G1c`);
//! 3. `ww`+`wr`+`rw` components with an internal `rw` edge: a cycle with exactly one `rw`
//!    (`G-single`), one with several non-adjacent ones (`G-nonadjacent`) and one with two
//!    adjacent ones (`G2-item`), each tried from at most [`MAX_STARTS`] starting edges under
//!    the shared budget. If neither of the first two was found, a product graph of (node,
//!    "the last edge was `rw`") finds a closed walk whose `rw` edges are never adjacent
//!    whenever one exists; if nothing was found at all, any cycle through an `rw` edge;
//! 4. components of all edges with an internal realtime edge: a cycle through it, over `ww`
//!    and realtime edges first, then also `wr`, then any.
//!
//! Every cycle found is classified by its own edges ([`classify`]), so a label never claims
//! more than the cycle shows. The unbudgeted steps decide the verdicts: a non-trivial
//! component always yields a cycle of its pass's kinds.

use std::collections::{HashMap, HashSet};

use super::graph::{shortest_path, strongly_connected, Budget, Components, EdgeKind, Graph, Kinds, NONE};
use super::txns::Txn;
use super::{AnomalyKind, Findings, GraphStats};

/// Most starting edges each budgeted search tries in one component.
const MAX_STARTS: usize = 32;

/// Edge traversals all budgeted searches of one history may make together.
const SEARCH_BUDGET: u64 = 20_000_000;

/// Longest closed walk split into a simple cycle (splitting costs up to its length squared).
const MAX_SPLIT_WALK: usize = 4_096;

/// Most edges of a cycle spelled out in its description (and whose transactions are listed).
const MAX_DESCRIBED_EDGES: usize = 24;

/// Searches `graph` for cycles, adds each found to `findings`, and records the component
/// counts in `stats`.
pub(super) fn search<M>(graph: &Graph, txns: &[Txn<M>], findings: &mut Findings, stats: &mut GraphStats) {
    let mut search = CycleSearch {
        graph,
        txns,
        findings,
        seen: HashSet::new(),
    };
    let mut budget = Budget::new(SEARCH_BUDGET);
    stats.ww_components = search.write_cycles();
    stats.ww_wr_components = search.information_flow_cycles();
    stats.ww_wr_rw_components = search.anti_dependency_cycles(&mut budget);
    stats.realtime_components = search.realtime_cycles(&mut budget);
    stats.budget_exhausted = budget.exhausted;
}

struct CycleSearch<'a, M> {
    graph: &'a Graph,
    txns: &'a [Txn<M>],
    findings: &'a mut Findings,
    /// Cycles already reported, as edge ids rotated to start at the smallest.
    seen: HashSet<Vec<usize>>,
}

impl<M> CycleSearch<'_, M> {
    /// Pass 1: `G0`. Returns the number of non-trivial components.
    fn write_cycles(&mut self) -> usize {
        let components = self.components(Kinds::WW);
        for component in 0..components.members.len() as u32 {
            let Some(first) = self.internal_edges(&components, component, EdgeKind::Ww).next() else {
                continue;
            };
            self.close_and_record(&components, component, first, Kinds::WW);
        }
        components.members.len()
    }

    /// Pass 2: `G1c`. Returns the number of non-trivial components.
    fn information_flow_cycles(&mut self) -> usize {
        let components = self.components(Kinds::WW_WR);
        for component in 0..components.members.len() as u32 {
            let Some(first) = self.internal_edges(&components, component, EdgeKind::Wr).next() else {
                continue; // only ww edges inside: pass 1 reported it
            };
            self.close_and_record(&components, component, first, Kinds::WW_WR);
        }
        components.members.len()
    }

    /// Pass 3: `G-single`, `G-nonadjacent`, `G2-item`; the searches for a specific class
    /// spend `budget`. Returns the number of non-trivial components.
    fn anti_dependency_cycles(&mut self, budget: &mut Budget) -> usize {
        let components = self.components(Kinds::WW_WR_RW);
        for component in 0..components.members.len() as u32 {
            let rw_edges: Vec<usize> = self
                .internal_edges(&components, component, EdgeKind::Rw)
                .collect();
            let Some(first_rw) = rw_edges.first().copied() else {
                continue; // no anti-dependency inside: passes 1 and 2 reported it
            };
            // Exactly one rw edge: back from its end over ww and wr only.
            let single = rw_edges
                .iter()
                .take(MAX_STARTS)
                .find_map(|start| self.close(&components, component, *start, Kinds::WW_WR, budget));
            // Several rw edges, never two in a row.
            let nonadjacent = rw_edges.iter().take(MAX_STARTS).find_map(|start| {
                self.nonadjacent_cycle(&components, component, *start, budget)
                    .filter(|cycle| self.classify_edges(cycle) == AnomalyKind::GNonadjacent)
            });
            let mut found = single.is_some() || nonadjacent.is_some();
            for cycle in [single, nonadjacent].into_iter().flatten() {
                self.record(&cycle);
            }
            if !found {
                if let Some(cycle) = self.any_nonadjacent_cycle(&components, component) {
                    self.record(&cycle);
                    found = true;
                }
            }
            // Two rw edges in a row (write skew).
            if let Some(cycle) = self.adjacent_cycle(&components, component, &rw_edges, budget) {
                self.record(&cycle);
                found = true;
            }
            if !found {
                self.close_and_record(&components, component, first_rw, Kinds::WW_WR_RW);
            }
        }
        components.members.len()
    }

    /// Pass 4: the realtime variants; the searches over fewer edge kinds spend `budget`.
    /// Returns the number of non-trivial components.
    fn realtime_cycles(&mut self, budget: &mut Budget) -> usize {
        let components = self.components(Kinds::ALL);
        for component in 0..components.members.len() as u32 {
            let Some(first) = self
                .internal_edges(&components, component, EdgeKind::Realtime)
                .next()
            else {
                continue; // no realtime edge inside: passes 1 to 3 reported it
            };
            let specific = [Kinds::WW_REALTIME, Kinds::WW_WR_REALTIME]
                .into_iter()
                .find_map(|kinds| self.close(&components, component, first, kinds, budget));
            match specific {
                Some(cycle) => self.record(&cycle),
                None => self.close_and_record(&components, component, first, Kinds::ALL),
            }
        }
        components.members.len()
    }

    fn components(&self, kinds: Kinds) -> Components {
        let graph = self.graph;
        strongly_connected(graph.node_count(), |node, out| {
            out.extend(
                graph.edges[graph.out(node)]
                    .iter()
                    .filter(|edge| kinds.contains(edge.kind))
                    .map(|edge| edge.to),
            );
        })
    }

    /// Ids of the edges of `kind` between two nodes of `component`.
    fn internal_edges<'c>(
        &'c self,
        components: &'c Components,
        component: u32,
        kind: EdgeKind,
    ) -> impl Iterator<Item = usize> + 'c {
        let graph = self.graph;
        components.members[component as usize]
            .iter()
            .flat_map(move |node| graph.out(*node))
            .filter(move |id| {
                let edge = &graph.edges[*id];
                edge.kind == kind && components.of[edge.to as usize] == component
            })
    }

    /// The shortest cycle through edge `first` whose other edges are of `kinds`, inside
    /// `component`: `first`, then the path back.
    fn close(
        &self,
        components: &Components,
        component: u32,
        first: usize,
        kinds: Kinds,
        budget: &mut Budget,
    ) -> Option<Vec<usize>> {
        let edge = self.graph.edges[first];
        let path = self.path(components, component, (edge.to, edge.from), kinds, None, budget)?;
        Some([vec![first], path].concat())
    }

    /// The shortest path `from` → `to` over edges of `kinds` inside `component`, not through
    /// `avoid`.
    fn path(
        &self,
        components: &Components,
        component: u32,
        (from, to): (u32, u32),
        kinds: Kinds,
        avoid: Option<u32>,
        budget: &mut Budget,
    ) -> Option<Vec<usize>> {
        let graph = self.graph;
        let goal = u64::from(to);
        shortest_path(
            u64::from(from),
            |state| state == goal,
            |state, out| {
                for id in graph.out(state as u32) {
                    let next = &graph.edges[id];
                    if kinds.contains(next.kind)
                        && components.of[next.to as usize] == component
                        && Some(next.to) != avoid
                    {
                        out.push((u64::from(next.to), id));
                    }
                }
            },
            budget,
        )
    }

    /// Closes a cycle through `first` over `kinds` without a budget (it always exists inside a
    /// component of those kinds) and records it.
    fn close_and_record(&mut self, components: &Components, component: u32, first: usize, kinds: Kinds) {
        let cycle = self.close(components, component, first, kinds, &mut Budget::unlimited());
        debug_assert!(cycle.is_some(), "an edge inside a component lies on a cycle");
        if let Some(cycle) = cycle {
            self.record(&cycle);
        }
    }

    /// A cycle through the `rw` edge `first` with at least one more `rw` edge and no two
    /// adjacent (budgeted). States: node, whether the last edge was `rw`, whether a second
    /// `rw` edge was taken.
    fn nonadjacent_cycle(
        &self,
        components: &Components,
        component: u32,
        first: usize,
        budget: &mut Budget,
    ) -> Option<Vec<usize>> {
        let graph = self.graph;
        let edge = graph.edges[first];
        let encode = |node: u32, after_rw: bool, several: bool| {
            u64::from(node) << 2 | u64::from(after_rw) << 1 | u64::from(several)
        };
        let goal = encode(edge.from, false, true);
        let path = shortest_path(
            encode(edge.to, true, false),
            |state| state == goal,
            |state, out| {
                let (node, after_rw, several) = ((state >> 2) as u32, state & 2 != 0, state & 1 != 0);
                for id in graph.out(node) {
                    let next = &graph.edges[id];
                    if components.of[next.to as usize] != component {
                        continue;
                    }
                    match next.kind {
                        EdgeKind::Ww | EdgeKind::Wr => out.push((encode(next.to, false, several), id)),
                        EdgeKind::Rw if !after_rw => out.push((encode(next.to, true, true), id)),
                        EdgeKind::Rw | EdgeKind::Realtime => {}
                    }
                }
            },
            budget,
        )?;
        let walk = [vec![first], path].concat();
        self.simple_nonadjacent(walk).ok().flatten()
    }

    /// A closed walk with `rw` edges, no two adjacent (also around the end), if `component`
    /// holds one: the strongly connected components of the product graph of (node, "the
    /// last edge was `rw`"), where an `rw` edge may only leave a state entered by another
    /// kind, hold such a walk exactly when one of them contains an `rw` transition. Linear.
    fn any_nonadjacent_cycle(&self, components: &Components, component: u32) -> Option<Vec<usize>> {
        let graph = self.graph;
        let members = &components.members[component as usize];
        let local = |node: u32| components.local[node as usize];
        let inside = |node: u32| components.of[node as usize] == component;
        let product = strongly_connected(members.len() * 2, |state, out| {
            let (node, after_rw) = (members[(state / 2) as usize], state % 2 == 1);
            for next in &graph.edges[graph.out(node)] {
                if !inside(next.to) {
                    continue;
                }
                match next.kind {
                    EdgeKind::Ww | EdgeKind::Wr => out.push(local(next.to) * 2),
                    EdgeKind::Rw if !after_rw => out.push(local(next.to) * 2 + 1),
                    EdgeKind::Rw | EdgeKind::Realtime => {}
                }
            }
        });
        // An rw transition (u, entered by ww/wr) -> (v, entered by rw) inside one product
        // component.
        let start = members.iter().find_map(|node| {
            let from_state = local(*node) * 2;
            let product_component = product.of[from_state as usize];
            if product_component == NONE {
                return None;
            }
            graph.out(*node).find(|id| {
                let edge = &graph.edges[*id];
                edge.kind == EdgeKind::Rw
                    && inside(edge.to)
                    && product.of[(local(edge.to) * 2 + 1) as usize] == product_component
            })
        })?;
        let edge = graph.edges[start];
        let encode = |node: u32, after_rw: bool| u64::from(node) << 1 | u64::from(after_rw);
        let goal = encode(edge.from, false);
        let path = shortest_path(
            encode(edge.to, true),
            |state| state == goal,
            |state, out| {
                let (node, after_rw) = ((state >> 1) as u32, state & 1 != 0);
                for id in graph.out(node) {
                    let next = &graph.edges[id];
                    if !inside(next.to) {
                        continue;
                    }
                    match next.kind {
                        EdgeKind::Ww | EdgeKind::Wr => out.push((encode(next.to, false), id)),
                        EdgeKind::Rw if !after_rw => out.push((encode(next.to, true), id)),
                        EdgeKind::Rw | EdgeKind::Realtime => {}
                    }
                }
            },
            &mut Budget::unlimited(),
        );
        debug_assert!(path.is_some(), "states of one product component reach each other");
        let walk = [vec![start], path?].concat();
        match self.simple_nonadjacent(walk) {
            Ok(cycle) => cycle,
            // Too long to split: still a witness that a ww/wr cycle or a forbidden one exists.
            Err(walk) => Some(walk),
        }
    }

    /// A simple cycle out of the closed walk `walk` (edge ids) whose `rw` edges are never
    /// adjacent, or `None`; the walk itself back if longer than [`MAX_SPLIT_WALK`]. The
    /// product-graph searches may pass a node twice. Split at a repeated node, a walk with
    /// non-adjacent `rw` edges leaves a piece that still has them, or a piece without `rw`
    /// edges: a `ww`/`wr` cycle, which passes 1 and 2 report.
    fn simple_nonadjacent(&self, mut walk: Vec<usize>) -> Result<Option<Vec<usize>>, Vec<usize>> {
        if walk.len() > MAX_SPLIT_WALK {
            return Err(walk);
        }
        let edges = &self.graph.edges;
        let good = |cycle: &[usize]| {
            let kinds: Vec<EdgeKind> = cycle.iter().map(|id| edges[*id].kind).collect();
            kinds.contains(&EdgeKind::Rw) && !has_adjacent_rw(&kinds)
        };
        loop {
            let mut first_seen: HashMap<u32, usize> = HashMap::new();
            let repeated = walk.iter().enumerate().find_map(|(later, id)| {
                let earlier = *first_seen.entry(edges[*id].from).or_insert(later);
                (earlier != later).then_some((earlier, later))
            });
            let Some((earlier, later)) = repeated else {
                return Ok(Some(walk).filter(|cycle| good(cycle)));
            };
            let inner = walk[earlier..later].to_vec();
            let outer = [&walk[later..], &walk[..earlier]].concat();
            walk = if good(&inner) {
                inner
            } else if good(&outer) {
                outer
            } else {
                return Ok(None);
            };
        }
    }

    /// A cycle with two adjacent `rw` edges a -rw-> b -rw-> c, closed from c back to a
    /// without passing b (budgeted).
    fn adjacent_cycle(
        &self,
        components: &Components,
        component: u32,
        rw_edges: &[usize],
        budget: &mut Budget,
    ) -> Option<Vec<usize>> {
        let graph = self.graph;
        let pairs = rw_edges.iter().flat_map(|first| {
            let middle = graph.edges[*first].to;
            graph.out(middle).filter_map(move |second| {
                let edge = &graph.edges[second];
                let inside = components.of[edge.to as usize] == component;
                (edge.kind == EdgeKind::Rw && inside).then_some((*first, second))
            })
        });
        for (first, second) in pairs.take(MAX_STARTS) {
            let start = graph.edges[first].from;
            if graph.edges[second].to == start {
                return Some(vec![first, second]);
            }
            let middle = graph.edges[first].to;
            let back = (graph.edges[second].to, start);
            let path = self.path(components, component, back, Kinds::WW_WR_RW, Some(middle), budget);
            if let Some(path) = path {
                return Some([vec![first, second], path].concat());
            }
        }
        None
    }

    /// The class of `cycle` (edge ids in order).
    fn classify_edges(&self, cycle: &[usize]) -> AnomalyKind {
        let kinds: Vec<EdgeKind> = cycle.iter().map(|id| self.graph.edges[*id].kind).collect();
        classify(&kinds)
    }

    /// Reports `cycle` (edge ids in order) unless it was reported before.
    fn record(&mut self, cycle: &[usize]) {
        let rotation = cycle
            .iter()
            .enumerate()
            .min_by_key(|(_, id)| **id)
            .map_or(0, |(position, _)| position);
        let canonical = [&cycle[rotation..], &cycle[..rotation]].concat();
        let kind = self.classify_edges(&canonical);
        let edges: Vec<_> = canonical.iter().map(|id| self.graph.edges[*id]).collect();
        if !self.seen.insert(canonical) {
            return;
        }
        let txn = |node: u32| &self.txns[self.graph.txn_of[node as usize] as usize];
        let mut description = String::new();
        for edge in edges.iter().take(MAX_DESCRIBED_EDGES) {
            description.push_str(&txn(edge.from).name());
            description.push_str(&match edge.kind {
                EdgeKind::Ww => format!(" -ww(k{})-> ", edge.key),
                EdgeKind::Wr => format!(" -wr(k{})-> ", edge.key),
                EdgeKind::Rw => format!(" -rw(k{})-> ", edge.key),
                EdgeKind::Realtime => " -rt-> ".to_string(),
            });
        }
        if edges.len() > MAX_DESCRIBED_EDGES {
            description.push_str(&format!(
                "... ({} more edges) ... ",
                edges.len() - MAX_DESCRIBED_EDGES
            ));
        }
        if let Some(first) = edges.first() {
            description.push_str(&txn(first.from).name());
        }
        let mut keys = edges
            .iter()
            .filter(|edge| edge.kind != EdgeKind::Realtime)
            .map(|edge| edge.key);
        let key = keys.next().filter(|first| keys.all(|other| other == *first));
        let ops = edges
            .iter()
            .take(MAX_DESCRIBED_EDGES)
            .flat_map(|edge| txn(edge.from).ops())
            .collect();
        self.findings.add(kind, key, description, ops);
    }
}

/// The class of a cycle with these edge kinds (in cycle order), as Elle names it: by its
/// number of `rw` edges and whether two are adjacent (around the end too), with `-realtime`
/// when it needs a realtime edge.
pub(super) fn classify(kinds: &[EdgeKind]) -> AnomalyKind {
    let count = |kind: EdgeKind| kinds.iter().filter(|edge| **edge == kind).count();
    let rw = count(EdgeKind::Rw);
    let realtime = count(EdgeKind::Realtime) > 0;
    match (rw, has_adjacent_rw(kinds), count(EdgeKind::Wr) > 0, realtime) {
        (0, _, false, false) => AnomalyKind::G0,
        (0, _, false, true) => AnomalyKind::G0Realtime,
        (0, _, true, false) => AnomalyKind::G1c,
        (0, _, true, true) => AnomalyKind::G1cRealtime,
        (1, _, _, false) => AnomalyKind::GSingle,
        (1, _, _, true) => AnomalyKind::GSingleRealtime,
        (_, false, _, false) => AnomalyKind::GNonadjacent,
        (_, false, _, true) => AnomalyKind::GNonadjacentRealtime,
        (_, true, _, false) => AnomalyKind::G2Item,
        (_, true, _, true) => AnomalyKind::G2ItemRealtime,
    }
}

/// Whether two `rw` edges follow each other in the cycle (the last and the first included).
fn has_adjacent_rw(kinds: &[EdgeKind]) -> bool {
    (0..kinds.len()).any(|position| {
        kinds[position] == EdgeKind::Rw && kinds[(position + 1) % kinds.len()] == EdgeKind::Rw
    })
}
