#!/usr/bin/env python3
"""SVG charts of a ``cargo bench --bench peers`` run, from the JSON it writes.

Usage (Python 3.9+, standard library only):

    cargo bench --bench peers              # writes target/peers.json
    python3 benches/charts.py target/peers.json docs/charts/

    # several runs (say PEERS_WORKERS=2, 4, 8 and 16) merged into one set:
    python3 benches/charts.py run2.json run4.json run16.json docs/charts/

Writes into the folder (the last argument):

* ``ratios.svg``: one bar per row of the table, the ratio peer median /
  multiproc median on a log scale (right of 1x: multiproc faster).
* ``scaling-<metric>.svg``: for every metric measured at two or more worker
  counts (rows whose metric differs only in "N workers"), the time per
  operation against the worker count, multiproc and each peer (whose
  "N threads" is read the same way), and the parent's CPU time per
  operation where the bench measured it.

The SVG is written by hand (no plotting library), so the charts can be
regenerated anywhere the bench runs.
"""

import html
import json
import math
import os
import re
import sys

FONT = "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\""
FASTER = "#2f7d32"
SLOWER = "#c62828"
PALETTE = ["#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f"]


def esc(s):
    return html.escape(str(s), quote=True)


def fmt_time(s):
    """Seconds as ns, µs, ms or s, about 3 significant digits."""
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns")):
        if s >= scale or unit == "ns":
            v = s / scale
            return f"{v:.0f} {unit}" if v >= 100 else f"{v:.1f} {unit}" if v >= 10 else f"{v:.2f} {unit}"
    return str(s)


def fmt_ratio(r):
    if r >= 100:
        return f"{r:.0f}x"
    if r >= 10:
        return f"{r:.1f}x"
    return f"{r:.2f}x" if r >= 0.01 else f"{r:.2g}x"


def median(fig):
    return fig.get("median_s") if isinstance(fig, dict) else None


def load(paths):
    rows, runs = [], []
    for p in paths:
        with open(p, encoding="utf-8") as f:
            doc = json.load(f)
        runs.append(doc)
        rows.extend(doc.get("rows", []))
    return runs, rows


def subtitle(runs):
    parts = []
    for r in runs:
        m = r.get("machine", {})
        parts.append(f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores"
                     + (" (PEERS_QUICK)" if r.get("quick") else ""))
    return "; ".join(sorted(set(parts)))


def text(x, y, s, size=12, anchor="start", weight="normal", fill="#222"):
    return (f'<text x="{x:.1f}" y="{y:.1f}" {FONT} font-size="{size}" '
            f'text-anchor="{anchor}" font-weight="{weight}" fill="{fill}">{esc(s)}</text>')


def ratio_chart(runs, rows):
    """One horizontal bar per row, grouped under its metric."""
    label_w, bar_w, right = 430, 420, 70
    line_h, head_h, top = 17, 20, 58
    ratios = [r["ratio"] for r in rows if r.get("ratio")]
    if not ratios:
        return None
    lo = math.floor(math.log10(min(ratios + [0.5])))
    hi = math.ceil(math.log10(max(ratios + [2.0])))
    span = max(hi - lo, 1)

    def xpos(r):
        return label_w + (math.log10(r) - lo) / span * bar_w

    body, y, metric = [], top, None
    for r in rows:
        if r["metric"] != metric:
            metric = r["metric"]
            y += head_h
            body.append(text(8, y - 5, metric, size=12, weight="bold"))
        y += line_h
        body.append(text(label_w - 8, y - 4, r["peer"], size=11, anchor="end", fill="#444"))
        ratio = r.get("ratio")
        if ratio:
            x0, x1 = xpos(1.0), xpos(ratio)
            color = FASTER if ratio >= 1 else SLOWER
            body.append(f'<rect x="{min(x0, x1):.1f}" y="{y - line_h + 3:.1f}" '
                        f'width="{max(abs(x1 - x0), 1):.1f}" height="{line_h - 5}" fill="{color}"/>')
            body.append(text(max(x0, x1) + 4, y - 4, fmt_ratio(ratio), size=11))
        else:
            body.append(text(xpos(1.0) + 4, y - 4, "n/a", size=11, fill="#888"))
    height = y + 40
    width = label_w + bar_w + right
    grid = []
    for p in range(lo, hi + 1):
        x = label_w + (p - lo) / span * bar_w
        grid.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{y + 4}" '
                    f'stroke="{"#000" if p == 0 else "#ddd"}" stroke-width="1"/>')
        grid.append(text(x, y + 20, fmt_ratio(10.0 ** p), size=11, anchor="middle"))
    head = [
        text(8, 20, "multiproc against its peers: peer median / multiproc median (log scale)",
             size=15, weight="bold"),
        text(8, 38, "right of 1x (green): multiproc faster; left (red): the peer is. "
             + subtitle(runs), size=11, fill="#555"),
    ]
    return svg(width, height, head + grid + body)


