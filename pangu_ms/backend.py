"""The one seam between the math and the device: reference CPU ops vs Ascend fused ops.

Model Cells never call a fused op directly. They ask the backend for a small Cell (``rms_norm``, ``swiglu``,
``attention``). The CPU reference backend (default) is built only from ops that have CPU kernels in MindSpore
2.9 (see shared docs: classic ``ops.*``, explicit matmul + mask + softmax attention, RMSNorm as
``x * rsqrt(mean(x^2) + eps) * w``) and is the test oracle.

The ``cpu_fused`` backend (:class:`FusedCpuBackend`, the CPU recipes' choice) keeps that math and runs RMSNorm,
SwiGLU, the attention core's scaled masked softmax (and, through ``fused_cpu_kernels``, RoPE, the embedding and the
sorted-block permute / combine) as the project's own C++ kernels (``pangu_ms/kernels``), each tested against this
reference path.

The Ascend backend swaps in ``ops.rms_norm``, ``ops.swiglu`` and ``ops.flash_attention_score``. None of these has
a CPU kernel, so **the Ascend backend is untested in this repository**; it exists so that the same model
definition compiles with the fused kernels on Ascend, where its output must be compared against the CPU
reference (same weights, fp32) before use. Grouped-matmul expert compute and MoeTokenPermute live behind the
same seam in :mod:`pangu_ms.moe.experts` / :mod:`pangu_ms.moe.dispatcher` (``backend.name == "ascend"``).
"""
from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.ops.operations.nn_ops import FlashAttentionScore, RmsNorm

from .config import ConfigError
from .kernels.build import KernelBuildError, compiler
from .kernels.ops import masked_softmax_primitives, rms_norm_primitives, swiglu_primitives
from .layers.blockwise_attention import BlockwiseAttention
from .layers.explicit_broadcast import Softmax, expand_as


class RMSNormKernel(nn.Cell):
    """(x, weight) -> x * rsqrt(mean(x^2, -1) + eps) * weight.

    The [..., 1] inverse RMS is expanded to x's shape with ``BroadcastTo`` before the multiply (implicitly
    broadcasting elementwise kernels hold four output-sized buffers per call on CPU:
    ``layers/explicit_broadcast.py``), and so is the [d] weight: with the weight broadcast implicitly a norm
    held about 11 [T, d] buffers until the step ended (5.75 MB per layer at T=1024, d=128 vs 2 MB expanded).
    """

    def __init__(self, eps: float):
        super().__init__()
        self.eps = eps
        self.square = ops.Mul()
        self.mean = ops.ReduceMean(keep_dims=True)
        self.rsqrt = ops.Rsqrt()
        self.normalize = ops.Mul()
        self.scale = ops.Mul()

    def construct(self, x, weight):
        n = self.normalize(x, expand_as(self.rsqrt(self.mean(self.square(x, x), -1) + self.eps), x))
        return self.scale(n, expand_as(weight, n))

    def shard_plan(self, x: tuple) -> dict:
        """{primitive attr: strategy} for an x strategy (the weight is expanded to x's shape first)."""
        row = x[:-1] + (1,)
        return {"square": (x, x), "mean": (x,), "rsqrt": (row,), "normalize": (x, x), "scale": (x, x)}


class FusedCpuRMSNormKernel(nn.Cell):
    """The same (x, weight) -> norm as :class:`RMSNormKernel`, as one C++ kernel forward and one backward
    (``pangu_ms/kernels/cpu/rms_norm.cc``): 2 kernel launches per norm and step instead of ~19, and the backward
    keeps only x and a [..., 1] inverse RMS (the reference keeps 3 more tensors of x's size)."""

    def __init__(self, eps: float, dtype=ms.float32):
        super().__init__()
        self.eps = eps
        self.eps_tensor = Tensor(np.array([eps]), dtype)
        self.fused_norm, self.fused_norm_backward = rms_norm_primitives()

    def construct(self, x, weight):
        return self.fused_norm(x, weight, self.eps_tensor)[0]

    def shard_plan(self, x: tuple) -> dict:
        return {"fused_norm": (x, (x[-1],), (1,))}


