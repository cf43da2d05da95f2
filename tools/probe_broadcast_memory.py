#!/usr/bin/env python
"""Peak memory of a chain of broadcasting elementwise ops on CPU, implicit vs explicit broadcast (graph mode).

    python tools/probe_broadcast_memory.py [--ops 10] [--rows 8]

Each variant runs in a fresh child: ``--ops`` times ``x = x + m`` with x [rows, 1024, 1024] fp32 (32 MB at 8
rows) and m [1024, 1024] (``implicit``), the same with m expanded by ``BroadcastTo`` first (``explicit``), and
``x = x + x`` (``same_shape``). Printed: step memory = peak RSS - RSS before the call, in MB and in units of x.
This is the measurement behind ``pangu_ms/layers/explicit_broadcast.py``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

os.environ.setdefault("GLOG_v", "3")
VARIANTS = ("implicit", "explicit", "same_shape")


def child(variant: str, n_ops: int, rows: int) -> dict:
    import mindspore as ms
    import numpy as np
    from mindspore import nn, ops
    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE)

    class Chain(nn.Cell):
        def construct(self, x, m):
            for _ in range(n_ops):
                if variant == "implicit":
                    x = x + m
                elif variant == "explicit":
                    x = x + ops.broadcast_to(m, x.shape)
                else:
                    x = x + x
            return x.sum()

    def status_mb(field):
        with open("/proc/self/status") as f:
            return next(float(line.split()[1]) / 1024 for line in f if line.startswith(field + ":"))
    x = ms.Tensor(np.random.default_rng(0).standard_normal((rows, 1024, 1024)).astype(np.float32) * 1e-3)
    m = ms.Tensor(np.zeros((1024, 1024), np.float32))
    net = Chain()
    net.compile(x, m)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = status_mb("VmRSS")
    net(x, m).asnumpy()
    step = status_mb("VmHWM") - before
    return {"variant": variant, "step_mb": step, "x_units": step / (rows * 4.0)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ops", type=int, default=10, help="elementwise ops in the chain (default 10)")
    p.add_argument("--rows", type=int, default=8, help="leading size of x (default 8: 32 MB)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.ops, args.rows)))
        return 0
    print(f"{args.ops} adds on x [{args.rows}, 1024, 1024] fp32 ({args.rows * 4} MB), one fresh process each")
    for v in VARIANTS:
        r = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", v, "--ops", str(args.ops),
                            "--rows", str(args.rows)], capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(f"error: variant {v} failed:\n{r.stderr[-1500:]}")
        out = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"{v:<12}{out['step_mb']:>8.0f} MB  = {out['x_units']:.1f} x the size of x")
    return 0


if __name__ == "__main__":
    from pangu_ms.cli import run_cli
    sys.exit(run_cli(main))
