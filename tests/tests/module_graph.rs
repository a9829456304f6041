//! The code's shape, checked: no module cycles inside a crate (a module graph without
//! cycles can be read bottom-up), and no production file in the node over the size a
//! newcomer can read in one sitting.
//!
//! A module's edges are the `crate::x` paths its files name (`use crate::x::…`,
//! `use crate::{x, y}`, or inline `crate::x::f()`), at the granularity of the crate's
//! top-level modules; `super::` paths stay inside a module and are not edges.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Crates whose module graph must be acyclic.
const ACYCLIC_CRATES: &[&str] = &[
    "node", "client", "router", "gossip", "ring", "proto", "kvctl", "launcher", "lease",
];
/// Most lines of production code (before `#[cfg(test)]`) in one file of the node.
const MAX_NODE_FILE_LINES: usize = 500;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
        .to_path_buf()
}

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|err| panic!("reading {}: {err}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
}

/// The top-level module a source file belongs to (`None` for the crate root and binaries).
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    match name {
        "lib" | "main" | "bin" => None,
        name => Some(name.to_string()),
    }
}

/// The top-level modules `source` names through `crate::` paths.
fn crate_references(source: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = source;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let item = item.trim();
                let name: String = item
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    names.insert(name);
                }
            }
        } else {
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                names.insert(name);
            }
        }
        rest = after;
    }
    names
}

/// Edges between the crate's top-level modules.
fn module_graph(krate: &str) -> BTreeMap<String, BTreeSet<String>> {
    let src = workspace().join(krate).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let Some(module) = top_module(&src, &file) else {
            continue;
        };
        let source =
            std::fs::read_to_string(&file).unwrap_or_else(|err| panic!("reading {}: {err}", file.display()));
        let targets = graph.entry(module.clone()).or_default();
        targets.extend(
            crate_references(&source)
                .into_iter()
                .filter(|target| *target != module),
        );
    }
    graph
}

/// A cycle of `graph`, if it has one (depth-first search, white/grey/black).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|seen| seen == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

/// The checker finds what it must: references in `use` groups and inline paths, and a cycle.
#[test]
fn the_checker_sees_edges_and_cycles() {
    let references = crate_references("use crate::{a::X, b};\nfn f() { crate::c::g(); }\nuse super::d;");
    assert_eq!(references, BTreeSet::from(["a".into(), "b".into(), "c".into()]));
    let graph = BTreeMap::from([
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["c".to_string()])),
        ("c".to_string(), BTreeSet::from(["a".to_string()])),
    ]);
    assert_eq!(
        find_cycle(&graph),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    let acyclic = BTreeMap::from([("a".to_string(), BTreeSet::from(["b".to_string()]))]);
    assert_eq!(find_cycle(&acyclic), None);
}

/// Every crate's modules form a DAG.
#[test]
fn crate_modules_have_no_cycles() {
    for krate in ACYCLIC_CRATES {
        let graph = module_graph(krate);
        assert!(!graph.is_empty(), "{krate}: no modules found");
        if let Some(cycle) = find_cycle(&graph) {
            panic!("{krate}: module cycle {}", cycle.join(" -> "));
        }
    }
}

/// No production file of the node is longer than a newcomer reads in one sitting.
#[test]
fn node_files_stay_readable() {
    let src = workspace().join("node").join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut too_long = Vec::new();
    for file in files {
        let source =
            std::fs::read_to_string(&file).unwrap_or_else(|err| panic!("reading {}: {err}", file.display()));
        let production = source.split("#[cfg(test)]").next().unwrap_or_default();
        let lines = production.lines().count();
        let is_test_file = file
            .file_name()
            .is_some_and(|name| name.to_string_lossy().ends_with("_tests.rs"));
        if lines > MAX_NODE_FILE_LINES && !is_test_file {
            too_long.push(format!("{} ({lines} lines)", file.display()));
        }
    }
    assert!(
        too_long.is_empty(),
        "production files over {MAX_NODE_FILE_LINES} lines: {too_long:?}"
    );
}
