#!/usr/bin/env python3
"""Where ringkv's server CPU went, per operation, from `perf script` output.

    perf_breakdown.py PERF_TXT --router-pid PID [--bench-json BENCH_JSON] [--under SYMBOL]

PERF_TXT is `perf script -F comm,pid,tid,ip,sym --no-inline` of a `perf record --call-graph
dwarf` on the nodes and the router (bench/scripts/profile.sh makes both). Each sample goes to
the first category whose test matches its thread or any frame of its stack, in the order
below, so a category means "this work and what it called". With --bench-json (the
benchmark's `--json`), shares become microseconds of server CPU per operation: the run's
server CPU-seconds per operation times the share. --under SYMBOL lists, for the samples
whose stack holds SYMBOL, what its innermost occurrence called and the leaf functions: the
next level down.
"""

import argparse
import collections
import json
import sys

# (name, test on (thread name, frames innermost first)); the first match wins.
CATEGORIES = [
    ("WAL writer thread (write + fdatasync)", lambda comm, frames: comm.startswith("ringkv-wal")),
    ("applying entries (state machine, sled)", lambda comm, frames: has(frames, "state_machine::apply", "apply_entry")),
    ("oracle timestamps", lambda comm, frames: has(frames, "ringkv_node::tso")),
    ("openraft replication tasks", lambda comm, frames: has(frames, "openraft::replication")),
    ("openraft core (log store appends included)", lambda comm, frames: has(frames, "openraft::core", "openraft::engine", "RaftCore")),
    ("Raft transport (pipeline, network)", lambda comm, frames: has(frames, "raft::network", "raft_pipeline", "service::raft", "raft::pipeline")),
    ("shard service and proposals", lambda comm, frames: has(frames, "service::shard", "proposal", "WriteBatcher", "concurrency", "read_index")),
    ("sled's own threads and other sled", lambda comm, frames: has(frames, "sled::")),
    ("gRPC / HTTP/2 (tonic, h2, hyper)", lambda comm, frames: any(f.startswith(("h2::", "<h2", "tonic", "<tonic", "hyper", "<hyper")) for f in frames)),
    ("tokio scheduling, parking, timers", lambda comm, frames: has(frames, "tokio::runtime")),
    ("other", lambda comm, frames: True),
]


def has(frames, *needles):
    return any(needle in frame for frame in frames for needle in needles)


def samples(path):
    """(comm, pid, frames innermost first) per sample."""
    current = None
    with open(path, errors="replace") as lines:
        for line in lines:
            line = line.rstrip("\n")
            if not line.strip():
                if current is not None:
                    yield current
                current = None
            elif not line[0].isspace():
                fields = line.split()
                current = (" ".join(fields[:-1]), fields[-1].split("/")[0], [])
            elif current is not None:
                parts = line.strip().split(None, 1)
                current[2].append(parts[1] if len(parts) > 1 else "?")
    if current is not None:
        yield current


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("perf_txt")
    parser.add_argument("--router-pid", required=True)
    parser.add_argument("--bench-json")
    parser.add_argument("--under")
    args = parser.parse_args()

    all_samples = list(samples(args.perf_txt))
    if not all_samples:
        sys.exit("no samples in " + args.perf_txt)
    per_op_us = None
    if args.bench_json:
        with open(args.bench_json) as file:
            run = json.load(file)["runs"][0]
        per_op_us = run["server_cpu_s"] / run["ops"] * 1e6
        mode = run["mode"]
        load = f"{mode.get('outstanding')} clients" if mode.get("loop") == "closed" else str(mode)
        print(f"{run['workload']}, {load}: {run['ops_per_s']:,.0f} ops/s, "
              f"{per_op_us:.0f} µs of server CPU per op (nodes + router)")

    if args.under:
        callees, leaves, found = collections.Counter(), collections.Counter(), 0
        for _, _, frames in all_samples:
            at = next((i for i, frame in enumerate(frames) if args.under in frame), None)
            if at is None:
                continue
            found += 1
            callees[frames[at - 1] if at > 0 else "(itself)"] += 1
            leaves[frames[0]] += 1
        print(f"{found} of {len(all_samples)} samples hold {args.under}")
        for title, counter in (("what it called", callees), ("leaf functions", leaves)):
            print(f"-- {title}")
            for name, count in counter.most_common(25):
                print(f"{100 * count / found:5.1f}%  {name[:150]}")
        return

    counts = collections.Counter()
    for comm, pid, frames in all_samples:
        if pid == args.router_pid:
            counts["router (all of it)"] += 1
            continue
        name = next(name for name, test in CATEGORIES if test(comm, frames))
        counts[name] += 1
    total = len(all_samples)
    print(f"{total} samples")
    for name in ["router (all of it)"] + [name for name, _ in CATEGORIES]:
        share = counts[name] / total
        cost = f"{share * per_op_us:7.1f} µs/op" if per_op_us is not None else ""
        print(f"{100 * share:5.1f}%  {cost}  {name}")


if __name__ == "__main__":
    main()
