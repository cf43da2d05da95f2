"""fp32 GEMM peak of this machine, measured with MindSpore (and optionally torch) on large squares."""
from __future__ import annotations

import time

import numpy as np


def mindspore_gemm_peak(sizes=(1024, 1536, 2048), repeats: int = 4) -> tuple[float, dict]:
    """Best GFLOP/s of ``ops.MatMul`` on n x n fp32 squares (PyNative, synchronised per call)."""
    import mindspore as ms
    from mindspore import ops
    mm = ops.MatMul()
    best, per = 0.0, {}
    rng = np.random.default_rng(0)
    for n in sizes:
        a = ms.Tensor(rng.standard_normal((n, n), dtype=np.float32))
        b = ms.Tensor(rng.standard_normal((n, n), dtype=np.float32))
        mm(a, b).asnumpy()                                   # warm-up (kernel build, pool allocation)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            mm(a, b).asnumpy()
            times.append(time.perf_counter() - t)
        g = 2.0 * n ** 3 / min(times) / 1e9
        per[n] = g
        best = max(best, g)
    return best, per


def torch_gemm_peak(sizes=(1024, 1536, 2048), repeats: int = 4) -> float:
    import torch
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t)
        best = max(best, 2.0 * n ** 3 / min(times) / 1e9)
    return best
