"""Attention blocks: Multi-head Latent Attention (MLA, the Pangu Ultra MoE / DeepSeek-V3 form) and GQA/MHA.

MLA (per token x, hidden d):
    c_q  = RMSNorm(x W_qa)                  (q_lora_rank; skipped when q_lora_rank == 0: q = x W_q)
    q    = c_q W_qb -> per head [q_nope (Dn) | q_rope (Dr)]
    [c_kv | k_rope] = x W_kva               (kv_lora_rank + Dr; k_rope is shared by every head)
    [k_nope | v] = RMSNorm(c_kv) W_kvb -> per head (Dn, Dv)
    q_rope, k_rope <- RoPE(positions)       (decoupled RoPE: only the Dr part carries position)
    o = softmax((q_nope k_nope^T + q_rope k_rope^T) / sqrt(Dn + Dr) + mask) v;  out = o W_o
The additive mask is causal [S, S], or [B, 1, S, S] causal within each packed document (``document_mask``);
``positions`` [B, S] (optional) are the RoPE positions (per-document positions of packed rows).
The compressed [c_kv | k_rope] is what a KV cache stores (kv_lora_rank + Dr per token).

Inputs are flattened tokens x [B*S, d] plus the batch size, the mask and optional positions; outputs have the
same shape as x.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import mindspore as ms
from mindspore import nn, ops

from ..config.schema import ModelConfig
from ..layers.linear import Linear
from .rope import RotaryEmbedding


class SplitHeads(nn.Cell):
    """[B*S, N*(first+second)] -> per head [B, N, S, first], [B, N, S, second] (no parameters: a Cell of its own
    so that recompute can cover it)."""

    def __init__(self, heads: int, first: int, second: int):
        super().__init__()
        self.heads, self.first, self.second = heads, first, second

    def construct(self, y, batch):
        s = y.shape[0] // batch
        y = y.reshape(batch, s, self.heads, self.first + self.second).transpose(0, 2, 1, 3)
        return y[..., : self.first], y[..., self.first:]


class SplitLatent(nn.Cell):
    """[c_kv | k_rope] [B*S, kv_lora + Dr] -> c_kv [B*S, kv_lora], k_rope [B, S, Dr] (no parameters)."""

    def __init__(self, kv_lora_rank: int, rope_dim: int):
        super().__init__()
        self.kv_lora_rank, self.rope_dim = kv_lora_rank, rope_dim

    def construct(self, kv_a, batch):
        s = kv_a.shape[0] // batch
        return kv_a[:, : self.kv_lora_rank], kv_a[:, self.kv_lora_rank:].reshape(batch, s, self.rope_dim)


class MLA(nn.Cell):
    """The up-projection path (q_a_norm, q_b_proj, q_heads, kv_latent, kv_a_norm, kv_b_proj, kv_heads, rope)
    holds everything between the stored latents and the attention core (``mla_up_proj`` recompute)."""

    def __init__(self, cfg: ModelConfig, init, backend, dtype=ms.float32, options=None):
        super().__init__()
        h, n = cfg.hidden_size, cfg.num_heads
        self.num_heads = n
        self.qk_nope_head_dim, self.qk_rope_head_dim = cfg.qk_nope_head_dim, cfg.qk_rope_head_dim
        self.v_head_dim = cfg.v_head_dim
        self.kv_lora_rank = cfg.kv_lora_rank
        self.q_lora = cfg.q_lora_rank > 0
        dq = self.qk_nope_head_dim + self.qk_rope_head_dim
        if self.q_lora:
            self.q_a_proj = Linear(h, cfg.q_lora_rank, init, dtype)
            self.q_a_norm = backend.rms_norm(cfg.q_lora_rank, cfg.latent_eps, dtype=dtype)
            self.q_b_proj = Linear(cfg.q_lora_rank, n * dq, init, dtype)
        else:
            self.q_proj = Linear(h, n * dq, init, dtype)
        self.kv_a_proj = Linear(h, self.kv_lora_rank + self.qk_rope_head_dim, init, dtype)
        self.kv_a_norm = backend.rms_norm(self.kv_lora_rank, cfg.latent_eps, dtype=dtype)
        self.kv_b_proj = Linear(self.kv_lora_rank, n * (self.qk_nope_head_dim + self.v_head_dim), init, dtype)
        self.o_proj = Linear(n * self.v_head_dim, h, init, dtype)
        self.rope = RotaryEmbedding(self.qk_rope_head_dim, cfg.max_position_embeddings, cfg.rope_theta,
                                    cfg.rope_interleaved, dtype, **_rope_scaling(options),
                                    fused_cpu_kernel=backend.fused_cpu_kernels)
        self.q_heads = SplitHeads(n, self.qk_nope_head_dim, self.qk_rope_head_dim)
        self.kv_latent = SplitLatent(self.kv_lora_rank, self.qk_rope_head_dim)
        self.kv_heads = SplitHeads(n, self.qk_nope_head_dim, self.v_head_dim)
        self.core = backend.attention(1.0 / math.sqrt(dq), heads=n, dtype=dtype, **_chunk(options))

    def project_q(self, x):
        if self.q_lora:
            return self.q_b_proj(self.q_a_norm(self.q_a_proj(x)))
        return self.q_proj(x)

    def up_proj_cells(self) -> list:
        """The Cells of the up-projection path (after the latents ``q_a_proj`` / ``kv_a_proj``)."""
        q = [self.q_a_norm, self.q_b_proj] if self.q_lora else []
        return q + [self.q_heads, self.kv_latent, self.kv_a_norm, self.kv_b_proj, self.kv_heads, self.rope]

    def construct(self, x, batch, mask, positions=None):
        t = x.shape[0]
        q_nope, q_rope = self.q_heads(self.project_q(x), batch)
        q_rope = self.rope(q_rope, positions=positions)
        c_kv, k_rope = self.kv_latent(self.kv_a_proj(x), batch)
        k_rope = self.rope(k_rope, positions=positions)
        k_nope, v = self.kv_heads(self.kv_b_proj(self.kv_a_norm(c_kv)), batch)
        o = self.core(q_nope, q_rope, k_nope, k_rope, v, mask)          # [B, N, S, Dv]
        o = o.transpose(0, 2, 1, 3).reshape(t, self.num_heads * self.v_head_dim)
        return self.o_proj(o)


class GQA(nn.Cell):
    """Grouped-query attention (``mha`` when num_kv_heads == num_heads); RoPE over the whole head dim."""

    def __init__(self, cfg: ModelConfig, init, backend, dtype=ms.float32, options=None):
        super().__init__()
        h, n = cfg.hidden_size, cfg.num_heads
        self.num_heads = n
        self.num_kv_heads = n if cfg.attention_type == "mha" else cfg.num_kv_heads
        self.head_dim = cfg.attn_head_dim
        self.q_proj = Linear(h, n * self.head_dim, init, dtype)
        self.k_proj = Linear(h, self.num_kv_heads * self.head_dim, init, dtype)
        self.v_proj = Linear(h, self.num_kv_heads * self.head_dim, init, dtype)
        self.o_proj = Linear(n * self.head_dim, h, init, dtype)
        self.rope = RotaryEmbedding(self.head_dim, cfg.max_position_embeddings, cfg.rope_theta, cfg.rope_interleaved,
                                    dtype, **_rope_scaling(options), fused_cpu_kernel=backend.fused_cpu_kernels)
        self.core = backend.attention(1.0 / math.sqrt(self.head_dim), heads=n, dtype=dtype, **_chunk(options))
        self.kv_repeats = n // self.num_kv_heads

    def _heads(self, y, heads, batch, s):
        return y.reshape(batch, s, heads, self.head_dim).transpose(0, 2, 1, 3)

    def construct(self, x, batch, mask, positions=None):
        t = x.shape[0]
        s = t // batch
        q = self.rope(self._heads(self.q_proj(x), self.num_heads, batch, s), positions=positions)
        k = self.rope(self._heads(self.k_proj(x), self.num_kv_heads, batch, s), positions=positions)
        v = self._heads(self.v_proj(x), self.num_kv_heads, batch, s)
        if self.kv_repeats > 1:
            k = ops.repeat_elements(k, self.kv_repeats, 1)
            v = ops.repeat_elements(v, self.kv_repeats, 1)
        o = self.core(q, None, k, None, v, mask)
        return self.o_proj(o.transpose(0, 2, 1, 3).reshape(t, self.num_heads * self.head_dim))


@dataclass(frozen=True)
class AttentionOptions:
    """What attention needs beyond the model section (set by the long-context stage; defaults = plain RoPE,
    full attention): RoPE scaling (``none`` / ``ntk`` / ``yarn``, factor, original length) and the query-chunk
    size of the memory-aware attention (0 = full)."""
    rope_scaling: str = "none"
    rope_scaling_factor: float = 1.0
    rope_original_max_position: int = 0
    chunk: int = 0


def _rope_scaling(options) -> dict:
    """RoPE scaling kwargs of ``options`` (none when absent or ``none``)."""
    if options is None or options.rope_scaling == "none":
        return {}
    return {"scaling": options.rope_scaling, "factor": options.rope_scaling_factor,
            "original_max_len": options.rope_original_max_position}


def _chunk(options) -> dict:
    """Query-chunk size of the memory-aware attention (0 = full)."""
    return {"chunk": options.chunk} if options is not None and options.chunk > 0 else {}


def build_attention(cfg: ModelConfig, init, backend, dtype=ms.float32, options: AttentionOptions | None = None
                    ) -> nn.Cell:
    cls = MLA if cfg.attention_type == "mla" else GQA
    return cls(cfg, init, backend, dtype, options)
