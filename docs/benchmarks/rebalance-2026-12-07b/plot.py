"""Draws configs.svg from configs.json: per run, the write p99 during the move as a multiple
of the p99 before it (issue 12 asks for at most 2x) and the longest write latency during the
move. `python3 plot.py` in this directory."""
import json

rows = json.load(open("configs.json"))
W, H, left, top, bottom, gap = 1000, 460, 70, 50, 140, 60
plot_w = (W - left - gap - 30) / 2
plot_h = H - top - bottom


def panel(x0, title, key, top_value, unit, target=None):
    out = [f'<text x="{x0 + plot_w / 2:.1f}" y="{top - 12}" text-anchor="middle" font-size="13">{title}</text>']
    for i in range(6):
        v = top_value * i / 5
        y = top + plot_h - plot_h * v / top_value
        out.append(f'<line x1="{x0:.1f}" x2="{x0 + plot_w:.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{x0 - 6:.1f}" y="{y + 4:.1f}" text-anchor="end">{v:g}{unit}</text>')
    bar_w = plot_w / len(rows)
    for i, row in enumerate(rows):
        v = row[key]
        h = plot_h * min(v, top_value) / top_value
        x = x0 + i * bar_w + bar_w * 0.15
        colour = "#c66" if row["leaky"] else {8: "#d93", 6: "#48a", 5: "#76b", 4: "#4a6"}[row["budget_mib"]]
        out.append(f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w * 0.7:.1f}" height="{h:.1f}" fill="{colour}"><title>{row["label"]}: {v:.2f}{unit}</title></rect>')
        out.append(f'<text x="{x + bar_w * 0.35:.1f}" y="{top + plot_h - h - 4:.1f}" text-anchor="middle" font-size="10">{v:.1f}</text>')
        lx, ly = x + bar_w * 0.35, top + plot_h + 10
        out.append(f'<text x="{lx:.1f}" y="{ly:.1f}" transform="rotate(60 {lx:.1f} {ly:.1f})" font-size="10">{row["short"]}</text>')
    if target is not None:
        y = top + plot_h - plot_h * target / top_value
        out.append(f'<line x1="{x0:.1f}" x2="{x0 + plot_w:.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="#2a7" stroke-dasharray="6 4"/>')
        out.append(f'<text x="{x0 + plot_w - 4:.1f}" y="{y - 4:.1f}" text-anchor="end" fill="#2a7">target</text>')
    return out


out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
       f'<rect width="{W}" height="{H}" fill="white"/>']
out += panel(left, "write p99 during the move / before it", "ratio", 4.0, "x", target=2.0)
out += panel(left + plot_w + gap, "longest write during the move (ms)", "max_ms", 500.0, "")
out.append(f'<text x="{left}" y="{H - 8}">red: before (each capped wait let every follower take 1 MiB); held budget: orange 8 MiB/s, blue 6 MiB/s, purple 5 MiB/s, green 4 MiB/s</text>')
out.append("</svg>")
open("configs.svg", "w").write("\n".join(out) + "\n")
