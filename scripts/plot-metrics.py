#!/usr/bin/env python3
"""Draws the training curves of one or several lt-train runs from their metrics.jsonl into one PNG,
for a look at a run without TensorBoard.

One panel per quantity (loss, learning rate, gradient norm, images/s, and the kNN top-1 score
when a run's metrics.jsonl has one), against the global step; one line per run, labelled by its
folder's name. A run still in progress can be plotted: a torn last line is left out.

    scripts/plot-metrics.py OUT [OUT ...] [-o FILE.png]

Needs matplotlib (Debian: python3-matplotlib).
"""
import argparse
import json
import os
import sys

PANELS = [("loss", "loss"), ("lr", "learning rate"), ("grad_norm", "gradient norm"),
          ("img_per_s", "images/s"), ("knn_top1", "kNN top-1")]
OPTIONAL = {"knn_top1"}  # drawn only when some run records it


def fail(msg):
    print(f"plot-metrics: error: {msg}", file=sys.stderr)
    sys.exit(1)


def read_run(out):
    """{key: ([steps], [values])} from OUT/metrics.jsonl."""
    path = os.path.join(out, "metrics.jsonl")
    if not os.path.isdir(out):
        fail(f"{out}: no such folder")
    if not os.path.isfile(path):
        fail(f"{out} holds no metrics.jsonl: not an lt-train output folder (--out), or a run "
             f"that has not taken its first step")
    series = {}
    with open(path) as f:
        lines = f.readlines()
    for k, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if k == len(lines) and not line.endswith("\n"):
                continue  # the torn last line of a run being written
            fail(f"{path}: line {k} is not JSON")
        if not isinstance(row, dict) or "step" not in row:
            fail(f"{path}: line {k} has no step: not a metrics.jsonl of lt-train")
        for key, _ in PANELS:
            if isinstance(row.get(key), (int, float)):
                s = series.setdefault(key, ([], []))
                s[0].append(row["step"])
                s[1].append(row[key])
    if not series:
        fail(f"{path} holds no step yet")
    return series


def labels(outs):
    """Each run's folder name, or its whole path where two names are the same."""
    names = [os.path.basename(os.path.normpath(o)) for o in outs]
    return [n if names.count(n) == 1 else os.path.normpath(o) for n, o in zip(names, outs)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outs", nargs="+", metavar="OUT", help="lt-train output folders (--out)")
    ap.add_argument("-o", "--output", default="metrics.png", metavar="FILE.png",
                    help="the PNG to write (default metrics.png)")
    args = ap.parse_args()
    runs = [read_run(o) for o in args.outs]
    try:
        import matplotlib
    except ImportError:
        fail("needs matplotlib: apt-get install python3-matplotlib (or pip install matplotlib)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(k, t) for k, t in PANELS if k not in OPTIONAL or any(k in r for r in runs)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.6 * len(panels)), sharex=True,
                             squeeze=False)
    for (key, title), ax in zip(panels, axes[:, 0]):
        for run, label in zip(runs, labels(args.outs)):
            if key in run:
                steps, values = run[key]
                ax.plot(steps, values, label=label, linewidth=1,
                        marker="o" if len(steps) == 1 else None)
        ax.set_ylabel(title)
        ax.grid(True, alpha=0.3)
    axes[0, 0].legend(loc="best", fontsize="small")
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    # written whole or not at all: a temporary beside it, renamed into place
    tmp = f"{args.output}.tmp.{os.getpid()}"
    try:
        fig.savefig(tmp, format="png", dpi=100)
        os.replace(tmp, args.output)
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        fail(f"{args.output}: cannot write: {e.strerror}")
    print(f"plot-metrics: wrote {args.output} ({len(runs)} run{'s' if len(runs) != 1 else ''})",
          file=sys.stderr)


if __name__ == "__main__":
    main()