class RMSNorm(nn.Cell):
    """y = x * rsqrt(mean(x^2, -1) + eps) * weight (reference path, in the input dtype: fp32/fp64 on CPU;
    computed by :class:`RMSNormKernel`).

    The Ascend plan shards the logical op ``norm`` ([T, d] input, [d] weight); :meth:`shard` maps that strategy
    onto the named primitives of this path.
    """

    plan_attrs = ("norm",)

    def __init__(self, dim: int, eps: float = 1e-5, init_value: float = 1.0, dtype=ms.float32,
                 fused_cpu_kernel: bool = False):
        super().__init__()
        self.eps = eps
        self.weight = Parameter(Tensor(np.full((dim,), init_value, dtype=np.float32), dtype), name="weight")
        self.out_dtype = dtype
        self.kernel = FusedCpuRMSNormKernel(eps, dtype) if fused_cpu_kernel else RMSNormKernel(eps)

    def construct(self, x):
        return self.kernel(x, self.weight)

    def shard(self, attr: str, in_strategy: tuple) -> dict:
        """Shard the logical ``norm`` op (strategies of x [T, d] and weight [d]); returns {primitive attr: strategy}."""
        x, _ = in_strategy
        plan = self.kernel.shard_plan(x)
        for name, strategy in plan.items():
            getattr(self.kernel, name).shard(strategy)
        return {f"kernel.{name}": strategy for name, strategy in plan.items()}


class FusedRMSNorm(RMSNorm):
    """Ascend ``RmsNorm`` kernel (untested here: no CPU kernel)."""

    def __init__(self, dim: int, eps: float = 1e-5, init_value: float = 1.0, dtype=ms.float32):
        super().__init__(dim, eps, init_value, dtype)
        self.norm = RmsNorm(eps)

    def construct(self, x):
        return self.norm(x, self.weight)[0]

    def shard(self, attr: str, in_strategy: tuple) -> dict:
        self.norm.shard(in_strategy)
        return {"norm": in_strategy}


class SwiGLU(nn.Cell):
    """[..., 2F] (gate | up) -> silu(gate) * up, shape [..., F]."""

    def __init__(self, ffn: int):
        super().__init__()
        self.ffn = ffn

    def construct(self, h):
        g = h[..., : self.ffn]
        u = h[..., self.ffn:]
        return ops.silu(g) * u


class FusedCpuSwiGLU(SwiGLU):
    """:class:`SwiGLU` as one C++ kernel forward and one backward (``pangu_ms/kernels/cpu/swiglu.cc``); the
    backward keeps only h."""

    def __init__(self, ffn: int):
        super().__init__(ffn)
        self.fused_swiglu, self.fused_swiglu_backward = swiglu_primitives()

    def construct(self, h):
        return self.fused_swiglu(h)


class FusedSwiGLU(SwiGLU):
    """Ascend ``Swiglu`` kernel (untested here). Same gate | up layout as the reference."""

    def construct(self, h):
        return ops.swiglu(h, -1)


