#!/usr/bin/env python
"""Post-training demo on CPU, one command: arithmetic data -> short pretraining -> SFT -> GRPO RL, with the held-out
reward before/after RL, a reward-curve PNG and a markdown table.

    python tools/rl_demo.py [--out output/rl_demo] [--pretrain-steps N] [--sft-steps N] [--rl-steps N]

Stages (each is ``python run/train.py`` with a recipe, so every stage is also runnable on its own):
    data      tools/make_math_data.py --out data/math          (skipped when data/math/split.json exists)
    pretrain  yaml/tiny_cpu.yaml on data/math/pretrain.jsonl    (solved training problems as plain text)
    sft       yaml/tiny_cpu_sft.yaml                            (chat template, loss on the answer only)
    rl        yaml/tiny_cpu_rl.yaml                             (KV-cache rollouts, GRPO; held-out eval before/after)
Outputs under --out: one run directory per stage, reward_curve.png, demo.md (timings + before/after table),
demo.json. The run directories are removed first (fresh run; the stages would otherwise auto-resume).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd: list, log: str) -> float:
    t0 = time.perf_counter()
    print("$ " + " ".join(cmd), flush=True)
    with open(log, "w", encoding="utf-8") as f:
        p = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        sys.stdout.write(open(log, encoding="utf-8").read()[-4000:])
        raise SystemExit(f"stage failed (exit {p.returncode}); log: {log}")
    print(f"  done in {dt:.0f} s (log {log})", flush=True)
    return dt


def plot(rl_dir: str, before: dict, after: dict, out: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [json.loads(line) for line in open(os.path.join(rl_dir, "metrics.jsonl"), encoding="utf-8")]
    train = [r for r in rows if "reward/total" in r]
    evals = [r for r in rows if "eval/reward" in r]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    ax = axes[0]
    steps = [r["step"] for r in train]
    for key, lab in (("reward/total", "train reward (total)"), ("reward/correct", "train correct"),
                     ("reward/format", "train format")):
        ys = [r.get(key, float("nan")) for r in train]
        k = 5
        smooth = [sum(ys[max(0, i - k + 1): i + 1]) / len(ys[max(0, i - k + 1): i + 1]) for i in range(len(ys))]
        ax.plot(steps, smooth, label=lab + " (5-pt mean)")
    if evals:
        ax.plot([r["step"] for r in evals], [r["eval/reward"] for r in evals], "o-", label="held-out reward")
        ax.plot([r["step"] for r in evals], [r["eval/reward_correct"] for r in evals], "s--",
                label="held-out correct")
    ax.set_xlabel("RL optimizer step")
    ax.set_ylabel("reward")
    ax.set_title(f"GRPO on arithmetic: held-out reward {before['reward']:.3f} -> {after['reward']:.3f}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax = axes[1]
    for key in ("rl/kl", "rl/entropy", "rl/clip_frac"):
        ax.plot(steps, [r.get(key, float("nan")) for r in train], label=key)
    ax.set_xlabel("RL optimizer step")
    ax.set_title("KL to reference (k3), entropy, clip fraction")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def table(before: dict, after: dict) -> str:
    n, k = before["problems"], before["samples_per_problem"]
    lines = [f"Held-out set: {n} problems never seen in pretraining, SFT or RL; {k} samples per problem at "
             f"temperature 1 ({n * k} completions) for the mean rewards, plus one greedy completion per problem.",
             "", "| metric | after SFT (before RL) | after RL |", "|---|---|---|"]
    keys = [("reward", "mean total reward (1.0 correct + 0.2 format)"), ("reward_correct", "mean `correct` reward"),
            ("reward_format", "mean `format` reward"), ("greedy_correct", "greedy accuracy")]
    keys += [(k2, f"`correct`, capability {k2.split('/')[1]}") for k2 in sorted(before)
             if k2.startswith("cap/") and k2.endswith("/correct")]
    for key, label in keys:
        if key in before and key in after:
            lines.append(f"| {label} | {before[key]:.3f} | {after[key]:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="output/rl_demo")
    ap.add_argument("--data", default="data/math")
    ap.add_argument("--pretrain-steps", type=int, default=150)
    ap.add_argument("--sft-steps", type=int, default=1200)
    ap.add_argument("--rl-steps", type=int, default=200)
    ap.add_argument("--set", dest="rl_overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="extra override for the RL stage (repeatable)")
    ap.add_argument("--rl-only", action="store_true",
                    help="rerun only the RL stage from the existing SFT run under --out (earlier stage times kept)")
    args = ap.parse_args(argv)
    out = os.path.join(ROOT, args.out) if not os.path.isabs(args.out) else args.out
    data = args.data
    os.makedirs(out, exist_ok=True)
    py = sys.executable
    t_all = time.perf_counter()
    times = {}
    old = os.path.join(out, "demo.json")
    if args.rl_only and os.path.isfile(old):
        times = {k: v for k, v in json.load(open(old))["times_s"].items() if k in ("data", "pretrain", "sft")}
    if not os.path.isfile(os.path.join(ROOT, data, "split.json")):
        times["data"] = run([py, "tools/make_math_data.py", "--out", data], os.path.join(out, "data.log"))
    tok = f"{data}/tokenizer/tokenizer.json"
    pt, sft, rl = (os.path.join(out, n) for n in ("pretrain", "sft", "rl"))
    for d in (rl,) if args.rl_only else (pt, sft, rl):
        shutil.rmtree(d, ignore_errors=True)
    common = ["--no-progress", "--set", "train.peak_flops=1e10"]
    if not args.rl_only:
        times["pretrain"] = run([py, "run/train.py", "--config", "yaml/tiny_cpu.yaml", *common,
                             "--set", f"data.corpus={data}/pretrain.jsonl", "--set", f"data.path={data}/pretrain_s64",
                             "--set", f"data.tokenizer={tok}", "--set", f"train.steps={args.pretrain_steps}",
                             "--set", "train.warmup_steps=20", "--set", f"train.output_dir={pt}",
                             "--set", "train.sample_tokens=0", "--set", f"train.eval_interval={args.pretrain_steps}",
                             "--set", f"train.save_interval={args.pretrain_steps}", "--set", "train.eval_batches=8"],
                            os.path.join(out, "pretrain.log"))
        times["sft"] = run([py, "run/train.py", "--config", "yaml/tiny_cpu_sft.yaml", *common,
                        "--set", f"stage.init_from={pt}/checkpoints", "--set", f"train.output_dir={sft}",
                        "--set", f"train.steps={args.sft_steps}",
                        "--set", f"sft.data={data}/sft_train.jsonl", "--set", f"sft.valid_data={data}/sft_valid.jsonl",
                        "--set", f"sft.tokenizer={tok}"], os.path.join(out, "sft.log"))
    rl_set = [x for o in args.rl_overrides for x in ("--set", o)]
    times["rl"] = run([py, "run/train.py", "--config", "yaml/tiny_cpu_rl.yaml", *common,
                       "--set", f"stage.init_from={sft}/checkpoints", "--set", f"train.output_dir={rl}",
                       "--set", f"train.steps={args.rl_steps}", "--set", f"rl.data={data}/rl_train.jsonl",
                       "--set", f"rl.eval_data={data}/heldout.jsonl", "--set", f"rl.tokenizer={tok}", *rl_set],
                      os.path.join(out, "rl.log"))
    times["total"] = sum(v for k, v in times.items() if k != "total") if args.rl_only else \
        time.perf_counter() - t_all
    summary = json.load(open(os.path.join(rl, "rl_summary.json"), encoding="utf-8"))
    before, after = summary["eval_before"], summary["eval_after"]
    png = os.path.join(out, "reward_curve.png")
    plot(rl, before, after, png)
    md = [f"Measured on this machine ({os.cpu_count()} cores): " + ", ".join(f"{k} {v / 60:.1f} min"
                                                                          for k, v in times.items()), "",
          table(before, after), "", f"Reward curve: {os.path.relpath(png, ROOT)}"]
    open(os.path.join(out, "demo.md"), "w", encoding="utf-8").write("\n".join(md) + "\n")
    json.dump({"times_s": times, "before": before, "after": after}, open(os.path.join(out, "demo.json"), "w"),
              indent=1)
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    from pangu_ms.cli import run_cli
    sys.exit(run_cli(main))
