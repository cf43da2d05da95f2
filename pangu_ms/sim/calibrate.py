"""Measure this machine with MindSpore and write a hardware profile (``tools/simulate.py calibrate``).

Measured (float32, the CPU training dtype, GRAPH mode as the training step runs, on the current threads and
under the current machine load):
* the project's own training step (PanguForCausalLM + TrainStep, graph mode) at negligible width and two depths
  -> ``op_overhead`` (step time per kernel, with the structural kernel counts of kernels.py)
  (``model_kernel_cost``; ``model_probe=False`` falls back to ``_train_step_kernel_cost``, a generic
  stack of RMSNorm-like blocks with autodiff and fused AdamW, reported as ``generic_step_kernel``). On this
  shared 2-core machine a plain chain of element-wise kernels (``chain_kernel``) under-states the per-kernel
  cost of a training graph ~20x and the generic stack ~5x: the training graph's actors hand work between
  threads along a wide DAG, and under CPU oversubscription each hand-off waits for a time slice;
* chains of 128 scalar element-wise kernels over tensors of 256 .. 262,144 floats: the intercept of time per
  kernel vs bytes is the in-graph per-kernel cost subtracted from the chains below;
* chains of same-shape multiplies over activation-sized tensors (256K .. 4M floats) -> ``hbm_bandwidth``
  (elementwise_efficiency 1), and of broadcasting multiplies and last-axis reductions -> ``broadcast_efficiency``
  (their rate / that bandwidth; ~0.2 for MindSpore's CPU kernels, see ``_elementwise_rates``);
* chains of 8 matmuls of each shape in GEMM_SHAPES (transformer-like rows x widths, small to large), the chain's
  per-kernel cost subtracted -> ``peak_flops.fp32`` (the best measured rate, so MFU on CPU is against the
  *measured* peak, stated in the profile) and ``gemm_efficiency`` (rate / peak by FLOPs per call; shapes within
  4x FLOPs pooled by median): the size-dependent small-GEMM inefficiency;
* a chain of attention-shaped batched matmuls -> ``attention_efficiency``.
``combine`` takes the median of several passes; ``tools/validate_sim_cpu.py`` interleaves passes with the
training steps it predicts, so both see the same machine load.
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


# GEMM shapes (m, k, n): the row counts and widths of the CPU validation models (tokens per step 256..1024,
# widths 32..2048) plus large squares for the peak. Each is timed as a chain of CHAIN matmuls inside one
# compiled graph (x -> x W_a -> (x W_a) W_b -> ..., alternating [k, n] / [n, k] weights) so that graph-mode
# per-kernel cost is measured the way the training step pays it and then subtracted.
GEMM_SHAPES = [(256, 64, 64), (512, 32, 128), (512, 128, 128), (512, 128, 512), (1024, 64, 256),
               (1024, 256, 256), (1024, 128, 1024), (1024, 512, 512), (1024, 512, 2048), (1024, 1024, 1024),
               (2048, 1024, 1024)]
CHAIN = 8
ELEM_SIZES = (256, 8192, 65536, 262144)      # floats per tensor of the element-wise chain


def measure(quick: bool = False, model_probe: bool = True, step_factory=None) -> dict:
    """One calibration pass in GRAPH mode (what the training step runs); see the module docstring.
    ``model_probe`` needs ``step_factory`` (see ``model_kernel_cost``)."""
    import mindspore as ms
    from mindspore import Tensor, ops

    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    rng = np.random.default_rng(0)
    mt = 0.1 if quick else 0.25

    def t(*shape):
        return Tensor((0.1 * rng.standard_normal(shape)).astype(np.float32))

    def sync(x):
        return x.asnumpy()

    # per-kernel cost and element-wise bandwidth: a chain of 2*64 element-wise kernels (x*a, +b) per size;
    # time per kernel = op_overhead + bytes / bandwidth (least squares over the sizes; 8 bytes/element/kernel)
    @ms.jit
    def chain(x):
        for _ in range(64):
            x = x * 0.999 + 0.001
        return x

    per_kernel = []
    for n in ELEM_SIZES:
        x = t(n)
        per_kernel.append((8.0 * n, _bench(lambda: sync(chain(x)), mt) / 128))
    xs = np.array([b for b, _ in per_kernel])
    ys = np.array([s for _, s in per_kernel])
    slope, icpt = np.polyfit(xs, ys, 1)
    chain_cost = max(float(icpt), 0.0)     # per-kernel cost inside these chains, subtracted from GEMM chains
    bw, bcast_eff = _elementwise_rates(ms, ops, t, sync, mt, chain_cost)

    overhead, step_fixed = _train_step_kernel_cost(ms, ops, mt)
    generic = overhead
    if model_probe:
        if step_factory is None:
            raise ValueError("calibrate: model_probe needs step_factory (pangu_ms.train.probe.compiled_train_step)")
        overhead, step_fixed = model_kernel_cost(step_factory, 2 * mt)

    mm = ops.MatMul()

    @ms.jit
    def gemm_chain(x, wa, wb):
        for i in range(CHAIN // 2):
            x = mm(mm(x, wa), wb)
        return x

    gemm = []
    shapes = GEMM_SHAPES[:-2] if quick else GEMM_SHAPES
    for m, k, n in shapes:
        x, wa, wb = t(m, k), t(k, n), t(n, k)
        sec = _bench(lambda: sync(gemm_chain(x, wa, wb)), mt) / CHAIN
        sec = max(sec - chain_cost, 0.1 * sec)
        gemm.append((2.0 * m * k * n, 2.0 * m * k * n / sec, (m, k, n)))
    peak = max(r for _, r, _ in gemm)

    # attention-like batched matmuls (B*H, S, d) x (B*H, d, S) and back, in a graph
    bmm_t, bmm = ops.BatchMatMul(transpose_b=True), ops.BatchMatMul()

    @ms.jit
    def attn_chain(q, k):
        for _ in range(CHAIN // 2):
            q = bmm(bmm_t(q, k), k)
        return q

    q, k_ = t(16, 128, 32), t(16, 128, 32)
    sec = _bench(lambda: sync(attn_chain(q, k_)), mt) / CHAIN
    sec = max(sec - chain_cost, 0.1 * sec)
    attn_rate = 2.0 * 16 * 128 * 32 * 128 / sec
    return {"gemm": gemm, "peak": peak, "attention_rate": attn_rate, "bandwidth": float(bw),
            "broadcast_efficiency": bcast_eff,
            "op_overhead": float(overhead), "step_overhead": float(step_fixed), "chain_kernel": chain_cost,
            "generic_step_kernel": float(generic),
            "per_kernel": per_kernel, "threads": os.cpu_count()}


BW_SIZES = (262144, 1048576, 4194304)       # floats: the activation sizes of the validation models and above


def _elementwise_rates(ms, ops, t, sync, min_time: float, chain_cost: float) -> tuple:
    """(bandwidth, broadcast_efficiency) of element-wise kernels on activation-sized tensors [n / 128, 128]:
    * same-shape binary multiply x * y (reads 2, writes 1 tensor: 12 bytes per element) -> ``hbm_bandwidth``;
    * the slow class: a broadcasting multiply x * g (g [128]) and x + sum(x, -1) * 1e-6 (a last-axis reduction
      and a broadcasting add), each slow kernel counted as 8 bytes per element (read + write, as the
      simulator counts them); their rate over the sizes divided by the bandwidth is ``broadcast_efficiency``.
    Each is a chain of 16 kernels in one compiled graph, the per-kernel chain cost subtracted; rates are the
    totals over the sizes (bytes / seconds), so the largest sizes weigh most."""
    rng = np.random.default_rng(1)
    from mindspore import Tensor

    @ms.jit
    def mul_chain(x, y):
        for _ in range(16):
            x = x * y
        return x

    @ms.jit
    def bcast_chain(x, g):
        for _ in range(16):
            x = x * g
        return x

    @ms.jit
    def reduce_chain(x):
        for _ in range(16):          # each step depends on the last (no common-subexpression elimination)
            x = x + ops.sum(x, -1, keepdim=True) * 1e-6
        return x

    plain_b = plain_s = slow_b = slow_s = 0.0
    for n in BW_SIZES:
        x = t(n // 128, 128)
        y = Tensor((1.0 + 1e-4 * rng.standard_normal((n // 128, 128))).astype(np.float32))
        g = Tensor(np.ones(128, np.float32))
        per = lambda f, k=1: max(_bench(f, min_time) / 16 - k * chain_cost, 1e-9)   # noqa: E731
        plain_b, plain_s = plain_b + 12.0 * n, plain_s + per(lambda: sync(mul_chain(x, y)))
        # broadcast multiply (1 slow kernel) + [reduction, broadcast add, tiny scale] (2 slow kernels)
        slow_b += 3 * 8.0 * n
        slow_s += per(lambda: sync(bcast_chain(x, g))) + per(lambda: sync(reduce_chain(x)), 3)
    bw = plain_b / plain_s
    return float(bw), float(min(1.0, slow_b / slow_s / bw))


PROBE_DEPTHS = (8, 24)
PROBE_KERNELS_PER_BLOCK = 7 * 3 + 1      # 7 forward kernels, 2x in the backward, 1 fused AdamW kernel


def _train_step_kernel_cost(ms, ops, min_time: float) -> tuple:
    """(per-kernel cost, per-step fixed cost) inside a compiled *training step* (forward + autodiff backward +
    in-place optimizer, run by the same graph runtime as TrainStep) with negligible work per kernel: a stack of
    n RMSNorm-like blocks x <- x + x * rsqrt(mean(x*x) + eps) * g on [512, 128] activations (the size of the
    validation models' activations, so kernels are split over threads as the model's are; 7 forward kernels),
    each gain g updated by the fused AdamWeightDecay kernel. Two depths separate the two costs:
    op_overhead = (t(n2) - t(n1)) / ((n2 - n1) * PROBE_KERNELS_PER_BLOCK) (the simulator's 2x backward-kernel
    rule, kernels.py), step_overhead = t(n1) - n1 * PROBE_KERNELS_PER_BLOCK * op_overhead."""
    from mindspore import Parameter, Tensor, nn
    from mindspore.ops import operations as P
    rng = np.random.default_rng(1)

    class Block(nn.Cell):
        def __init__(self):
            super().__init__()
            self.g = Parameter(Tensor(np.ones(128, np.float32)), name="g")

        def construct(self, x):
            return x + x * ops.rsqrt(ops.mean(x * x, -1, keep_dims=True) + 1e-6) * self.g

    class Net(nn.Cell):
        def __init__(self, n):
            super().__init__()
            self.blocks = nn.CellList([Block() for _ in range(n)])

        def construct(self, x):
            for b in self.blocks:
                x = b(x)
            return (x * x).mean()

    class Step(nn.Cell):
        def __init__(self, net):
            super().__init__()
            self.net = net
            self.params = ms.ParameterTuple(net.trainable_params())
            self.m = self.params.clone(prefix="m", init="zeros")
            self.v = self.params.clone(prefix="v", init="zeros")
            self.grad = ms.value_and_grad(net, None, self.params)
            self.adam = P.AdamWeightDecay()
            self.lr, self.b1, self.b2 = Tensor(1e-4, ms.float32), Tensor(0.9, ms.float32), Tensor(0.99, ms.float32)
            self.eps = Tensor(1e-8, ms.float32)

        def construct(self, x):
            loss, g = self.grad(x)
            for i in range(len(self.params)):
                self.adam(self.params[i], self.m[i], self.v[i], self.lr, self.b1, self.b2, self.eps, 0.0, g[i])
            return loss

    x = Tensor((0.1 * rng.standard_normal((512, 128))).astype(np.float32))
    t = []
    for n in PROBE_DEPTHS:
        step = ms.jit(Step(Net(n)).construct)
        t.append(_bench(lambda: step(x).asnumpy(), min_time, warmup=2))
    per = max((t[1] - t[0]) / ((PROBE_DEPTHS[1] - PROBE_DEPTHS[0]) * PROBE_KERNELS_PER_BLOCK), 1e-7)
    return per, max(0.0, t[0] - PROBE_DEPTHS[0] * PROBE_KERNELS_PER_BLOCK * per)


MODEL_PROBE = ["model.hidden_size=32", "model.num_heads=2", "model.q_lora_rank=16", "model.kv_lora_rank=8",
               "model.qk_nope_head_dim=8", "model.qk_rope_head_dim=4", "model.v_head_dim=8",
               "model.dense_ffn_hidden=32", "model.vocab_size=64", "moe.num_experts=4", "moe.expert_ffn_hidden=16",
               "train.seq_length=16", "train.global_batch_size=2", "parallel.micro_batch_size=2",
               "model.compute_dtype=float32"]
MODEL_PROBE_LAYERS = (2, 6)
_PROBE_STEPS: dict = {}


def model_kernel_cost(step_factory, min_time: float = 0.3) -> tuple:
    """(per-kernel cost, per-step fixed cost) of the project's own training step (PanguForCausalLM + TrainStep,
    graph mode) at negligible width (hidden 32, 2 x 16 tokens), so that its time is kernel launches: the same
    op mix, DAG shape and runtime as the real steps. Two depths (MODEL_PROBE_LAYERS, 1 dense layer + MoE layers,
    MTP 1) and the structural kernel counts of kernels.py give
        op_overhead = (t(L1) + t(L2)) / (K(L1) + K(L2))     (step_overhead 0: folded in; see the comment below).
    ``step_factory(cfg)`` compiles the training step and returns a callable timing one step
    (``pangu_ms.train.probe.compiled_train_step``; passed in, since the simulator does not import training).
    The compiled probes are cached per process (two compiles)."""
    import mindspore as ms
    from ..config import load_config
    from .kernels import reference_step_kernels

    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    ms.set_recursion_limit(10000)
    tiny = os.path.join(os.path.dirname(__file__), "..", "..", "yaml", "tiny_cpu.yaml")
    times, kernels = [], []
    for n in MODEL_PROBE_LAYERS:
        cfg = load_config(tiny, MODEL_PROBE + [f"model.num_layers={n}"])
        if n not in _PROBE_STEPS:
            _PROBE_STEPS[n] = step_factory(cfg)
        times.append(_bench(_PROBE_STEPS[n], min_time, warmup=1))
        kernels.append(reference_step_kernels(cfg))
    # the two-depth difference would separate a per-step fixed cost, but on a shared machine it swings from 0 to
    # 4x between passes (a difference of two noisy times); the pooled ratio is stable and folds the (small)
    # per-step cost into the per-kernel cost
    per = (times[0] + times[1]) / (kernels[0] + kernels[1])
    return per, 0.0


def combine(passes: list) -> dict:
    """Median of several calibration passes (interleaved with the workload they should describe)."""
    med = lambda xs: float(np.median(xs))  # noqa: E731
    first = passes[0]
    gemm = [(f, med([p["gemm"][i][1] for p in passes]), shape) for i, (f, _, shape) in enumerate(first["gemm"])]
    return {"gemm": gemm, "peak": max(r for _, r, _ in gemm),
            "attention_rate": med([p["attention_rate"] for p in passes]),
            "bandwidth": med([p["bandwidth"] for p in passes]),
            "broadcast_efficiency": med([p.get("broadcast_efficiency", 1.0) for p in passes]),
            "op_overhead": med([p["op_overhead"] for p in passes]),
            "chain_kernel": med([p["chain_kernel"] for p in passes]),
            "step_overhead": med([p.get("step_overhead", 0.0) for p in passes]),
            "per_kernel": first["per_kernel"], "threads": first["threads"], "passes": len(passes)}


def build_profile(meas: dict, name: str = "cpu_local") -> dict:
    peak = meas["peak"]
    # efficiency by FLOPs per call: shapes within a factor 4 of FLOPs are pooled (median), so one noisy
    # shape does not bend the curve
    bins: dict = {}
    for g in meas["gemm"]:
        f, r = g[0], g[1]
        bins.setdefault(int(np.floor(np.log(f) / np.log(4.0))), []).append((f, min(1.0, r / peak)))
    curve = [[float(np.exp(np.mean(np.log([f for f, _ in v])))), max(float(np.median([e for _, e in v])), 1e-3)]
             for _, v in sorted(bins.items())]
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
        "broadcast_efficiency": meas.get("broadcast_efficiency", 1.0),
        "op_overhead": meas["op_overhead"],
        "step_overhead": meas.get("step_overhead", 0.0),
    }


def calibrate(path: str, quick: bool = False, name: str = "cpu_local", passes: int = 1,
              model_probe: bool = True, step_factory=None) -> dict:
    meas = combine([measure(quick, model_probe, step_factory) for _ in range(max(1, passes))])
    prof = build_profile(meas, name)
    profile_from_dict(prof, name)           # validate
    from .hardware import save_hardware
    save_hardware(profile_from_dict(prof, name), path,
                  header=f"Hardware profile measured on this machine by `tools/simulate.py calibrate` "
                         f"({time.strftime('%Y-%m-%d')}).\npeak_flops = best measured MindSpore fp32 GEMM rate "
                         f"(MFU on CPU is quoted against it);\ngemm_efficiency = measured rate / peak by FLOPs per "
                         f"call; hbm_bandwidth = measured element-wise add traffic.")
    return {"profile": prof, "measurements": meas}
