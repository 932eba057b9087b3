#!/usr/bin/env python3
"""Chart the lookup bench's JSON: median throughput per contender per workload,
with whiskers from the slowest to the fastest of its runs.

    cargo bench --bench lookup -- --json lookup.json
    python3 benches/plot.py lookup.json            # writes benches/throughput.svg
    python3 benches/plot.py lookup.json -o out.png # any format matplotlib writes

Needs matplotlib (pip install matplotlib).
"""

import argparse
import json
import os
import sys

PANELS = [
    ("uniform_hit", "uniform_hit (all hits)"),
    ("zipf_miss", "zipf_miss (Zipf 1.05, {miss:.1f}% misses)"),
    ("publish_during", "readers during republish + evict"),
    ("fill", "fill: batch_set of the whole table"),
    ("fill_reserved", "fill after reserve (size hint)"),
]
COLORS = {
    "limit": "#9e9e9e",
    "indexed_limit": "#c8c8c8",
    "upstream_peer": "#e07b39",
    "dashmap": "#6a9fd4",
    "quick_cache": "#4f6fa8",
    "kvzch": "#2e9e5b",
    "kvzch_c": "#7cc68f",
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", help="results written by --json")
    parser.add_argument(
        "-o",
        "--output",
        default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "throughput.svg"),
        help="image to write (default: throughput.svg beside this script)",
    )
    args = parser.parse_args()

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("plot.py needs matplotlib: pip install matplotlib")

    # Text stays text and ids stay stable, so the committed SVG diffs cleanly.
    plt.rcParams["svg.fonttype"] = "none"
    plt.rcParams["svg.hashsalt"] = "kvzch-lookup"

    with open(args.json) as f:
        results = json.load(f)
    config = results["config"]
    contenders = config["contenders"]
    medians = {
        (s["workload"], s["contender"], s["threads"]): s["median"]["rows_per_s"]
        for s in results["series"]
    }
    # The machine is shared and noisy: how far a contender's runs spread says
    # how much a gap between two medians can be trusted.
    ranges = {
        (s["workload"], s["contender"], s["threads"]): (
            min(r["rows_per_s"] for r in s["runs"]),
            max(r["rows_per_s"] for r in s["runs"]),
        )
        for s in results["series"]
        if s["runs"]
    }

    misses = {a["stream"]: a["pool_miss_fraction"] for a in results.get("agreement", [])}
    panels = [
        (workload, title.format(miss=100 * misses.get(workload, float("nan"))))
        for workload, title in PANELS
        if any(k[0] == workload for k in medians)
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.6), squeeze=False)
    width = 0.8 / len(contenders)
    for ax, (workload, title) in zip(axes[0], panels):
        threads = sorted({t for (w, _, t) in medians if w == workload})
        for i, contender in enumerate(contenders):
            xs, ys, below, above = [], [], [], []
            for g, t in enumerate(threads):
                key = (workload, contender, t)
                value = medians.get(key)
                if value is not None:
                    slowest, fastest = ranges.get(key, (value, value))
                    xs.append(g - 0.4 + width * (i + 0.5))
                    ys.append(value / 1e6)
                    below.append((value - slowest) / 1e6)
                    above.append((fastest - value) / 1e6)
            bars = ax.bar(
                xs,
                ys,
                width,
                yerr=[below, above],
                error_kw={"elinewidth": 0.6, "capsize": 1.5, "ecolor": "#444444"},
                label=contender,
                color=COLORS.get(contender),
            )
            ax.bar_label(bars, fmt="%.1f", fontsize=6, padding=1)
        ax.set_xticks(range(len(threads)))
        label = "reader thread" if workload == "publish_during" else "thread"
        ax.set_xticklabels([f"{t} {label}{'s' if t > 1 else ''}" for t in threads])
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("M rows/s (median; range of the runs)")
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(contenders), frameon=False)
    fig.suptitle(
        f"kvzch lookup bench: {config['rows']:,} rows x {config['row_bytes']} B, "
        f"batches of {config['batch']}, median of {config['runs']} runs, "
        f"{results['machine']['cpus']} CPUs",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    fig.savefig(args.output, metadata={"Date": None} if args.output.endswith(".svg") else None)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