class CausalAttention(nn.Cell):
    """Decoupled-RoPE causal attention, concat-free.

    Inputs: q_nope [B,N,S,Dn], q_rope [B,N,S,Dr], k_nope [B,N,S,Dn], k_rope [B,S,Dr] (shared by all heads, as in
    MLA), v [B,N,S,Dv], mask additive [S,S] (causal) or [B,1,S,S] (causal within packed documents). ``q_rope``/``k_rope`` may be ``None`` (GQA/MHA pass the whole head
    dim as "nope"). Returns [B,N,S,Dv].

    scores = q_nope k_nope^T + q_rope k_rope^T (the rope product is one [B, N*S, Dr] x [B, S, Dr]^T matmul, so
    k_rope is never broadcast over heads).
    """

    plan_attrs = ("attention",)

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale
        self.score_matmul = ops.BatchMatMul(transpose_b=True)        # q_nope k_nope^T   [B, N, S, S]
        self.rope_score_matmul = ops.BatchMatMul(transpose_b=True)   # q_rope k_rope^T   [B, N*S, S]
        self.value_matmul = ops.BatchMatMul()                        # probs v           [B, N, S, Dv]
        self.softmax = Softmax()                                     # explicit broadcasts (CPU memory)

    def raw_scores(self, q_nope, q_rope, k_nope, k_rope):
        """q_nope k_nope^T (+ q_rope k_rope^T), unscaled and unmasked: [B, N, S, Sk]."""
        b, n, s, _ = q_nope.shape
        sk = k_nope.shape[2]
        scores = self.score_matmul(q_nope, k_nope)
        if q_rope is not None:
            dr = q_rope.shape[-1]
            rope = self.rope_score_matmul(q_rope.reshape(b, n * s, dr), k_rope).reshape(b, n, s, sk)
            scores = scores + rope
        return scores

    def construct(self, q_nope, q_rope, k_nope, k_rope, v, mask):
        scores = self.raw_scores(q_nope, q_rope, k_nope, k_rope) * self.scale
        probs = self.softmax(scores + expand_as(mask, scores))
        return self.value_matmul(probs, v)

    def shard(self, attr: str, in_strategy: tuple) -> dict:
        """Shard the logical ``attention`` op, given BNSD strategies of (q, k, v) (batch over dp, heads over tp,
        the query sequence over cp; keys and values are gathered over cp); returns {primitive attr: strategy}."""
        (b, n, s, _), _, _ = in_strategy
        plan = {"score_matmul": ((b, n, s, 1), (b, n, 1, 1)),
                "rope_score_matmul": ((b, n * s, 1), (b, 1, 1)),
                "value_matmul": ((b, n, s, 1), (b, n, 1, 1))}
        for name, strategy in plan.items():
            getattr(self, name).shard(strategy)
        return plan


class FusedCpuCausalAttention(CausalAttention):
    """:class:`CausalAttention` with its scale, mask add and softmax as one C++ kernel forward and one backward
    (``pangu_ms/kernels/cpu/masked_softmax.cc``); the matmuls stay MindSpore's. Same values and gradients.
    The backward keeps only the probabilities. ``use_fused_softmax = False`` (set by ``model/recompute.py`` for a
    recomputed core, like the reference core's softmax swap) takes the reference path."""

    def __init__(self, scale: float, dtype=ms.float32):
        super().__init__(scale)
        self.scale_tensor = Tensor(np.array([scale]), dtype)
        self.fused_softmax, self.fused_softmax_backward = masked_softmax_primitives()
        self.use_fused_softmax = True

    def construct(self, q_nope, q_rope, k_nope, k_rope, v, mask):
        if not self.use_fused_softmax:
            return super().construct(q_nope, q_rope, k_nope, k_rope, v, mask)
        scores = self.raw_scores(q_nope, q_rope, k_nope, k_rope)
        return self.value_matmul(self.fused_softmax(scores, mask, self.scale_tensor), v)


