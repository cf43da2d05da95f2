#!/usr/bin/env python
"""Expert-load analysis of a training run: ``python tools/analyze_moe.py --run <run_dir> [--out DIR]``.

Reads ``<run>/expert_load.jsonl`` (written by the training loop at every ``train.log_interval``: tokens routed to
each expert of each MoE layer before any drop, summed over all ranks, and under expert parallelism the placement
tables the step ran under) and ``<run>/metrics.jsonl`` (placement checks, drop rate). Writes to ``--out``
(default ``<run>/analysis``):

* ``expert_load_layer<i>.png``: heat-map of each expert's share of the layer's routed tokens over the logged steps
  (white lines: steps after which the layer's experts were re-placed);
* ``device_cv.png`` (EP runs): per layer, the coefficient of variation of the per-EP-rank load under the placement
  the step actually ran with, next to the same tokens under the static placement (expert e on rank e // (E/W)):
  the effect of dynamic placement on identical routing;
* ``drop_rate.png``: the fraction of routed (token, expert) pairs a drop-and-pad dispatcher would drop at several
  capacity factors, from the measured loads (capacity ceil(cf * pairs / E) per expert over the logged step's
  global batch, i.e. the single-process semantics; per-rank capacities under EP drop at least as much); dropless
  drops none;
* ``summary.md``: the figures above as tables.
"""
import argparse
import json
import math
import os
import sys

import numpy as np

CAPACITY_FACTORS = (1.0, 1.25, 1.5, 2.0)


def read_jsonl(path: str) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
    return rows


def load_run(run_dir: str) -> dict:
    """{steps [N], load [N, L, E], tables [N, L, E] or None, ep_width, migrations {layer: [steps]}, drop}."""
    path = os.path.join(run_dir, "expert_load.jsonl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--run: no expert_load.jsonl in {run_dir} (a pangu_ms MoE run directory, trained "
                                f"with this version of the training loop)")
    rows = sorted({r["step"]: r for r in read_jsonl(path)}.values(), key=lambda r: r["step"])
    if not rows:
        raise ValueError(f"--run: {path} is empty")
    out = {"steps": np.array([r["step"] for r in rows]), "load": np.array([r["load"] for r in rows], float),
           "tables": None, "ep_width": 1, "migrations": {}, "drop": {}}
    if all("tables" in r for r in rows):
        out["tables"] = np.array([r["tables"] for r in rows], int)
        out["ep_width"] = int(rows[0]["ep_width"])
    metrics = os.path.join(run_dir, "metrics.jsonl")
    if os.path.isfile(metrics):
        for r in read_jsonl(metrics):
            for k, v in r.items():
                if k.endswith("/placement_moved") and v > 0:
                    out["migrations"].setdefault(int(k.split("/")[1][len("layer"):]), []).append(r["step"])
                if k == "moe/drop_rate":
                    out["drop"][r["step"]] = v
    return out


def cv(x) -> float:
    from pangu_ms.moe.load_stats import cv as _cv
    return _cv(x)


def device_cv_series(run: dict) -> dict:
    """{layer: (actual [N], static [N])}: per-rank load CV under the step's table and under the identity."""
    from pangu_ms.moe.load_stats import device_load
    w = run["ep_width"]
    load = run["load"]
    e = load.shape[2]
    out = {}
    for i in range(load.shape[1]):
        actual = [cv(device_load(load[n, i], run["tables"][n, i], w)) for n in range(len(load))]
        static = [cv(device_load(load[n, i], np.arange(e), w)) for n in range(len(load))]
        out[i] = (np.array(actual), np.array(static))
    return out


