#!/usr/bin/env python
"""Activation memory and step time of each recompute granularity, measured, next to the simulator's prediction.

    python tools/bench_memory.py --config yaml/bench_memory_cpu.yaml
    python tools/bench_memory.py --config yaml/bench_memory_cpu.yaml --granularities none,full,core_attn --json
    python tools/bench_memory.py ... --png output/bench_memory.png
    python tools/bench_memory.py ... --granularities "none,moe_fine,moe_fine@long_context.attention_chunk=128"

For each granularity (``train.recompute`` values: none, presets, full, single modules; ``NAME@KEY=VALUE[@...]``
adds config overrides to that entry only, e.g. query-chunked attention beside the unchunked reference in the
same run) a FRESH child process
builds the model with that recompute, compiles the training step (PanguForCausalLM + TrainStep, graph mode,
fp32), resets its peak RSS (``/proc/self/clear_refs``), reads its RSS, runs ``--mem-steps`` steps and reads the
peak RSS (VmHWM) again: step memory = peak - RSS before the first step (everything the step allocates:
stored activations, the backward working set, gradients; parameters and optimizer states are in the baseline).
``mindspore.runtime.max_memory_allocated()`` is 0 on CPU, hence RSS.

Step time: each child then runs ``--blocks`` blocks of ``--steps`` steps; ms/step is the median of its blocks.
The children run one after another (not interleaved: on this model each child holds 2-3 GB after its first step,
so keeping all of them alive to interleave the blocks does not fit in 24 GB).

Prediction: ``pangu_ms.sim.estimate`` on the ``cpu_local`` profile for the same recipe with ``sim.recompute`` =
the granularity (one list of names for both, ``pangu_ms/config/recompute.py``): activations + transient +
gradients of the one device (the same items the measurement counts).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("LOCAL_DEFAULT_PATH", "/tmp/mflog")
os.environ.setdefault("GLOG_v", "3")

DEFAULT = "none,selective,moe_fine,full,core_attn,norm,moe_act,mla_up_proj,experts"
MB = 1e6


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--config", required=True, help="recipe YAML, e.g. yaml/bench_memory_cpu.yaml")
    p.add_argument("--set", action="append", default=[], metavar="K=V", help="config override (repeatable)")
    p.add_argument("--granularities", default=DEFAULT,
                   help=f"comma-separated train.recompute values; a '+' joins modules into one list, "
                        f"'@KEY=VALUE' adds an override to that entry (default {DEFAULT})")
    p.add_argument("--mem-steps", type=int, default=2, help="steps run for the peak-RSS reading (default 2)")
    p.add_argument("--steps", type=int, default=2, help="timed steps per block (default 2)")
    p.add_argument("--blocks", type=int, default=5, help="interleaved timing blocks (default 5)")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads of each child (default 2)")
    p.add_argument("--png", default="output/bench_memory.png", help="plot path ('' = no plot)")
    p.add_argument("--json", action="store_true", help="print the result as JSON too")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def split_entry(entry: str) -> tuple:
    """'moe_fine@k=v@k2=v2' -> ('moe_fine', ['k=v', 'k2=v2']): the recompute value and the entry's overrides."""
    name, *overrides = entry.split("@")
    for o in overrides:
        if "=" not in o:
            from pangu_ms.config import ConfigError
            raise ConfigError(f"--granularities: '{entry}': override '{o}' is not KEY=VALUE")
    return name, overrides


def recompute_value(entry: str):
    """'a+b' -> ['a', 'b'] (a module list); anything else as given (the entry's '@' overrides dropped)."""
    name = split_entry(entry)[0]
    return name.split("+") if "+" in name else name


def recompute_override(entry: str, key: str = "train.recompute") -> str:
    """The entry's recompute value as one config override ('KEY=[a,b]' for a module list)."""
    rc = recompute_value(entry)
    return f"{key}=" + ("[" + ",".join(rc) + "]" if isinstance(rc, list) else rc)


