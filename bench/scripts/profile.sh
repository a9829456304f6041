#!/usr/bin/env bash
# Profiles ringkv's servers under one `ringkv-bench` load: runs the benchmark, and once its
# measured window is under way records `perf` (DWARF call graphs) on the three nodes and the
# router for a few seconds, then prints where the servers' CPU went per operation
# (`perf_breakdown.py`).
#
#   bench/scripts/profile.sh OUT_DIR [WORKLOAD] [CLIENTS] [SHARDS] [BIN_DIR]
#
# WORKLOAD is a `ringkv-bench` workload (default put), CLIENTS the closed-loop clients
# (default 64), SHARDS the shard count (default 16), BIN_DIR the binaries (default
# target/release; build them with `cargo build --release --workspace --bins`). OUT_DIR gets
# the benchmark's JSON and log, `perf.data`, `perf.txt` (`perf script`) and `breakdown.txt`.
# `perf` comes from Debian's `linux-perf` package; run as root (or lower
# `kernel.perf_event_paranoid`). Run it on a quiet machine: the profile shares the cores.
set -euo pipefail

out=${1:?usage: profile.sh OUT_DIR [WORKLOAD] [CLIENTS] [SHARDS] [BIN_DIR]}
workload=${2:-put}
clients=${3:-64}
shards=${4:-16}
bin_dir=${5:-target/release}
record_s=${PERF_SECONDS:-6}
here=$(cd "$(dirname "$0")" && pwd)

command -v perf >/dev/null || { echo "profile.sh: perf is missing (apt-get install linux-perf)" >&2; exit 1; }
[ -x "$bin_dir/ringkv-bench" ] || { echo "profile.sh: no $bin_dir/ringkv-bench (cargo build --release --workspace --bins)" >&2; exit 1; }
mkdir -p "$out"
out=$(cd "$out" && pwd)

"$bin_dir/ringkv-bench" run --bin-dir "$bin_dir" --workloads "$workload" --clients "$clients" \
    --warmup-s 2 --duration-s $((record_s + 8)) --repetitions 1 --records 10000 --shards "$shards" \
    --work-dir "$out/work" --json "$out/bench.json" >"$out/bench.log" 2>&1 &
bench=$!
trap 'kill "$bench" 2>/dev/null || true' EXIT

# The load phase ends with "loaded in"; the warm-up follows it.
for _ in $(seq 1200); do
    grep -q 'loaded in' "$out/bench.log" 2>/dev/null && break
    kill -0 "$bench" 2>/dev/null || { cat "$out/bench.log" >&2; exit 1; }
    sleep 0.25
done
sleep 4
router=$(pgrep -x ringkv-router | head -n 1)
pids=$(pgrep -d, -x 'ringkv-node|ringkv-router')
perf record -F 300 --call-graph dwarf,8192 -p "$pids" -o "$out/perf.data" -- sleep "$record_s" \
    >"$out/perf.log" 2>&1
wait "$bench"
trap - EXIT
perf script -i "$out/perf.data" -F comm,pid,tid,ip,sym --no-inline >"$out/perf.txt" 2>/dev/null
python3 "$here/perf_breakdown.py" "$out/perf.txt" --router-pid "$router" --bench-json "$out/bench.json" \
    | tee "$out/breakdown.txt"
