#!/usr/bin/env python
"""MoE behaviour analysis of training runs and checkpoints.

    python tools/analyze_moe.py --run RUN_DIR [--run RUN_DIR ...] [--out DIR]
    python tools/analyze_moe.py --checkpoint CKPT --data DATA_DIR [--batches N] [--config RECIPE] [--out DIR]

Per ``--run`` (reads ``<run>/expert_load.jsonl``, written by the training loop at every ``train.log_interval``:
tokens routed to each expert of each MoE layer before any drop, summed over all ranks, and under expert
parallelism the placement tables the step ran under; and ``<run>/metrics.jsonl``):

* ``expert_load_layer<i>.png``: heat-map of each expert's share of the layer's routed tokens over the logged steps
  (white lines: steps after which the layer's experts were re-placed);
* ``device_cv.png`` (EP runs): per layer, the coefficient of variation of the per-EP-rank load under the placement
  the step actually ran with, next to the same tokens under the static placement (expert e on rank e // (E/W)):
  the effect of dynamic placement on identical routing;
* ``drop_rate.png``: the fraction of routed (token, expert) pairs a drop-and-pad dispatcher would drop at several
  capacity factors, from the measured loads (capacity ceil(cf * pairs / E) per expert over the logged step's
  global batch, i.e. the single-process semantics; per-rank capacities under EP drop at least as much); dropless
  drops none;
* ``summary.md``: the figures above as tables, and the gradient-norm / loss spike counts.

With several ``--run`` s each run's files go to ``<out>/<run name>/`` and ``<out>/comparison.md`` +
``comparison.png`` compare them (aux-loss scope, dispatcher and capacity factor, placement; loss, validation
loss, expert-load CV, per-rank load CV, drop rate, spikes: ``pangu_ms.eval.run_summary``).

``--checkpoint`` + ``--data`` (a prepared data directory with several corpora, e.g. the phases recipe's
shakespeare / wikipedia / cantonese mix): the expert selection of the checkpoint's model on each corpus's
validation tokens, ``expert_domains.png`` (per layer: corpus x expert share) and the Jensen-Shannon divergence
between every pair of corpora per layer in ``domains.md`` (``pangu_ms.eval.expert_domains``). The recipe is
``<run>/config.yaml`` above the checkpoint unless ``--config`` is given.

Default ``--out``: ``<first run>/analysis``, else ``<checkpoint's run>/analysis``.
"""
import argparse
import math
import os
import sys

import numpy as np

CAPACITY_FACTORS = (1.0, 1.25, 1.5, 2.0)


def read_jsonl(path: str) -> list[dict]:
    from pangu_ms.eval.run_summary import read_jsonl as read
    return read(path)


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
           "tables": None, "ep_width": 1, "migrations": {}, "drop": {}, "grad_norm": [], "loss": []}
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
        train = sorted({r["step"]: r for r in read_jsonl(metrics) if "grad_norm" in r}.values(),
                       key=lambda r: r["step"])
        out["grad_norm"] = [r["grad_norm"] for r in train]
        out["loss"] = [r["loss/total"] for r in train]
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