def entry_overrides(args, entry: str) -> list:
    """The run's --set overrides followed by the entry's own."""
    return list(args.set) + split_entry(entry)[1]


def child(args) -> int:
    """One granularity: compile, measure step memory, then run timing blocks on request (stdin)."""
    import mindspore as ms
    import numpy as np
    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        ms.set_context(runtime_num_threads=args.threads)
    except Exception:  # noqa: BLE001  (option renamed in some releases; the default pool is used)
        pass
    from pangu_ms.config import load_config
    from pangu_ms.model import CausalLMLoss, build_model
    from pangu_ms.train.optim import build_optimizer
    from pangu_ms.train.recompute_auto import PeakMeter
    from pangu_ms.train.step import TrainStep
    cfg = load_config(args.config, entry_overrides(args, args.child))
    net = build_model(cfg, recompute=recompute_value(args.child))
    step = TrainStep(CausalLMLoss(net, cfg.model.mtp_loss_weight),
                     build_optimizer(net.trainable_params(), cfg.train), cfg.train.grad_clip)
    b, s = cfg.parallel.micro_batch_size, cfg.train.seq_length
    ids = np.random.default_rng(0).integers(0, cfg.model.vocab_size, (b, s + 1)).astype(np.int32)
    x, y = ms.Tensor(ids[:, :-1]), ms.Tensor(ids[:, 1:])
    t0 = time.perf_counter()
    step.compile(x, y)
    compile_s = time.perf_counter() - t0
    meter = PeakMeter()                                # peak RSS := current RSS (drops the compile's peak)
    meter.start()
    losses = [float(step(x, y)[0].asnumpy()) for _ in range(args.mem_steps)]
    growth = meter.growth_bytes()
    if growth is None:
        raise SystemExit("error: the step memory needs /proc/self/status and /proc/self/clear_refs (Linux)")
    print(json.dumps({"ready": True, "compile_s": compile_s, "rss_before_kb": meter.before_kb,
                      "peak_kb": meter.before_kb + growth / 1024.0, "step_kb": growth / 1024.0,
                      "loss": losses[0]}), flush=True)
    times = []
    for _ in range(args.blocks):
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step(x, y)[0].asnumpy()
        times.append(1e3 * (time.perf_counter() - t0) / args.steps)
    print(json.dumps({"times": times}), flush=True)
    return 0


def predict(config: str, overrides: list, name: str) -> dict:
    """The simulator's step memory (activations + transient + gradients) on cpu_local, one device, in MB."""
    from pangu_ms.config import load_config
    from pangu_ms.sim.estimate import estimate
    cfg = load_config(config, list(overrides) + split_entry(name)[1] + [
        "sim.hardware=cpu_local", "sim.precision=fp32", "sim.moe_impl=training_cpu",
        recompute_override(name, "sim.recompute")])
    est = estimate(cfg, devices=1)
    m = est.memory_gb
    return {"predicted_mb": (m["activations"] + m["transient"] + m["gradients"]) * 1e9 / MB,
            "predicted_activations_mb": m["activations"] * 1e3, "predicted_transient_mb": m["transient"] * 1e3,
            "predicted_gradients_mb": m["gradients"] * 1e3, "predicted_step_s": est.step_time_s}


def _start(args, name: str):
    cmd = [sys.executable, os.path.abspath(__file__), "--config", args.config, "--child", name,
           "--mem-steps", str(args.mem_steps), "--threads", str(args.threads), "--blocks", str(args.blocks),
           "--steps", str(args.steps)]
    for s in args.set:
        cmd += ["--set", s]
    r = subprocess.run(cmd, capture_output=True, text=True)
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    if r.returncode != 0 or len(lines) != 2:
        raise SystemExit(f"error: the child for recompute={name} failed (exit {r.returncode}):\n{r.stderr[-2000:]}")
    return {**lines[0], **lines[1]}


