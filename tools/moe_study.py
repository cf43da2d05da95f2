#!/usr/bin/env python
"""One-command MoE behaviour study on the tiny recipes (CPU): ``python tools/moe_study.py [--out DIR]``.

Trains short runs, then writes every analysis of ``tools/analyze_moe.py`` and one table, ``<out>/study.md``
(what docs/moe_behaviour.md reproduces):

1. ``domains``: yaml/tiny_cpu_phases.yaml (Shakespeare / Wikipedia / Cantonese phases), ``--phase-scale`` of its
   step counts; then the expert selection of its final checkpoint on each corpus's validation tokens and the
   Jensen-Shannon divergence between the corpora;
2. ``dispatcher``: yaml/tiny_cpu.yaml for ``--steps`` steps, dropless and drop-and-pad at capacity factors
   ``--capacity-factors`` (one process): loss and measured drop rate;
3. ``scope``: under msrun with ``--ranks`` ranks (dp = ranks, ep = 2): the load-balancing loss over the micro-batch,
   the EP group and the global batch (with 2 ranks the EP group *is* the global batch: one run for both; 4 ranks
   separate them), and no aux loss at all with dynamic expert placement on (what placement does to the per-rank
   load when nothing else balances it); loss, expert-load CV, per-rank load CV.

Every run logs at every step (``train.log_interval=1``: expert loads and gradient norms per step). A run directory
that already finished (its metrics.jsonl has the last step) is not trained again, so an interrupted study
continues. Default ``--out``: output/moe_study. Sized to finish in about 15 minutes on 2 idle CPU cores.
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMON = ["train.log_interval=1", "train.sample_tokens=0", "train.peak_flops=1e11", "train.resume=true"]


def finished(run_dir: str, steps: int) -> bool:
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        return False
    with open(path, encoding="utf-8") as f:
        return any(json.loads(line).get("step") == steps for line in f if line.strip())


def train(run_dir: str, recipe: str, sets: list, steps: int, ranks: int = 1, log=print) -> None:
    """One run (skipped when it already finished); its output streams to ``<run>/study_stdout.log``."""
    if finished(run_dir, steps):
        log(f"  {os.path.basename(run_dir)}: already trained, kept")
        return
    os.makedirs(run_dir, exist_ok=True)
    sets = COMMON + [f"train.output_dir={run_dir}", f"train.steps={steps}"] + sets
    if ranks == 1:
        cmd = [sys.executable, os.path.join(ROOT, "run/train.py"), "--config", recipe, "--no-progress"] + \
            [x for s in sets for x in ("--set", s)]
    else:
        cmd = ["bash", os.path.join(ROOT, "run/msrun.sh"), str(ranks), recipe, *sets, "--no-progress"]
    t = time.time()
    with open(os.path.join(run_dir, "study_stdout.log"), "w", encoding="utf-8") as out:
        rc = subprocess.call(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {rc}); see {run_dir}/study_stdout.log")
    log(f"  {os.path.basename(run_dir)}: {steps} steps in {time.time() - t:.0f} s")


def scaled_phases(recipe: str, scale: float, out_dir: str) -> tuple[str, int]:
    """A copy of the phases recipe with every phase's steps (and warm-up) scaled by ``scale`` (>= 10 steps each),
    written to ``<out_dir>/phases_scaled.yaml``; returns (its path, total steps)."""
    import yaml
    with open(recipe, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    data["base"] = os.path.join(os.path.dirname(recipe), data["base"])
    for ph in data["train"]["phases"]:
        ph["steps"] = max(10, round(ph["steps"] * scale))
        if "warmup_steps" in ph:
            ph["warmup_steps"] = min(ph["steps"], max(1, round(ph["warmup_steps"] * scale)))
    total = sum(ph["steps"] for ph in data["train"]["phases"])
    data["train"]["steps"] = total
    path = os.path.join(out_dir, "phases_scaled.yaml")
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(data, f, sort_keys=False)
    return path, total


def analyze(args: list) -> None:
    from pangu_ms.tools import analyze_moe
    if analyze_moe.main(args) != 0:
        raise RuntimeError(f"analyze_moe {' '.join(args)} failed")


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "output", "moe_study"))
    ap.add_argument("--steps", type=int, default=150, help="steps of the dispatcher and scope runs (default 150)")
    ap.add_argument("--phase-scale", type=float, default=0.5, help="scale of the phases recipe's steps (0.5)")
    ap.add_argument("--capacity-factors", default="1.0,1.25", help="drop-and-pad runs (default 1.0,1.25)")
    ap.add_argument("--ranks", type=int, default=2, help="msrun ranks of the scope runs (dp; ep=2; default 2)")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: domains,dispatcher,scope")
    args = ap.parse_args(argv)
    from pangu_ms.data.errors import DataError
    if args.steps < 10 or args.phase_scale <= 0 or args.ranks < 2 or args.ranks % 2:
        raise DataError("--steps must be >= 10, --phase-scale > 0, --ranks an even number >= 2")
    try:
        factors = [float(x) for x in args.capacity_factors.split(",") if x.strip()]
    except ValueError:
        raise DataError(f"--capacity-factors: '{args.capacity_factors}' is not a comma-separated list of numbers") \
            from None
    skip = {x.strip() for x in args.skip.split(",") if x.strip()}
    if skip - {"domains", "dispatcher", "scope"}:
        raise DataError(f"--skip: unknown part(s) {sorted(skip - {'domains', 'dispatcher', 'scope'})}")
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    t0 = time.time()
    tiny, phases = os.path.join(ROOT, "yaml/tiny_cpu.yaml"), os.path.join(ROOT, "yaml/tiny_cpu_phases.yaml")
    eval_sets = ["train.eval_batches=8"]
    report = [f"# MoE study ({time.strftime('%Y-%m-%d %H:%M')} UTC)", ""]

    if "domains" not in skip:
        print("1/3 domains: the phases recipe", flush=True)
        recipe, steps = scaled_phases(phases, args.phase_scale, out)
        run = os.path.join(out, "domains")
        train(run, recipe, eval_sets + [f"train.eval_interval={steps}", f"train.save_interval={steps}"], steps)
        analyze(["--run", run, "--checkpoint", run, "--data", os.path.join(ROOT, "data/mix_v512_s64"),
                 "--out", os.path.join(run, "analysis")])
        report += ["## Expert selection by data domain", "",
                   read(os.path.join(run, "analysis", "domains.md")).split("\n", 2)[2], ""]

    runs = []
    if "dispatcher" not in skip:
        print("2/3 dispatcher: dropless vs drop-and-pad", flush=True)
        base = eval_sets + [f"train.eval_interval={args.steps}", f"train.save_interval={args.steps}"]
        run = os.path.join(out, "dropless")
        train(run, tiny, base, args.steps)
        runs.append(run)
        for cf in factors:
            run = os.path.join(out, f"drop_cf{cf:g}")
            train(run, tiny, base + ["moe.dispatcher=drop_and_pad", f"moe.capacity_factor={cf}"], args.steps)
            runs.append(run)

    if "scope" not in skip:
        print(f"3/3 aux-loss scope under msrun ({args.ranks} ranks, ep 2)", flush=True)
        layout = [f"parallel.dp={args.ranks}", "parallel.ep=2",
                  f"parallel.micro_batch_size={8 // args.ranks}", "train.global_batch_size=8"]
        base = eval_sets + layout + [f"train.eval_interval={args.steps}", f"train.save_interval={args.steps}"]
        # at dp == ep (2 ranks) the EP group is the global batch: one run covers both scopes
        scopes = ("micro_batch", "ep_group") + (("global_batch",) if args.ranks > 2 else ())
        for scope in scopes:
            run = os.path.join(out, f"scope_{scope}")
            train(run, tiny, base + [f"moe.aux_loss_scope={scope}"], args.steps, args.ranks)
            runs.append(run)
        run = os.path.join(out, "no_aux_placement")
        train(run, tiny, base + ["moe.aux_loss_coeff=0", "moe.expert_placement=true",
                                 f"moe.placement_interval={max(5, args.steps // 10)}"], args.steps, args.ranks)
        runs.append(run)

    if runs:
        analyze(["--out", out] + [x for r in runs for x in ("--run", r)])
        report += ["## Runs compared", "", read(os.path.join(out, "comparison.md")).split("\n", 2)[2], ""]
        placed = os.path.join(out, "no_aux_placement")
        if placed in runs:
            text = read(os.path.join(out, "no_aux_placement", "summary.md"))
            part = text[text.index("Per-EP-rank load CV"):text.index("Drop-and-pad drop rate")]
            report += ["## Dynamic expert placement (no aux loss)", "", part.strip(), ""]
    report += [f"Study time: {time.time() - t0:.0f} s."]
    with open(os.path.join(out, "study.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(report) + "\n")
    print(os.path.join(out, "study.md"))
    return 0


if __name__ == "__main__":
    from pangu_ms.cli import run_cli
    sys.exit(run_cli(main))