def drop_rates(load, factors=CAPACITY_FACTORS) -> dict:
    """{cf: mean over steps of the dropped fraction} per layer: [L] arrays; load [N, L, E]."""
    n, layers, e = load.shape
    out = {}
    for cf in factors:
        rates = np.zeros((n, layers))
        for s in range(n):
            for i in range(layers):
                pairs = load[s, i].sum()
                cap = max(1, math.ceil(cf * pairs / e))
                rates[s, i] = np.maximum(load[s, i] - cap, 0).sum() / pairs if pairs else 0.0
        out[cf] = rates.mean(0)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="run directory (holds expert_load.jsonl)")
    ap.add_argument("--out", default=None, help="output directory (default <run>/analysis)")
    args = ap.parse_args(argv)
    from pangu_ms.data.errors import DataError
    try:
        run = load_run(args.run)
    except (FileNotFoundError, ValueError) as e:
        raise DataError(str(e)) from None
    out = args.out or os.path.join(args.run, "analysis")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise DataError(f"--out: cannot create {out}: {e.strerror}") from None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, load = run["steps"], run["load"]
    n_layers, e = load.shape[1], load.shape[2]
    written = []
    for i in range(n_layers):
        share = load[:, i] / np.maximum(load[:, i].sum(1, keepdims=True), 1)
        fig, ax = plt.subplots(figsize=(min(14, 3 + 0.08 * len(steps)), 1.5 + 0.25 * e))
        im = ax.imshow(share.T, aspect="auto", origin="lower", cmap="viridis", interpolation="nearest",
                       extent=(steps[0] - 0.5, steps[-1] + 0.5, -0.5, e - 0.5))
        for s in run["migrations"].get(i, []):
            ax.axvline(s + 0.5, color="white", lw=1)
        ax.set_xlabel("step")
        ax.set_ylabel("expert")
        ax.set_title(f"MoE layer {i}: share of routed tokens per expert (uniform = {1 / e:.3f})")
        fig.colorbar(im, ax=ax, label="share")
        fig.tight_layout()
        path = os.path.join(out, f"expert_load_layer{i}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    lines = [f"# MoE expert load: {os.path.abspath(args.run)}", "",
             f"{len(steps)} logged steps ({steps[0]}..{steps[-1]}), {n_layers} MoE layers x {e} experts, "
             f"EP width {run['ep_width']}.", "",
             "| layer | expert-load CV (mean) | max/mean expert load (mean) | migrations (after steps) |",
             "|---|---|---|---|"]
    for i in range(n_layers):
        rows = load[:, i]
        cvs = [cv(r) for r in rows]
        mm = [r.max() / r.mean() if r.mean() > 0 else 0 for r in rows]
        lines.append(f"| {i} | {np.mean(cvs):.3f} | {np.mean(mm):.2f} | "
                     f"{', '.join(map(str, run['migrations'].get(i, []))) or '-'} |")

    if run["tables"] is not None and run["ep_width"] > 1:
        series = device_cv_series(run)
        fig, axes = plt.subplots(1, n_layers, figsize=(4.5 * n_layers, 3.6), squeeze=False)
        lines += ["", "Per-EP-rank load CV: the placement each step ran under vs the static placement on the same "
                  "tokens (mean over the logged steps after the layer's first migration; all steps when it never "
                  "migrated):", "", "| layer | static placement | dynamic placement | reduction |", "|---|---|---|---|"]
        for i, (actual, static) in series.items():
            ax = axes[0, i]
            ax.plot(steps, static, "--", label="static placement")
            ax.plot(steps, actual, "-", label="dynamic placement")
            for s in run["migrations"].get(i, []):
                ax.axvline(s + 0.5, color="grey", lw=0.8)
            ax.set_title(f"layer {i}: per-rank load CV")
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
            first = run["migrations"].get(i, [None])[0]
            sel = steps > first if first is not None else np.ones(len(steps), bool)
            if sel.any():
                a, b = static[sel].mean(), actual[sel].mean()
                lines.append(f"| {i} | {a:.3f} | {b:.3f} | {a - b:+.3f} |")
        fig.tight_layout()
        path = os.path.join(out, "device_cv.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    rates = drop_rates(load)
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for i in range(n_layers):
        ax.plot(CAPACITY_FACTORS, [rates[cf][i] for cf in CAPACITY_FACTORS], "o-", label=f"layer {i}")
    ax.axhline(0, color="black", lw=0.8, label="dropless")
    ax.set_xlabel("capacity factor")
    ax.set_ylabel("dropped pair fraction")
    ax.set_title("drop-and-pad drop rate from the measured loads")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(out, "drop_rate.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    lines += ["", "Drop-and-pad drop rate implied by the measured loads (capacity ceil(cf * pairs / E) per expert "
              "over each logged step's global batch; dropless drops 0):", "",
              "| layer | " + " | ".join(f"cf {cf}" for cf in CAPACITY_FACTORS) + " |",
              "|---|" + "---|" * len(CAPACITY_FACTORS)]
    for i in range(n_layers):
        lines.append(f"| {i} | " + " | ".join(f"{rates[cf][i]:.3f}" for cf in CAPACITY_FACTORS) + " |")
    if run["drop"]:
        lines += ["", f"Drop rate the run itself logged (mean over MoE layers and logged steps): "
                      f"{np.mean(list(run['drop'].values())):.4f}."]
    summary = os.path.join(out, "summary.md")
    with open(summary, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    written.append(summary)
    for p in written:
        print(p)
    return 0


if __name__ == "__main__":
    from pangu_ms.cli import run_cli
    sys.exit(run_cli(main))
