"""The intra-node link of the CPU profile, measured: MindSpore's CPU ``AllReduce`` under msrun, fitted to the
simulator's collective model.

``comm.allreduce_time`` charges an all-reduce of B bytes over n ranks ``2 * ((n-1)/n * B / bw_eff(B/n) +
(n-1) * latency)``. :func:`measure_collectives` times graph-mode ``ops.AllReduce`` (and ``ops.AllGather``, the
check) calls of several sizes over the world group (run it on every rank of an msrun job, the ranks in lock step).
:func:`link_from_allreduce` fits ``latency`` by least squares on t = a + c * B (bounded by the fastest call), takes
the best rate reached as ``bandwidth`` and stores, per message size B/n, the efficiency that makes the model
reproduce each measured point (in (0, 1]). The explicit CPU path builds every collective from AllReduce (and
AllGather on the world group, ``pangu_ms/parallel/comm.py``), so this one link is what the simulator needs for it.
"""
from __future__ import annotations

import statistics
import time

SIZES = (4096, 65536, 1 << 20, 4 << 20, 16 << 20)          # bytes per rank (float32 tensors)


def measure_collectives(sizes=SIZES, repeats: int = 7) -> dict:
    """{"allreduce": {bytes: median s}, "allgather": {gathered bytes: median s}}: one world-group ``AllReduce``
    (sum, float32) of each size and one ``AllGather`` of each size per rank, graph mode, after one warm-up call;
    every rank must call it with the same arguments."""
    import mindspore as ms
    import numpy as np
    from mindspore import nn, ops
    from mindspore.communication import get_group_size
    from mindspore.ops import ReduceOp

    class _Collective(nn.Cell):
        def __init__(self, op):
            super().__init__()
            self.op = op

        def construct(self, x):
            return self.op(x)

    ms.set_context(mode=ms.GRAPH_MODE)
    n = get_group_size()
    out = {"allreduce": {}, "allgather": {}}
    for kind, op, scale in (("allreduce", ops.AllReduce(ReduceOp.SUM), 1), ("allgather", ops.AllGather(), n)):
        cell = _Collective(op)
        for b in sizes:
            x = ms.Tensor(np.ones(max(int(b) // 4, 1), np.float32))
            cell(x).asnumpy()
            ts = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                cell(x).asnumpy()
                ts.append(time.perf_counter() - t0)
            out[kind][int(b) * scale] = statistics.median(ts)
    return out


def link_from_allreduce(points: dict, n: int) -> dict:
    """The ``intra_node`` link section (bandwidth, latency, efficiency) whose ``allreduce_time`` over ``n`` ranks
    reproduces the measured {bytes: seconds} (module docstring)."""
    if n < 2 or len(points) < 2:
        raise ValueError(f"link_from_allreduce: need n >= 2 ranks and >= 2 sizes, got n={n}, {len(points)} sizes")
    xs = sorted(points)
    mx = statistics.fmean(xs)
    my = statistics.fmean(points[x] for x in xs)
    slope = sum((x - mx) * (points[x] - my) for x in xs) / sum((x - mx) ** 2 for x in xs)
    slope = max(slope, 1e-15)
    intercept = max(my - slope * mx, 0.0)
    # latency from the fit, below what the fastest call allows; bandwidth = the best rate reached, so every
    # point's efficiency is <= 1 and the model reproduces it exactly
    latency = min(intercept / (2.0 * (n - 1)), 0.9 * min(points.values()) / (2.0 * (n - 1)))
    rates = {b: (n - 1) / n * b / (points[b] / 2.0 - (n - 1) * latency) for b in xs}
    bandwidth = max(rates.values())
    eff = [[b / n, max(rates[b] / bandwidth, 1e-3)] for b in xs]
    return {"bandwidth": bandwidth, "latency": latency, "efficiency": eff, "topology": "switch"}
