"""Draws per-entry-cost.svg from the runs' JSON (ringkv at 16, 4 and 1 shards; etcd): puts/s
and puts per server CPU-second at 64 clients. `python3 plot.py` in this directory."""
import json

def run(path, clients):
    data = json.load(open(path))
    for r in data["runs"]:
        if r["mode"]["outstanding"] == clients:
            cpu = sum(s["cpu_s"] for s in r["servers"])
            return r["ops_per_s"], r["ops"] / cpu, r["latency"]["p99_us"] / 1000
    raise SystemExit(f"no {clients}-client run in {path}")

configs = [("ringkv, 16 shards", "ringkv-16-shards.json"), ("ringkv, 4 shards", "ringkv-4-shards.json"),
           ("ringkv, 1 shard", "ringkv-1-shards.json"), ("etcd (1 Raft group)", "etcd.json")]
rows = [(name, *run(path, 64)) for name, path in configs]
W, H, left, top, bottom = 760, 360, 70, 50, 70
plot_h = H - top - bottom
top_value = max(max(r[1], r[2]) for r in rows) * 1.15
group_w = (W - left - 20) / len(rows)
bar_w = group_w * 0.32
out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="{W/2}" y="22" text-anchor="middle" font-size="14">64 clients\' puts: the same code at 16, 4 and 1 shards, and etcd (3 members each, 2 cores)</text>']
for i in range(6):
    v = top_value * i / 5
    y = top + plot_h - plot_h * v / top_value
    out.append(f'<line x1="{left}" x2="{W-20}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
    out.append(f'<text x="{left-6}" y="{y+4:.1f}" text-anchor="end">{v:,.0f}</text>')
for g, (name, ops, per_cpu, p99) in enumerate(rows):
    x0 = left + g * group_w + group_w * 0.15
    for k, (value, colour) in enumerate([(ops, "#4c78a8"), (per_cpu, "#f58518")]):
        h = plot_h * value / top_value
        x = x0 + k * (bar_w + 4)
        out.append(f'<rect x="{x:.1f}" y="{top+plot_h-h:.1f}" width="{bar_w:.1f}" height="{h:.1f}" fill="{colour}"/>')
        out.append(f'<text x="{x+bar_w/2:.1f}" y="{top+plot_h-h-4:.1f}" text-anchor="middle">{value:,.0f}</text>')
    out.append(f'<text x="{x0+bar_w+2:.1f}" y="{top+plot_h+18}" text-anchor="middle">{name}</text>')
    out.append(f'<text x="{x0+bar_w+2:.1f}" y="{top+plot_h+34}" text-anchor="middle" fill="#555">p99 {p99:.1f} ms</text>')
out.append(f'<rect x="{left}" y="{H-22}" width="12" height="12" fill="#4c78a8"/><text x="{left+16}" y="{H-12}">puts/s</text>')
out.append(f'<rect x="{left+90}" y="{H-22}" width="12" height="12" fill="#f58518"/><text x="{left+106}" y="{H-12}">puts per server CPU-second</text>')
out.append('</svg>')
open("per-entry-cost.svg", "w").write("\n".join(out) + "\n")
for r in rows: print(r)