def analyze_run(run_dir: str, out: str, plt, spike_factor: float, spike_window: int) -> list[str]:
    """The per-run figures and ``summary.md`` of ``run_dir`` into ``out``; returns the written paths."""
    run = load_run(run_dir)
    os.makedirs(out, exist_ok=True)
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

    lines = [f"# MoE expert load: {os.path.abspath(run_dir)}", "",
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
    norms = run["grad_norm"]
    if norms:
        from pangu_ms.eval.run_summary import count_spikes
        lines += ["", f"Spikes (a logged value above {spike_factor:g} x the median of the previous {spike_window} "
                      f"logged values): gradient norm {count_spikes(norms, spike_factor, spike_window)}, loss "
                      f"{count_spikes(run['loss'], spike_factor, spike_window)}, over {len(norms)} logged steps."]
    summary = os.path.join(out, "summary.md")
    with open(summary, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    written.append(summary)
    return written


COMPARED = (("loss", "train loss", ".4f"), ("valid_loss", "valid loss", ".4f"), ("load_cv", "expert-load CV", ".3f"),
            ("device_cv", "per-rank load CV", ".3f"), ("drop_rate", "drop rate", ".4f"),
            ("grad_norm_spikes", "grad-norm spikes", "d"), ("loss_spikes", "loss spikes", "d"))


def setting_label(s: dict) -> str:
    """What distinguishes a run: aux-loss scope, dispatcher (capacity factor), placement, layout."""
    scope = "none" if not s["aux_loss_coeff"] else s["aux_loss_scope"]
    disp = f"drop_and_pad cf {s['capacity_factor']}" if s["dispatcher"] == "drop_and_pad" else s["dispatcher"]
    return f"aux {scope}, {disp}{', placement' if s['expert_placement'] else ''}, dp{s['dp']} ep{s['ep']}"


def compare_runs(runs: list, out: str, plt, spike_factor: float, spike_window: int) -> list[str]:
    """``comparison.md`` / ``comparison.png`` over the runs (``pangu_ms.eval.run_summary.summarize_run``)."""
    from pangu_ms.eval.run_summary import summarize_run
    rows = [summarize_run(r, spike_factor=spike_factor, spike_window=spike_window) for r in runs]
    lines = ["# MoE runs compared", "", "Means over the second half of each run's logged steps (validation loss: "
             "the last evaluation; spikes over the whole run). Per-rank load CV: under the placement each step ran "
             "with (one-process runs: their loads on 2 ranks in the static placement).", "",
             "| run | setting | " + " | ".join(c[1] for c in COMPARED) + " |",
             "|---|---|" + "---|" * len(COMPARED)]
    for r in rows:
        cells = [format(r[k], f) if k in r else "-" for k, _, f in COMPARED]
        lines.append(f"| {r['run']} | {setting_label(r)} | " + " | ".join(cells) + " |")
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, (key, title) in zip(axes, (("loss", "train loss"), ("load_cv", "expert-load CV"),
                                       ("device_cv", "per-rank load CV"))):
        ax.bar(range(len(rows)), [r.get(key, np.nan) for r in rows], color="tab:blue")
        ax.set_xticks(range(len(rows)), [r["run"] for r in rows], rotation=30, ha="right", fontsize=8)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    png = os.path.join(out, "comparison.png")
    fig.savefig(png, dpi=110)
    plt.close(fig)
    md = os.path.join(out, "comparison.md")
    with open(md, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return [png, md]


def analyze_domains(checkpoint: str, data: str, config: str | None, batches: int, out: str, plt) -> list[str]:
    """Expert selection per corpus of ``data`` by the checkpoint's model: ``expert_domains.png`` + ``domains.md``."""
    from pangu_ms.config import load_config
    from pangu_ms.data import open_prepared
    from pangu_ms.eval.expert_domains import divergence_matrix, domain_expert_counts, noise_floor, selection_shares
    from pangu_ms.model import build_model
    from pangu_ms.train.checkpoint import load_checkpoint, resolve_checkpoint
    directory = resolve_checkpoint(checkpoint, "--checkpoint")
    recipe = config or os.path.join(os.path.dirname(os.path.dirname(directory)), "config.yaml")
    if not os.path.isfile(recipe):
        raise FileNotFoundError(f"--checkpoint: no recipe at {recipe} (give --config)")
    cfg = load_config(recipe)
    valid = open_prepared(data, "valid", seq_len=cfg.train.seq_length, vocab_size=cfg.model.vocab_size)
    if len(valid) < 2:
        raise ValueError(f"--data: {data} holds {len(valid)} corpus; expert selection by domain needs several")
    net = build_model(cfg)
    load_checkpoint(net, directory)
    per_batch = domain_expert_counts(net, valid, cfg.train.seq_length, batches, cfg.parallel.micro_batch_size)
    counts = {n: c.sum(0) for n, c in per_batch.items()}
    names, js = divergence_matrix(counts)
    floor = {n: noise_floor(per_batch[n]) for n in names if len(per_batch[n]) >= 2}
    n_layers, e = js.shape[0], np.asarray(counts[names[0]]).shape[1]
    fig, axes = plt.subplots(1, n_layers, figsize=(4 * n_layers, 1.2 + 0.45 * len(names)), squeeze=False)
    for i in range(n_layers):
        ax = axes[0, i]
        im = ax.imshow(np.stack([selection_shares(counts[n][i]) for n in names]), aspect="auto", cmap="viridis")
        ax.set_yticks(range(len(names)), names)
        ax.set_xticks(range(e))
        ax.set_xlabel("expert")
        ax.set_title(f"MoE layer {i}")
        fig.colorbar(im, ax=ax)
    fig.suptitle("share of each corpus's routed (token, expert) pairs per expert")
    fig.tight_layout()
    png = os.path.join(out, "expert_domains.png")
    fig.savefig(png, dpi=110)
    plt.close(fig)
    pairs = [(a, b) for a in range(len(names)) for b in range(a + 1, len(names))]
    tokens = {n: int(counts[n][0].sum()) // cfg.moe.top_k for n in names}
    lines = [f"# Expert selection by domain: {directory}", "",
             f"Validation tokens per corpus: {', '.join(f'{n} {tokens[n]}' for n in names)}. Jensen-Shannon "
             "divergence (bits, 0 = same expert shares, 1 = disjoint experts) between the corpora's per-expert "
             "shares of routed pairs; the noise floor is the divergence between the even and odd batches of one "
             "corpus (sampling alone, at half the tokens; the largest over the corpora):", "",
             "| layer | " + " | ".join(f"{names[a]} / {names[b]}" for a, b in pairs) + " | mean | noise floor |",
             "|---|" + "---|" * (len(pairs) + 2)]
    for i in range(n_layers):
        vals = [js[i, a, b] for a, b in pairs]
        nf = max((f[i] for f in floor.values()), default=float("nan"))
        lines.append(f"| {i} | " + " | ".join(f"{v:.4f}" for v in vals) + f" | {np.mean(vals):.4f} | {nf:.4f} |")
    lines += ["", "Most-used expert per corpus and layer (share):", "", "| layer | " + " | ".join(names) + " |",
              "|---|" + "---|" * len(names)]
    for i in range(n_layers):
        cells = []
        for n in names:
            sh = selection_shares(counts[n][i])
            cells.append(f"{int(sh.argmax())} ({sh.max():.2f})")
        lines.append(f"| {i} | " + " | ".join(cells) + " |")
    md = os.path.join(out, "domains.md")
    with open(md, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return [png, md]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", default=[], help="run directory (holds expert_load.jsonl); repeat "
                    "to compare runs")
    ap.add_argument("--checkpoint", help="checkpoint (or run) directory: expert selection by data domain")
    ap.add_argument("--data", help="with --checkpoint: prepared data directory with several corpora")
    ap.add_argument("--config", help="with --checkpoint: the recipe (default <run>/config.yaml)")
    ap.add_argument("--batches", type=int, default=8, help="validation batches per corpus (default 8)")
    ap.add_argument("--spike-factor", type=float, default=3.0, help="spike: value > factor x median (default 3)")
    ap.add_argument("--spike-window", type=int, default=20, help="spike median window, logged steps (default 20)")
    ap.add_argument("--out", default=None, help="output directory (default <first run>/analysis)")
    args = ap.parse_args(argv)
    from pangu_ms.data.errors import DataError
    if not args.run and not args.checkpoint:
        raise DataError("give --run RUN_DIR and/or --checkpoint CKPT --data DATA_DIR")
    if bool(args.checkpoint) != bool(args.data):
        raise DataError("--checkpoint and --data go together (expert selection by data domain)")
    if args.batches < 1 or args.spike_window < 1 or args.spike_factor <= 0:
        raise DataError("--batches and --spike-window must be >= 1, --spike-factor > 0")
    if args.run:
        base = args.run[0]
    else:                                    # a checkpoint directory -> its run; a run directory as it is
        ck = os.path.abspath(args.checkpoint)
        base = os.path.dirname(os.path.dirname(ck)) if os.path.isfile(os.path.join(ck, "manifest.json")) else ck
    out = args.out or os.path.join(base, "analysis")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise DataError(f"--out: cannot create {out}: {e.strerror}") from None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    try:
        for run in args.run:
            where = out if len(args.run) == 1 else os.path.join(out, os.path.basename(os.path.abspath(run)))
            written += analyze_run(run, where, plt, args.spike_factor, args.spike_window)
        if len(args.run) > 1:
            written += compare_runs(args.run, out, plt, args.spike_factor, args.spike_window)
        if args.checkpoint:
            written += analyze_domains(args.checkpoint, args.data, args.config, args.batches, out, plt)
    except (FileNotFoundError, ValueError) as e:
        raise DataError(str(e)) from None
    for p in written:
        print(p)
    return 0


if __name__ == "__main__":
    from pangu_ms.cli import run_cli
    sys.exit(run_cli(main))