def short_name(name: str) -> str:
    """'norm+mla_up_proj+...' -> the largest preset it contains plus the rest ('moe_fine+core_attn')."""
    name, overrides = split_entry(name)
    tail = "".join(" @" + o.rsplit(".", 1)[-1] for o in overrides)
    if "+" not in name:
        return name + tail
    from pangu_ms.config.recompute import RECOMPUTE_PRESETS
    mods = name.split("+")
    for preset, members in sorted(RECOMPUTE_PRESETS.items(), key=lambda kv: -len(kv[1])):
        if members and set(members) <= set(mods):
            return "+".join([preset] + [m for m in mods if m not in members]) + tail
    return name + tail


def _plot(rows: list, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        ax.scatter(r["time_cost_pct"], r["measured_mb"], color="C0")
        ax.scatter(r["time_cost_pct"], r["predicted_mb"], color="C1", marker="x")
        ax.annotate(short_name(r["granularity"]), (r["time_cost_pct"], r["measured_mb"]), fontsize=8,
                    xytext=(4, 3), textcoords="offset points")
    ax.scatter([], [], color="C0", label="measured (peak RSS - RSS before step 1)")
    ax.scatter([], [], color="C1", marker="x", label="simulator (cpu_local)")
    ax.set_xlabel("step-time cost vs no recompute (%)")
    ax.set_ylabel("step memory (MB)")
    ax.set_title("recompute: memory vs step time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        return child(args)
    from pangu_ms.config import ConfigError, load_config
    names = [g.strip() for g in args.granularities.split(",") if g.strip()]
    if not names or names[0] != "none":
        raise ConfigError("--granularities: the first must be 'none' (the reference)")
    for n in names:                                   # bad names / modules: one error before anything compiles
        load_config(args.config, entry_overrides(args, n) + [recompute_override(n)])
    try:
        from tqdm import tqdm
    except ImportError:                               # pragma: no cover
        def tqdm(x, **_):
            return x
    rows = []
    load0 = os.getloadavg()[0]
    for n in tqdm(names, desc="granularities", file=sys.stderr):
        rows.append({"granularity": n, **_start(args, n), **predict(args.config, args.set, n)})
    import statistics
    base = rows[0]
    for r in rows:
        r["ms_per_step"] = statistics.median(r["times"])
        r["measured_mb"] = r["step_kb"] * 1024 / MB
        r["memory_saved_pct"] = 100.0 * (1.0 - r["measured_mb"] / (base["step_kb"] * 1024 / MB))
        r["time_cost_pct"] = 100.0 * (r["ms_per_step"] / statistics.median(base["times"]) - 1.0)
        r["sim_error_pct"] = 100.0 * (r["predicted_mb"] / r["measured_mb"] - 1.0)
    cfg = load_config(args.config, list(args.set))
    print(f"{args.config} {' '.join(args.set)}: batch {cfg.parallel.micro_batch_size} x seq "
          f"{cfg.train.seq_length}, {cfg.model.num_layers} layers + MTP {cfg.model.mtp_depth}, fp32, "
          f"{args.threads} threads; median of {args.blocks} blocks x {args.steps} steps, "
          f"one child after another")
    print(f"{'granularity':<28}{'step MB':>9}{'saved':>8}{'ms/step':>9}{'cost':>8}{'sim MB':>9}{'sim err':>9}")
    for r in rows:
        print(f"{short_name(r['granularity']):<28}{r['measured_mb']:>9.0f}{r['memory_saved_pct']:>7.0f}%"
              f"{r['ms_per_step']:>9.0f}{r['time_cost_pct']:>7.0f}%{r['predicted_mb']:>9.0f}"
              f"{r['sim_error_pct']:>8.0f}%")
    print(f"1-min load average {load0:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    if args.png:
        _plot(rows, args.png)
        print(f"plot: {args.png}")
    if args.json:
        print(json.dumps({"config": args.config, "overrides": args.set, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    from pangu_ms.cli import run_cli
    sys.exit(run_cli(main))