class ChunkedCausalAttention(CausalAttention):
    """Memory-aware (query-chunked) causal attention, same inputs/outputs as :class:`CausalAttention`.

    Queries are processed ``chunk`` at a time; chunk [i0, i1) is scored only against keys [0, i1) (the keys it
    can see under a causal mask), so the score/probability tensor of one chunk is [B, N, chunk, i1] instead of
    the full [B, N, S, S]. The result equals full attention exactly as long as ``mask`` is causal (every key
    after a chunk's last query is masked; its -1e9 weight is exactly 0 after softmax in fp32). Forward-only use
    (evaluation, generation) frees each chunk's scores before the next. Training: with RoPE (MLA) the chunks
    go through :class:`~pangu_ms.layers.blockwise_attention.BlockwiseAttention`, whose backward rebuilds each
    chunk's probabilities instead of keeping them (same forward bits; ``blockwise_backward``, switched off by
    ``model/recompute.py`` for a recomputed core); otherwise (GQA / MHA, or a recomputed core) autodiff keeps
    the visible probabilities, about S^2/2 instead of S^2 per head. The chunk loop is unrolled at trace time
    (static shapes), one matmul pair per chunk. ``S <= chunk`` falls back to full attention.
    """

    def __init__(self, scale: float, chunk: int):
        super().__init__(scale)
        self.chunk = int(chunk)
        self.blockwise = BlockwiseAttention(scale, self.chunk)
        self.blockwise_backward = True

    def construct(self, q_nope, q_rope, k_nope, k_rope, v, mask):
        s = q_nope.shape[2]
        if self.chunk <= 0 or s <= self.chunk:
            return super().construct(q_nope, q_rope, k_nope, k_rope, v, mask)
        if self.blockwise_backward and q_rope is not None:
            return self.blockwise(q_nope, q_rope, k_nope, k_rope, v, mask)
        outs = ()
        for i0 in range(0, s, self.chunk):
            i1 = min(i0 + self.chunk, s)
            probs = self.softmax(self.blockwise.masked_scores(q_nope, q_rope, k_nope, k_rope, mask, i0, i1))
            outs = outs + (self.value_matmul(probs, v[:, :, :i1]),)
        return ops.concat(outs, 2)


class FusedCausalAttention(CausalAttention):
    """Ascend ``FlashAttentionScore`` (BNSD layout). Untested here: no CPU kernel.

    A causal [S, S] mask uses the compressed causal sparse mode (``flash_attention``, sparse_mode 2, the fixed
    [2048, 2048] mask); a per-document [B, 1, S, S] mask (reset attention mask) is passed whole as a uint8
    "1 = masked" mask (``flash_attention_document``, sparse_mode 0). Choice: the full mask keeps the BNSD layout
    and the plan's strategies; the TND layout with ``actual_seq_qlen`` would skip the masked blocks' compute.
    """

    def __init__(self, scale: float, heads: int):
        super().__init__(scale)
        self.flash_attention = FlashAttentionScore(head_num=heads, scale_value=scale, input_layout="BNSD",
                                                   sparse_mode=2)
        self.flash_attention_document = FlashAttentionScore(head_num=heads, scale_value=scale,
                                                            input_layout="BNSD", sparse_mode=0)

    def construct(self, q_nope, q_rope, k_nope, k_rope, v, mask):
        b, n, s, _ = q_nope.shape
        if q_rope is not None:
            k_rope_b = ops.broadcast_to(k_rope.reshape(b, 1, s, -1), (b, n, s, k_rope.shape[-1]))
            q = ops.concat((q_nope, q_rope), -1)
            k = ops.concat((k_nope, k_rope_b), -1)
        else:
            q, k = q_nope, k_nope
        if len(mask.shape) == 4:
            return self.flash_attention_document(q, k, v, None, None, None, (mask < -1.0).astype(ms.uint8))[3]
        causal = ops.triu(ops.ones((2048, 2048), ms.uint8), 1)
        return self.flash_attention(q, k, v, None, None, None, causal)[3]

    def shard(self, attr: str, in_strategy: tuple) -> dict:
        """(q, k, v) BNSD strategies plus the replicated [2048, 2048] causal mask, or the document mask
        [B, 1, S, S] split like the queries (batch over dp, query rows over cp)."""
        strategy = tuple(in_strategy) + ((1, 1),)
        (b, _, s, _), _, _ = in_strategy
        document = tuple(in_strategy) + ((b, 1, s, 1),)
        self.flash_attention.shard(strategy)
        self.flash_attention_document.shard(document)
        return {"flash_attention": strategy, "flash_attention_document": document}