def svg(width, height, parts):
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}">\n'
            f'<rect width="{width}" height="{height}" fill="#fff"/>\n'
            + "\n".join(parts) + "\n</svg>\n")


WORKERS = re.compile(r"\b(\d+) workers?\b")
THREADS = re.compile(r"\b(\d+) threads?\b")


def scaling_groups(rows):
    """{metric with "N workers": {series name: {workers: seconds}}}."""
    groups = {}
    for r in rows:
        m = WORKERS.search(r["metric"])
        if not m:
            continue
        w = int(m.group(1))
        key = WORKERS.sub("N workers", r["metric"])
        g = groups.setdefault(key, {})
        ours = median(r.get("ours"))
        if ours is not None:
            g.setdefault("multiproc", {}).setdefault(w, ours)
        cpu = median(r.get("ours_cpu"))
        if cpu is not None:
            g.setdefault("multiproc: parent CPU", {}).setdefault(w, cpu)
        theirs = median(r.get("theirs"))
        if theirs is not None:
            g.setdefault(THREADS.sub("N threads", r["peer"]), {}).setdefault(w, theirs)
    return {k: v for k, v in groups.items()
            if len(v.get("multiproc", {})) >= 2}


def scaling_chart(runs, key, series, per):
    left, plot_w, plot_h, top, legend_h = 80, 520, 300, 60, 18
    workers = sorted({w for s in series.values() for w in s})
    ymax = max(v for s in series.values() for v in s.values()) * 1.1
    nleg = len(series)
    height = top + plot_h + 50 + nleg * legend_h
    width = left + plot_w + 80

    def xpos(w):
        if len(workers) == 1:
            return left + plot_w / 2
        # log2 spacing: 1, 2, 4, 8, 16 equally apart
        lo, hi = math.log2(workers[0]), math.log2(workers[-1])
        return left + (math.log2(w) - lo) / (hi - lo) * plot_w

    def ypos(v):
        return top + plot_h - v / ymax * plot_h

    parts = [
        text(8, 20, key, size=14, weight="bold"),
        text(8, 38, f"time per {per} (lower is better) against workers/threads; "
             + subtitle(runs), size=11, fill="#555"),
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>',
    ]
    for i in range(6):
        v = ymax * i / 5
        y = ypos(v)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(text(left - 6, y + 4, fmt_time(v), size=11, anchor="end"))
    for w in workers:
        parts.append(text(xpos(w), top + plot_h + 18, str(w), size=11, anchor="middle"))
    parts.append(text(left + plot_w / 2, top + plot_h + 36, "workers (threads)", size=11,
                      anchor="middle"))
    for i, (name, pts) in enumerate(sorted(series.items(), key=lambda kv: kv[0] != "multiproc")):
        color = PALETTE[i % len(PALETTE)]
        dash = ' stroke-dasharray="5,4"' if "CPU" in name else ""
        xs = sorted(pts)
        path = " ".join(f"{'M' if j == 0 else 'L'}{xpos(w):.1f},{ypos(pts[w]):.1f}"
                        for j, w in enumerate(xs))
        parts.append(f'<path d="{path}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
        for w in xs:
            parts.append(f'<circle cx="{xpos(w):.1f}" cy="{ypos(pts[w]):.1f}" r="3.5" fill="{color}"/>')
            parts.append(text(xpos(w) + 6, ypos(pts[w]) - 6, fmt_time(pts[w]), size=10, fill=color))
        ly = top + plot_h + 50 + i * legend_h
        parts.append(f'<line x1="{left}" y1="{ly - 4}" x2="{left + 24}" y2="{ly - 4}" '
                     f'stroke="{color}" stroke-width="2"{dash}/>')
        parts.append(text(left + 30, ly, name, size=11))
    return svg(width, height, parts)


def slug(s):
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")[:80]


def main(argv):
    if len(argv) < 3 or argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0 if len(argv) > 1 and argv[1] in ("-h", "--help") else 2
    *inputs, out = argv[1:]
    runs, rows = load(inputs)
    os.makedirs(out, exist_ok=True)
    written = []
    chart = ratio_chart(runs, rows)
    if chart:
        path = os.path.join(out, "ratios.svg")
        with open(path, "w", encoding="utf-8") as f:
            f.write(chart)
        written.append(path)
    for key, series in sorted(scaling_groups(rows).items()):
        per = next((r.get("per", "operation") for r in rows
                    if WORKERS.sub("N workers", r["metric"]) == key), "operation")
        path = os.path.join(out, f"scaling-{slug(key.removeprefix('scaling: '))}.svg")
        with open(path, "w", encoding="utf-8") as f:
            f.write(scaling_chart(runs, key, series, per))
        written.append(path)
    for p in written:
        print(p)
    if not written:
        print("no rows with figures in", ", ".join(inputs), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
