#!/usr/bin/env python
"""Plot a run's curves to a PNG: ``python tools/plot_run.py <run_dir> [--out curves.png]``.

Reads ``<run_dir>/metrics.jsonl`` (written by the training loop) and draws total / LM / MTP / aux training
loss and validation loss against the step, the learning rate, and tokens/s. Default output:
``<run_dir>/curves.png``.
"""
import argparse
import os
import sys

from pangu_ms.eval.run_metrics import read_metrics


def load_metrics(run_dir: str) -> list[dict]:
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no metrics.jsonl in {run_dir} (is it a pangu_ms run directory?)")
    return read_metrics(path)


def series(rows, key):
    pts = sorted({r["step"]: r[key] for r in rows if key in r}.items())
    return [p[0] for p in pts], [p[1] for p in pts]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("--out", default=None, help="PNG path (default <run_dir>/curves.png)")
    args = ap.parse_args(argv)
    from pangu_ms.data.errors import DataError
    try:
        rows = load_metrics(args.run_dir)
    except (FileNotFoundError, ValueError) as e:
        raise DataError(str(e)) from None
    out = args.out or os.path.join(args.run_dir, "curves.png")
    if not os.path.isdir(os.path.dirname(os.path.abspath(out))):
        raise DataError(f"--out: directory of {out} does not exist")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    for key, style in (("loss/total", "-"), ("loss/lm", "-"), ("loss/mtp", "--"), ("valid/loss", "o-")):
        x, y = series(rows, key)
        if x:
            ax.plot(x, y, style, label=key, markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats)")
    ax.set_title("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    x, y = series(rows, "loss/aux")
    if x:
        axes[1].plot(x, y, label="aux loss")
    x, y = series(rows, "lr")
    if x:
        twin = axes[1].twinx()
        twin.plot(x, y, color="tab:red", label="lr")
        twin.set_ylabel("learning rate", color="tab:red")
    axes[1].set_title("aux loss / learning rate")
    axes[1].set_xlabel("step")
    axes[1].grid(alpha=0.3)
    x, y = series(rows, "perf/tokens_per_s")
    axes[2].plot(x, y)
    axes[2].set_title("throughput")
    axes[2].set_xlabel("step")
    axes[2].set_ylabel("tokens/s")
    axes[2].grid(alpha=0.3)
    fig.suptitle(os.path.basename(os.path.abspath(args.run_dir)))
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(out)
    return 0


if __name__ == "__main__":
    from pangu_ms.cli import run_cli
    sys.exit(run_cli(main))
