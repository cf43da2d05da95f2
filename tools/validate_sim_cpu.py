#!/usr/bin/env python
"""Compare the simulator's predicted single-process step time with the measured step of pangu_ms training.

For each config (tiny_cpu and two larger variants) it
  1. predicts the step time with the calibrated profile of this machine (``tools/simulate.py calibrate``,
     default yaml/hardware/cpu_local.yaml), fp32, no pipeline / parallelism, the project's CPU MoE path
     (``sim.moe_impl=training_cpu``), unfused element-wise ops and a full (non-causal-skipping) attention;
  2. builds ``PanguForCausalLM`` + ``TrainStep`` (imported lazily), compiles it in graph mode and measures
     the median wall time of ``--steps`` steps after ``--warmup`` warm-up steps;
  3. prints a markdown table with the relative error (target: within 15 %).

  python tools/validate_sim_cpu.py [--hardware yaml/hardware/cpu_local.yaml] [--steps 5] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pangu_ms.config import load_config  # noqa: E402
from pangu_ms.sim.estimate import estimate  # noqa: E402
from pangu_ms.sim.hardware import load_hardware  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
TINY = os.path.join(ROOT, "yaml", "tiny_cpu.yaml")
SIM_CPU = ["sim.precision=fp32", "sim.attention_causal_skip=false", "sim.fused_kernels=false",
           "sim.moe_impl=training_cpu", "model.compute_dtype=float32", "model.param_dtype=float32"]
CONFIGS = {
    "tiny_cpu (h128, 4 layers, 8 experts)": [],
    "small (h256, 4 layers, 8 experts, seq 128)": ["model.hidden_size=256", "model.dense_ffn_hidden=512",
                                                   "moe.expert_ffn_hidden=128", "train.seq_length=128"],
    "medium (h384, 6 layers, 16 experts, seq 128, batch 8)": [
        "model.hidden_size=384", "model.num_layers=6", "model.dense_ffn_hidden=1024", "model.num_heads=6",
        "moe.num_experts=16", "moe.expert_ffn_hidden=192", "train.seq_length=128", "train.global_batch_size=8"],
}


def predict(overrides, hardware):
    # the measured step runs the whole global batch as one micro-batch
    cfg = load_config(TINY, overrides + SIM_CPU)
    cfg = load_config(TINY, overrides + SIM_CPU + [f"parallel.micro_batch_size={cfg.train.global_batch_size}"])
    return estimate(cfg, hardware, 1)


def measure(overrides, steps: int, warmup: int) -> float:
    import mindspore as ms
    import numpy as np
    from pangu_ms.model.transformer import PanguForCausalLM   # lazy: the training model
    from pangu_ms.train.optim import build_optimizer
    from pangu_ms.train.step import TrainStep, compile_step

    cfg = load_config(TINY, overrides + SIM_CPU)
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    net = PanguForCausalLM(cfg)
    opt = build_optimizer(net.trainable_params(), cfg.train)
    step = compile_step(TrainStep(net, opt, cfg.train.grad_clip), cfg.train.mode)
    rng = np.random.default_rng(0)
    b, s = cfg.train.global_batch_size, cfg.train.seq_length
    ids = ms.Tensor(rng.integers(0, cfg.model.vocab_size, (b, s)).astype(np.int32))
    labels = ms.Tensor(rng.integers(0, cfg.model.vocab_size, (b, s)).astype(np.int32))
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        out = step(ids, labels)
        out[0].asnumpy()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hardware", default=os.path.join(ROOT, "yaml", "hardware", "cpu_local.yaml"))
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--predict-only", action="store_true", help="skip the measurement")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    hw = load_hardware(args.hardware)
    rows = []
    for name, ov in CONFIGS.items():
        e = predict(ov, hw)
        row = {"config": name, "predicted_s": e.step_time_s, "predicted_mfu": e.mfu}
        if not args.predict_only:
            try:
                row["measured_s"] = measure(ov, args.steps, args.warmup)
                row["error"] = row["predicted_s"] / row["measured_s"] - 1.0
            except ImportError as err:              # training model not importable yet
                row["measured_s"] = None
                row["error"] = None
                row["note"] = f"training step not importable: {err}"
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"Profile {hw.name}: peak {hw.mfu_peak / 1e9:.1f} GFLOPS fp32 (measured), "
          f"{hw.hbm_bandwidth / 1e9:.1f} GB/s\n")
    print("| config | predicted step s | measured step s | error |")
    print("|---|---|---|---|")
    for r in rows:
        meas = f"{r['measured_s']:.4f}" if r.get("measured_s") else "-"
        err = f"{100 * r['error']:+.1f}%" if r.get("error") is not None else r.get("note", "-")
        print(f"| {r['config']} | {r['predicted_s']:.4f} | {meas} | {err} |")


if __name__ == "__main__":
    main()
