#!/usr/bin/env python
"""Compare the simulator's predicted single-process step time with the measured step of pangu_ms training.

For each config (five: four sizes of the MLA + MoE model, ~0.2M to ~29M parameters, and a dense GQA model) it
  1. predicts the step time with the calibrated profile of this machine (``tools/simulate.py calibrate``,
     default yaml/hardware/cpu_local.yaml), fp32, no pipeline / parallelism, the project's CPU MoE path
     (``sim.moe_impl=training_cpu``), unfused element-wise ops and a full (non-causal-skipping) attention;
  2. builds ``PanguForCausalLM`` + ``TrainStep`` (imported lazily), compiles it in graph mode and measures
     the median wall time of ``--steps`` steps after ``--warmup`` warm-up steps;
  3. prints a markdown table with the relative error (target: within 15 %) and the Spearman rank correlation
     of predicted vs measured step time (does the simulator order the configs as the machine does).

  python tools/validate_sim_cpu.py [--rounds 5] [--steps 3] [--save-profile yaml/hardware/cpu_local.yaml] [--json]

Calibration runs in the same process, interleaved with the measured steps (round: one calibration pass, then
steps of every config), so both see the same machine load; medians are used throughout.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time


from pangu_ms.config import load_config  # noqa: E402
from pangu_ms.sim.estimate import estimate  # noqa: E402
from pangu_ms.sim.hardware import load_hardware  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
TINY = os.path.join(ROOT, "yaml", "tiny_cpu.yaml")
SIM_CPU = ["sim.precision=fp32", "sim.attention_causal_skip=false", "sim.fused_kernels=false",
           "sim.moe_impl=training_cpu", "model.compute_dtype=float32", "model.param_dtype=float32"]
# configs of clearly different size (total parameters from stats.py: ~0.19M, ~1.3M, ~7.5M, ~29M) and family
CONFIGS = {
    "xs (h64, 2 layers, 4 experts, batch 4 x 64)": [
        "model.hidden_size=64", "model.num_layers=2", "model.dense_ffn_hidden=128", "model.num_heads=2",
        "moe.num_experts=4", "moe.expert_ffn_hidden=32", "model.q_lora_rank=32", "model.kv_lora_rank=16",
        "train.global_batch_size=4", "parallel.micro_batch_size=4"],
    "tiny_cpu (h128, 4 layers, 8 experts, 8 x 64)": [],
    "m (h256, 4 layers, 8 experts, vocab 2048, 8 x 128)": [
        "model.hidden_size=256", "model.dense_ffn_hidden=768", "model.num_heads=8", "moe.expert_ffn_hidden=192",
        "model.vocab_size=2048", "train.seq_length=128"],
    "dense GQA (h256, 4 layers, 8/2 heads, no experts, 8 x 128)": [
        "model.hidden_size=256", "model.attention_type=gqa", "model.num_heads=8", "model.num_kv_heads=2",
        "moe.num_experts=0", "model.num_dense_layers=4", "model.dense_ffn_hidden=768", "model.vocab_size=2048",
        "train.seq_length=128"],
    "l (h512, 4 layers, 8 experts, vocab 4096, 8 x 128)": [
        "model.hidden_size=512", "model.dense_ffn_hidden=1536", "model.num_heads=8", "moe.expert_ffn_hidden=384",
        "model.q_lora_rank=128", "model.kv_lora_rank=64", "model.vocab_size=4096", "train.seq_length=128"],
}


def predict(overrides, hardware):
    # the measured step runs the whole global batch as one micro-batch
    cfg = load_config(TINY, overrides + SIM_CPU)
    cfg = load_config(TINY, overrides + SIM_CPU + [f"parallel.micro_batch_size={cfg.train.global_batch_size}"])
    return estimate(cfg, hardware, 1)


def build_step(overrides):
    """Compiled graph-mode TrainStep of the project's model and a fixed batch; returns a callable step."""
    from pangu_ms.train.probe import compiled_train_step   # lazy: imports MindSpore and the model
    return compiled_train_step(load_config(TINY, overrides + SIM_CPU))


