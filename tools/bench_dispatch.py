#!/usr/bin/env python
"""Dropless MoE implementations side by side: one MoE layer (router, dispatcher, experts, shared expert),
forward + backward (input and parameter gradients), graph mode, fp32, interleaved blocks in one process.

    python tools/bench_dispatch.py --config yaml/small_cpu.yaml                    # the recipe's E, k, T
    python tools/bench_dispatch.py --config yaml/tiny_cpu.yaml --grid              # E/k sweep at the recipe's width

Candidates: ``masked_dense`` and ``sorted_block`` at each ``--blocks-sizes`` value. Prints ms per layer call
(median, p10, p90) and each one's ratio to masked_dense, plus the choice of the ``moe.dropless_impl: auto`` rule
(``pangu_ms.moe.dispatcher.auto_dropless_impl``) so the rule can be checked against the measurement.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("LOCAL_DEFAULT_PATH", "/tmp/mflog")
os.environ.setdefault("GLOG_v", "3")

import numpy as np  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--set", action="append", default=[], metavar="K=V")
    p.add_argument("--tokens", type=int, default=0, help="tokens per call (default batch 4 x recipe seq)")
    p.add_argument("--block-sizes", default="32,64,128", help="sorted_block sizes to try")
    p.add_argument("--grid", action="store_true", help="sweep (E, k) in {(8,2),(16,2),(16,4),(32,2),(32,4)}")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args(argv)


def layer_step(cfg, impl: str, block: int, tokens: int):
    import mindspore as ms
    from mindspore import nn, ops
    from pangu_ms.backend import get_backend
    from pangu_ms.config import load_config  # noqa: F401
    from pangu_ms.layers.init import Initializer
    from pangu_ms.moe.layer import MoELayer
    e = cfg.moe
    e.dropless_impl, e.sorted_block_size = impl, block
    layer = MoELayer(cfg.model.hidden_size, e, Initializer(cfg.model, 0), get_backend())

    class Loss(nn.Cell):
        def __init__(self):
            super().__init__()
            self.layer = layer

        def construct(self, x):
            y, aux, _, _ = self.layer(x, None)
            return (y * y).mean() + aux

    net = Loss()
    grad = ms.value_and_grad(net, 0, net.trainable_params())
    fn = ms.jit(grad)
    x = ms.Tensor(np.random.default_rng(0).standard_normal((tokens, cfg.model.hidden_size)).astype(np.float32))

    def run():
        loss, _ = fn(x)
        return float(loss.asnumpy())
    return run


def main(argv=None) -> int:
    args = parse_args(argv)
    import mindspore as ms
    ms.set_device("CPU")
    ms.set_context(runtime_num_threads=args.threads)
    from pangu_ms.config import load_config
    from pangu_ms.config.schema import auto_dropless_impl
    base = load_config(args.config, args.set)
    tokens = args.tokens or 4 * base.train.seq_length
    grid = [(8, 2), (16, 2), (16, 4), (32, 2), (32, 4)] if args.grid else [(base.moe.num_experts, base.moe.top_k)]
    blocks = [int(b) for b in args.block_sizes.split(",")]
    print(f"{args.config}: hidden {base.model.hidden_size}, expert ffn {base.moe.expert_ffn_hidden}, "
          f"{base.moe.num_shared_experts} shared, {tokens} tokens, fwd+bwd of one MoE layer; "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    for ne, k in grid:
        cfg = load_config(args.config, args.set + [f"moe.num_experts={ne}", f"moe.top_k={k}"])
        fns = {"masked_dense": layer_step(cfg, "masked_dense", 32, tokens)}
        for b in blocks:
            cfg_b = load_config(args.config, args.set + [f"moe.num_experts={ne}", f"moe.top_k={k}"])
            fns[f"sorted_block{b}"] = layer_step(cfg_b, "sorted_block", b, tokens)
        ref = fns["masked_dense"]()
        for name, fn in fns.items():
            v = fn()
            if abs(v - ref) > 1e-4 * max(1.0, abs(ref)):
                print(f"  WARNING {name} loss {v} != masked_dense {ref}")
            for _ in range(2):
                fn()
        times = {n: [] for n in fns}
        for _ in range(args.rounds):
            for n, fn in fns.items():
                for _ in range(args.steps):
                    t = time.perf_counter()
                    fn()
                    times[n].append(time.perf_counter() - t)
        md = float(np.median(times["masked_dense"]))
        auto = auto_dropless_impl(ne, k)
        print(f"E={ne:3d} k={k} (E/k {ne / k:4.1f}); auto rule -> {auto}")
        for n, ts in times.items():
            m = float(np.median(ts))
            print(f"  {n:16}{1e3 * m:9.2f} ms  p10 {1e3 * np.percentile(ts, 10):8.2f}  "
                  f"p90 {1e3 * np.percentile(ts, 90):8.2f}  speed vs masked_dense {md / m:5.2f}x", flush=True)
    print(f"load average at end {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    from pangu_ms.cli import run_cli
    sys.exit(run_cli(main))
