#!/usr/bin/env python
"""Where a training step's time goes: MindSpore's CPU profiler over a few compiled steps of a recipe, as tables
of time per operator type and per model part (scope of the kernel: forward / backward x attention, MoE, ...).

    python tools/profile_step.py --config yaml/small_cpu.yaml                  # batch 4 x recipe seq
    python tools/profile_step.py --config yaml/tiny_cpu.yaml --set moe.dropless_impl=sorted_block --top 25

The step is the one ``tools/bench.py`` times (``PanguForCausalLM`` + ``TrainStep``, graph mode, fp32, the bench's
comparable overrides unless ``--native``). Kernel times are the profiler's host-CPU op times summed over the
profiled steps and divided by their number; the wall time of the same steps is printed beside them (the
difference is launch / scheduling overhead between kernels). Profiling adds overhead per kernel, so read the
shares, not the absolute numbers.
"""
from __future__ import annotations

import argparse
import csv
import glob
import os
import sys
import tempfile
import time
from collections import defaultdict

os.environ.setdefault("LOCAL_DEFAULT_PATH", "/tmp/mflog")
os.environ.setdefault("GLOG_v", "3")

import numpy as np  # noqa: E402

from pangu_ms.bench.hf import COMPARABLE  # noqa: E402

# model part from a forward kernel's scope (first match wins; attribute names of the Cells in pangu_ms/model,
# moe, layers). Backward kernels are one row: their scopes are not reliable (the layers' graphs are shared, so
# MindSpore names most backward kernels after the first Cell of layer 0), and neither are the scopes of the
# composite ops MindSpore expands (SumExt, SiLU, softmax backward: "Expand/...").
PARTS = [("moe experts", ("/experts-", "/shared_expert-")),
         ("moe router/dispatch/aux", ("/router-", "/dispatcher-", "/aux-")),
         ("attention", ("/attention-",)),
         ("dense mlp", ("/mlp-",)),
         ("norms", ("norm-",)),
         ("embedding", ("/embedding-",)),
         ("lm head", ("/lm_head-",)),
         ("mtp", ("/mtp",))]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--config", required=True)
    p.add_argument("--set", action="append", default=[], metavar="K=V")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=0, help="default: the recipe's train.seq_length")
    p.add_argument("--steps", type=int, default=3, help="profiled steps (default 3)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--native", action="store_true", help="keep the recipe's MTP / sandwich norm")
    p.add_argument("--top", type=int, default=20, help="operator types listed (default 20)")
    return p.parse_args(argv)


def part_of(full_name: str) -> str:
    if full_name.startswith("Gradients"):
        return "backward (all parts)"
    if full_name.startswith("Expand/"):
        return "expanded composites (fwd+bwd)"
    if "/optimizer-" in full_name:
        return "optimizer + clip"
    for part, keys in PARTS:
        if any(k in full_name for k in keys):
            return f"{part} (fwd)"
    return "other (fwd: loss, residuals, step glue)"


def read_ops(out_dir: str):
    files = glob.glob(os.path.join(out_dir, "**", "cpu_op_detail_info_*.csv"), recursive=True)
    if not files:
        raise SystemExit(f"profile_step: the profiler wrote no cpu_op_detail_info under {out_dir}")
    with open(files[0]) as f:
        return list(csv.DictReader(f))


def main(argv=None) -> int:
    args = parse_args(argv)
    import mindspore as ms
    ms.set_device("CPU")
    ms.set_context(runtime_num_threads=args.threads)
    from mindspore import Profiler
    from pangu_ms.config import load_config
    from pangu_ms.model import CausalLMLoss, build_model
    from pangu_ms.train.optim import build_optimizer
    from pangu_ms.train.step import TrainStep, compile_step
    overrides = ([] if args.native else COMPARABLE) + list(args.set)
    seq = args.seq or load_config(args.config, overrides).train.seq_length
    overrides += [f"train.seq_length={seq}", f"train.global_batch_size={args.batch}",
                  f"parallel.micro_batch_size={args.batch}"]
    cfg = load_config(args.config, overrides)
    net = build_model(cfg)
    step = compile_step(TrainStep(CausalLMLoss(net, cfg.model.mtp_loss_weight),
                                  build_optimizer(net.trainable_params(), cfg.train), cfg.train.grad_clip),
                        cfg.train.mode)
    ids = np.random.default_rng(0).integers(0, cfg.model.vocab_size, (args.batch, seq + 1)).astype(np.int32)
    x, y = ms.Tensor(ids[:, :-1]), ms.Tensor(ids[:, 1:])
    for _ in range(3):
        step(x, y)[1].asnumpy()
    walls = []
    for _ in range(args.steps):
        t = time.perf_counter()
        step(x, y)[1].asnumpy()
        walls.append(time.perf_counter() - t)
    out = tempfile.mkdtemp(prefix="pangu_prof_")
    prof = Profiler(output_path=out)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step(x, y)[1].asnumpy()
    prof_wall = (time.perf_counter() - t0) / args.steps
    prof.stop()
    prof.analyse()
    rows = read_ops(out)
    n = args.steps
    by_type, by_part = defaultdict(lambda: [0, 0.0]), defaultdict(lambda: [0, 0.0])
    for r in rows:
        occ, tot = int(r["op_occurrences"]), float(r["op_total_time(ms)"])
        for table, key in ((by_type, r["op_type"]), (by_part, part_of(r["full_op_name"]))):
            table[key][0] += occ
            table[key][1] += tot
    total = sum(v[1] for v in by_type.values()) / n
    kernels = sum(v[0] for v in by_type.values()) / n
    print(f"{args.config} {' '.join(overrides)}")
    print(f"batch {args.batch} x seq {seq}, {args.threads} threads; wall {1e3 * np.median(walls):.1f} ms/step "
          f"unprofiled, {1e3 * prof_wall:.1f} profiled; kernels {total:.1f} ms/step in {kernels:.0f} kernels "
          f"({100 * total / (1e3 * prof_wall):.0f}% of the profiled wall); load {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs")
    for title, table, top in (("operator type", by_type, args.top), ("model part", by_part, 100)):
        print(f"\n{title:28}{'kernels/step':>13}{'ms/step':>10}{'share':>8}")
        for key, (occ, tot) in sorted(table.items(), key=lambda kv: -kv[1][1])[:top]:
            print(f"{key:28}{occ / n:13.0f}{tot / n:10.2f}{100 * tot / n / total:7.1f}%")
    print(f"\nprofiler output: {out}")
    return 0


if __name__ == "__main__":
    from pangu_ms.cli import run_cli
    sys.exit(run_cli(main))