def measure_all(names, rounds: int, steps: int, quick_cal: bool):
    """Interleaved: each round runs one calibration pass, then ``steps`` steps of every config. The machine is
    shared, so calibration and training see the same load; the profile takes the median of the passes and each
    config the median of its steps."""
    import mindspore as ms
    from pangu_ms.sim.calibrate import build_profile, combine, measure as cal_measure
    from pangu_ms.train.probe import compiled_train_step
    from pangu_ms.sim.hardware import profile_from_dict

    ms.set_recursion_limit(10000)
    runs = {}
    for n in names:
        runs[n] = build_step(CONFIGS[n])
        runs[n]()                                # compile + first step
        runs[n]()
    times = {n: [] for n in names}
    passes = []
    for r in range(rounds):
        passes.append(cal_measure(quick=quick_cal, step_factory=compiled_train_step))
        for n in names:
            for _ in range(steps):
                times[n].append(runs[n]())
        print(f"round {r + 1}/{rounds}: " + ", ".join(f"{statistics.median(v):.3f}s" for v in times.values())
              + f"; op_overhead {passes[-1]['op_overhead'] * 1e6:.1f} us", file=sys.stderr, flush=True)
    meas = combine(passes)
    hw = profile_from_dict(build_profile(meas), "cpu_local")
    return hw, {n: statistics.median(v) for n, v in times.items()}, meas


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hardware", default=None, help="predict with this profile instead of calibrating in-run")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3, help="steps per config per round")
    ap.add_argument("--quick-calibration", action="store_true")
    ap.add_argument("--save-profile",
                    help="write the in-run calibrated profile here (e.g. yaml/hardware/cpu_local.yaml)")
    ap.add_argument("--predict-only", action="store_true", help="skip the measurement (needs --hardware)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    names = list(CONFIGS)
    measured, meas = {}, None
    if args.predict_only:
        hw = load_hardware(args.hardware or os.path.join(ROOT, "yaml", "hardware", "cpu_local.yaml"))
    else:
        hw, measured, meas = measure_all(names, args.rounds, args.steps, args.quick_calibration)
        if args.hardware:
            hw = load_hardware(args.hardware)
        if args.save_profile:
            from pangu_ms.sim.hardware import save_hardware
            save_hardware(hw, args.save_profile, header="Profile calibrated in-run by tools/validate_sim_cpu.py "
                          f"({time.strftime('%Y-%m-%d')}); medians of {meas['passes']} passes interleaved with the "
                          "training steps.")
    from pangu_ms.model.stats import compute_stats
    from pangu_ms.sim.kernels import reference_step_kernels
    rows = []
    for name in names:
        e = predict(CONFIGS[name], hw)
        cfg = load_config(TINY, CONFIGS[name] + SIM_CPU)
        row = {"config": name, "params_m": compute_stats(cfg, cfg.train.seq_length).total_params / 1e6,
               "kernels": reference_step_kernels(cfg), "predicted_s": e.step_time_s,
               "kernel_overhead_s": reference_step_kernels(cfg) * hw.op_overhead}
        if name in measured:
            row["measured_s"] = measured[name]
            row["error"] = row["predicted_s"] / row["measured_s"] - 1.0
        rows.append(row)
    if args.json:
        print(json.dumps({"rows": rows, "spearman": rank_correlation(rows) if measured else None,
                          "op_overhead": hw.op_overhead, "peak": hw.mfu_peak,
                          "bandwidth": hw.hbm_bandwidth, "gemm_efficiency": hw.gemm_efficiency.points()}, indent=1))
        return
    print(f"Profile {hw.name}: peak {hw.mfu_peak / 1e9:.1f} GFLOPS fp32 (measured), "
          f"{hw.hbm_bandwidth / 1e9:.1f} GB/s, op_overhead {hw.op_overhead * 1e6:.1f} us/kernel\n")
    print("| config | params | kernels/step (counted) | predicted step s | of which kernel overhead s | "
          "measured step s "
          "| error |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        meas_s = f"{r['measured_s']:.4f}" if r.get("measured_s") else "-"
        err = f"{100 * r['error']:+.1f}%" if r.get("error") is not None else "-"
        print(f"| {r['config']} | {r['params_m']:.2f}M | {r['kernels']:.0f} | {r['predicted_s']:.4f} | "
              f"{r['kernel_overhead_s']:.4f} | {meas_s} | {err} |")
    if measured:
        print(f"\nSpearman rank correlation of predicted vs measured step time over {len(measured)} configs: "
              f"{rank_correlation(rows):.3f}")


def rank_correlation(rows) -> float:
    from pangu_ms.sim.residuals import spearman
    done = [r for r in rows if r.get("measured_s")]
    return spearman([r["predicted_s"] for r in done], [r["measured_s"] for r in done])


if __name__ == "__main__":
    from pangu_ms.cli import run_cli
    sys.exit(run_cli(main))
