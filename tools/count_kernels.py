#!/usr/bin/env python
"""Count the kernels of the compiled training step of a config and compare with the simulator's count.

Compiles PanguForCausalLM + TrainStep (graph mode, CPU, fp32) in a child process with MindSpore's IR dump on,
counts the kernels of the backend's final graph (pangu_ms/sim/graph_kernels.py: forward, backward, optimizer /
step glue) and prints them next to ``pangu_ms.sim.kernels.reference_step_kernels`` (the structural count the
simulator uses for ``sim.moe_impl: training_cpu``). Use it to re-derive kernels.py after the model or the
train step changes.

  python tools/count_kernels.py --config yaml/tiny_cpu.yaml [--set model.num_layers=2 ...] [--json]
  python tools/count_kernels.py --variants     # tiny_cpu and the structural variants kernels.py is derived from
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

TINY = os.path.join(ROOT, "yaml", "tiny_cpu.yaml")
FP32 = ["model.compute_dtype=float32", "model.param_dtype=float32"]
# one change at a time from tiny_cpu (4 layers: 1 dense + 3 MoE, MTP 1, sandwich norm, q_lora, 1 shared expert)
VARIANTS = {
    "tiny_cpu": [],
    "3 layers": ["model.num_layers=3"],
    "2 dense": ["model.num_dense_layers=2"],
    "no MTP": ["model.mtp_depth=0"],
    "no sandwich": ["model.sandwich_norm=false"],
    "no q_lora": ["model.q_lora_rank=0"],
    "no shared": ["moe.num_shared_experts=0"],
}


def _child(config: str, overrides: list) -> None:
    from pangu_ms.config import load_config
    from pangu_ms.train.probe import compiled_train_step
    cfg = load_config(config, overrides + FP32)
    compiled_train_step(cfg)()


def count(config: str, overrides: list) -> dict:
    """Compile in a child process with the IR dump on; return graph_kernels counts + the structural count."""
    from pangu_ms.config import load_config
    from pangu_ms.sim.graph_kernels import count_dump_dir
    from pangu_ms.sim.kernels import reference_step_kernels
    with tempfile.TemporaryDirectory(prefix="pangu_ir_") as d:
        env = dict(os.environ, MS_DEV_SAVE_GRAPHS="1", MS_DEV_SAVE_GRAPHS_PATH=d, GLOG_v="3")
        cmd = [sys.executable, os.path.abspath(__file__), "--child", "--config", config, "--set", *overrides]
        r = subprocess.run(cmd, cwd=d, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"error: compiling {config} {overrides} failed:\n{r.stderr[-2000:]}")
        c = count_dump_dir(d)
    cfg = load_config(config, overrides + FP32)
    c["structural"] = reference_step_kernels(cfg)
    return c


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=TINY)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    ap.add_argument("--variants", action="store_true", help="count tiny_cpu and its structural variants")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.config = os.path.abspath(args.config)     # the child runs in the dump directory
    if args.child:
        _child(args.config, args.set)
        return
    runs = VARIANTS if args.variants else {"config": args.set}
    rows = {}
    try:
        from tqdm import tqdm
        it = tqdm(runs.items(), desc="compiling", disable=len(runs) == 1)
    except ImportError:
        it = runs.items()
    for name, ov in it:
        rows[name] = count(args.config, ov)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print("| case | forward | backward | optimizer + glue | total (compiled) | kernels.py | diff |")
    print("|---|---|---|---|---|---|---|")
    for name, c in rows.items():
        print(f"| {name} | {c['forward']} | {c['backward']} | {c['other']} | {c['total']} | "
              f"{c['structural']:.0f} | {100 * (c['structural'] / c['total'] - 1):+.1f}% |")


if __name__ == "__main__":
    from pangu_ms.cli import run_cli
    sys.exit(run_cli(main))