class Backend:
    """Reference CPU ops (the default and the oracle)."""

    name = "cpu"
    # cpu_fused: Cells built outside the backend (RotaryEmbedding, Embedding, SortedBlockDispatcher) take their
    # C++ kernels
    fused_cpu_kernels = False

    def rms_norm(self, dim: int, eps: float, init_value: float = 1.0, dtype=ms.float32) -> nn.Cell:
        return RMSNorm(dim, eps, init_value, dtype)

    def swiglu(self, ffn: int) -> nn.Cell:
        return SwiGLU(ffn)

    def attention(self, scale: float, chunk: int = 0, heads: int = 0, dtype=ms.float32) -> nn.Cell:
        """Full causal attention, or query-chunked (``ChunkedCausalAttention``) when ``chunk > 0``."""
        return ChunkedCausalAttention(scale, chunk) if chunk > 0 else CausalAttention(scale)


class FusedCpuBackend(Backend):
    """The reference ops with RMSNorm, SwiGLU, the attention core's scaled masked softmax and (through
    ``fused_cpu_kernels``) RoPE, the embedding lookup and the sorted-block permute / combine as one C++ kernel
    forward and one backward each (``pangu_ms/kernels``), built on first use with the system compiler. Same
    math; the tests hold each to numpy and to the reference path."""

    name = "cpu_fused"
    fused_cpu_kernels = True

    def rms_norm(self, dim, eps, init_value=1.0, dtype=ms.float32):
        return RMSNorm(dim, eps, init_value, dtype, fused_cpu_kernel=True)

    def swiglu(self, ffn):
        return FusedCpuSwiGLU(ffn)

    def attention(self, scale, chunk=0, heads=0, dtype=ms.float32):
        """The fused core for full attention; the query-chunked core (``chunk > 0``) is the reference one."""
        return ChunkedCausalAttention(scale, chunk) if chunk > 0 else FusedCpuCausalAttention(scale, dtype)


class AscendBackend(Backend):
    """Fused Ascend kernels behind the same interface. Ascend-only and untested in this repository."""

    name = "ascend"

    def rms_norm(self, dim, eps, init_value=1.0, dtype=ms.float32):
        return FusedRMSNorm(dim, eps, init_value, dtype)

    def swiglu(self, ffn):
        return FusedSwiGLU(ffn)

    def attention(self, scale, chunk=0, heads=0, dtype=ms.float32):
        # FlashAttentionScore is blockwise already: ``chunk`` (the CPU memory knob) does not apply here
        return FusedCausalAttention(scale, heads)


def get_backend(name: str = "cpu") -> Backend:
    """``cpu`` (reference), ``cpu_fused`` (the reference with fused C++ CPU kernels; needs a C++ compiler) or
    ``ascend`` (fused kernels; requires an Ascend device).

    Choosing ``ascend`` while MindSpore targets another device raises one error naming ``model.backend``
    before any Cell is built (the fused kernels have no CPU implementation).
    """
    if name == "cpu":
        return Backend()
    if name == "cpu_fused":
        try:
            compiler()
        except KernelBuildError as err:
            raise ConfigError(f"model.backend=cpu_fused: {err}") from None
        return FusedCpuBackend()
    if name == "ascend":
        target = ms.get_context("device_target")
        if target != "Ascend":
            raise ConfigError(f"model.backend=ascend needs an Ascend device, but MindSpore's device_target is "
                              f"{target!r} (its fused RmsNorm / Swiglu / FlashAttentionScore kernels have no "
                              f"{target} implementation); use model.backend=cpu here")
        return AscendBackend()
    raise ConfigError(f"model.backend: unknown backend {name!r} (expected 'cpu', 'cpu_fused' or 'ascend')")
