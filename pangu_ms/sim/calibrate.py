"""Measure this machine with MindSpore and write a hardware profile (``tools/simulate.py calibrate``).

Measured (float32, the CPU training dtype, on the current process's threads):
* GEMM throughput for square and transformer-like shapes -> ``peak_flops.fp32`` (the best measured rate, so
  MFU on CPU is against the *measured* peak, stated in the profile) and ``gemm_efficiency`` (each shape's rate /
  peak, keyed by its FLOPs per call);
* batched matmul of an attention shape -> ``attention_efficiency``;
* element-wise add / mul over large tensors -> ``hbm_bandwidth`` (bytes moved / s), elementwise_efficiency 1;
* a chain of tiny ops inside one compiled graph -> ``op_overhead`` (per-kernel cost in graph mode); the
  PyNative dispatch time of one tiny op is subtracted from every single-op timing above.
The single-device profile sets ``devices_per_node`` 1 and nominal links (unused by single-process estimates).
"""
from __future__ import annotations

import os
import platform
import time

import numpy as np

from .hardware import profile_from_dict


def _bench(fn, min_time: float = 0.2, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= min_time and n >= 3:
            return dt / n


def measure(quick: bool = False) -> dict:
    import mindspore as ms
    from mindspore import Tensor, ops

    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    rng = np.random.default_rng(0)
    mt = 0.1 if quick else 0.3

    def t(*shape):
        return Tensor(rng.standard_normal(shape).astype(np.float32))

    def sync(x):
        return x.asnumpy()

    gemms = [(64, 64, 64), (128, 128, 128), (256, 256, 256), (512, 512, 512), (256, 128, 512), (1024, 128, 384),
             (1024, 512, 512)]
    if not quick:
        gemms += [(1024, 1024, 1024), (2048, 1024, 1024)]
    # per-call dispatch of PyNative (subtracted from the op timings below) and per-kernel cost inside a
    # compiled graph (what a graph-mode training step pays per operator -> op_overhead)
    small = t(8)
    dispatch = _bench(lambda: sync(small + small), mt)

    @ms.jit
    def chain(x):
        for _ in range(64):
            x = x * 1.0001 + 0.5
        return x

    graph_per_op = _bench(lambda: sync(chain(small)), mt) / 128

    def net(sec):
        return max(sec - dispatch, 0.1 * sec)

    gemm = []
    for m, k, n in gemms:
        a, b = t(m, k), t(k, n)
        sec = net(_bench(lambda: sync(ops.matmul(a, b)), mt))
        gemm.append((2.0 * m * k * n, 2.0 * m * k * n / sec))
    peak = max(r for _, r in gemm)
    # attention-like batched matmul: (B*H, S, d) x (B*H, d, S)
    q, k_ = t(8, 256, 32), t(8, 32, 256)
    sec = net(_bench(lambda: sync(ops.bmm(q, k_)), mt))
    attn_rate = 2.0 * 8 * 256 * 32 * 256 / sec
    # element-wise bandwidth: x + y over 4M floats: 3 * 16 MB moved
    x, y = t(4 * 1024 * 1024), t(4 * 1024 * 1024)
    sec = net(_bench(lambda: sync(x + y), mt))
    bw = 3 * 4 * x.size / sec
    return {"gemm": gemm, "peak": peak, "attention_rate": attn_rate, "bandwidth": bw, "op_overhead": graph_per_op,
            "pynative_dispatch": dispatch, "threads": os.cpu_count()}


def build_profile(meas: dict, name: str = "cpu_local") -> dict:
    peak = meas["peak"]
    pts = {}
    for f, r in sorted(meas["gemm"]):
        pts[f] = max(pts.get(f, 0.0), min(1.0, r / peak))
    curve = [[f, max(e, 1e-3)] for f, e in sorted(pts.items())]
    mem = 16 * 1024 ** 3
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        pass
    return {
        "name": name,
        "description": f"measured by tools/simulate.py calibrate on {platform.processor() or platform.machine()}"
                       f" ({meas['threads']} CPUs), MindSpore float32",
        "peak_flops": {"fp32": peak, "bf16": peak},
        "mfu_peak_dtype": "fp32",
        "hbm_bytes": float(mem), "usable_hbm_bytes": float(mem) * 0.8, "reserved_bytes": 0.0,
        "hbm_bandwidth": meas["bandwidth"],
        "devices_per_node": 1,
        "intra_node": {"bandwidth": 1e10, "latency": 1e-6, "efficiency": [[1.0, 1.0]]},
        "inter_node": {"bandwidth": 1e9, "latency": 1e-5, "efficiency": [[1.0, 1.0]]},
        "host_bandwidth": meas["bandwidth"],
        "gemm_efficiency": curve,
        "attention_efficiency": min(1.0, meas["attention_rate"] / peak),
        "elementwise_efficiency": 1.0,
        "op_overhead": meas["op_overhead"],
    }


def calibrate(path: str, quick: bool = False, name: str = "cpu_local") -> dict:
    meas = measure(quick)
    prof = build_profile(meas, name)
    profile_from_dict(prof, name)           # validate
    from .hardware import save_hardware
    save_hardware(profile_from_dict(prof, name), path,
                  header=f"Hardware profile measured on this machine by `tools/simulate.py calibrate` "
                         f"({time.strftime('%Y-%m-%d')}).\npeak_flops = best measured MindSpore fp32 GEMM rate "
                         f"(MFU on CPU is quoted against it);\ngemm_efficiency = measured rate / peak by FLOPs per "
                         f"call; hbm_bandwidth = measured element-wise add traffic.")
    return {"profile": prof, "measurements": meas}
