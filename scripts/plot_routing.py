#!/usr/bin/env python3
"""Plot Kademlia lookup hops and requests against log2 N.

Reads the CSV written by the routing bench
(`cargo run --release -p shoal-benches --bin routing -- --csv FILE`) and
writes a PNG with two panels: hops per lookup (mean and 95th percentile)
and lookup requests per lookup, each against log2 of the network size, for
FIND_NODE and FIND_VALUE.

Usage: python3 scripts/plot_routing.py target/routing.csv docs/routing_hops.png
Needs matplotlib (pip install matplotlib).
"""

import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    source, target = sys.argv[1], sys.argv[2]
    rows = [r for r in csv.DictReader(open(source)) if r["layer"] == "kad"]
    if not rows:
        sys.exit(f"{source}: no kad rows")
    fig, (hops_ax, msgs_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for kind, marker in (("FIND_NODE", "o"), ("FIND_VALUE", "s")):
        mine = sorted((r for r in rows if r["kind"] == kind), key=lambda r: int(r["nodes"]))
        x = [float(r["log_estimate"]) for r in mine]
        hops_ax.plot(x, [float(r["mean_hops"]) for r in mine], marker=marker, label=f"{kind} mean")
        hops_ax.plot(
            x,
            [float(r["p95_hops"]) for r in mine],
            marker=marker,
            linestyle="--",
            label=f"{kind} p95",
        )
        msgs_ax.plot(x, [float(r["mean_messages"]) for r in mine], marker=marker, label=kind)
        for r in mine:
            msgs_ax.annotate(f"N={r['nodes']}", (float(r["log_estimate"]), float(r["mean_messages"])),
                             textcoords="offset points", xytext=(4, -10), fontsize=8)
    hops_ax.set_xlabel("log2 N")
    hops_ax.set_ylabel("hops (depth of the result)")
    hops_ax.set_title("Hops per lookup")
    hops_ax.legend(fontsize=8)
    hops_ax.grid(alpha=0.3)
    msgs_ax.set_xlabel("log2 N")
    msgs_ax.set_ylabel("requests per lookup (each answered once)")
    msgs_ax.set_title("Messages per lookup")
    msgs_ax.legend(fontsize=8)
    msgs_ax.grid(alpha=0.3)
    fig.suptitle("Shoal Kademlia in the simulator (k=20, alpha=3, 3 disjoint paths)")
    fig.tight_layout()
    fig.savefig(target, dpi=100)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
