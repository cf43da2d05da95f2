"""Incremental decoding with MLA's compressed KV cache, reusing the weights of a ``PanguForCausalLM``.

Per MLA layer the cache holds, for every position already seen, the compressed latent of the token
``[RMSNorm(c_kv) | RoPE(k_rope)]`` (``kv_lora_rank + qk_rope_head_dim`` floats per token, shared by every head),
not per-head keys and values. A decode step uses the *absorbed* form of MLA (DeepSeek-V2 inference):

    W_kvb = [W_uk (Dn) | W_uv (Dv)] per head, shape [N, Dn + Dv, kv_lora_rank]
    q_lat  = q_nope W_uk                      [B, N, kv_lora_rank]   (query moved into latent space)
    score  = (q_lat c_kv^T + q_rope k_rope^T) / sqrt(Dn + Dr)  over cached positions <= pos
    o      = (softmax(score) c_kv) W_uv^T  -> o_proj

which is algebraically the full-forward MLA (``q_nope . (W_uk c) = (q_nope W_uk) . c``, ``p . (W_uv c) =
W_uv (p . c)``); ``tests/post_training/test_kv_cache.py`` checks that the logits agree with a full forward pass.

Shapes are static so that one ``ms.jit`` graph serves every step: the cache of each layer is a tensor
[B, max_len, kv_lora_rank + Dr], the step's position ``pos`` is an int32 tensor of shape [1] shared by the batch
(prompts of different lengths are fed token by token in lock-step, see ``pangu_ms.rl.rollout``); the new entry is
written with a one-hot select and keys after ``pos`` are masked. The cache is functional (returned, not
mutated). Only MLA attention is supported (the GQA/MHA path has no cache yet); MTP modules are not used when
decoding. MoE layers route the B tokens of the step as usual (dropless).
"""
from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from .attention import MLA


class IncrementalDecoder(nn.Cell):
    """Walks ``net.layers`` of a ``PanguForCausalLM`` for one new token per sequence.

    ``construct(tokens [B] int32, pos [1] int32, caches tuple of [B, L, kv_rank + rope_dim])``
    -> ``(logits [B, V], caches)``.
    ``init_caches(batch)`` gives zero caches. Weights are shared with ``net`` (no copy, and no sub-Cell wraps
    them, so the parameter names of ``net`` stay unchanged): the decoder always samples from the current policy.
    """

    def __init__(self, net, max_len: int):
        super().__init__(auto_prefix=False)
        for layer in net.layers:
            if not isinstance(layer.attention, MLA):
                raise NotImplementedError("KV-cache decoding supports MLA attention only")
        self.net = net
        self.max_len = max_len
        m = net.model_cfg
        self.num_heads, self.nope_dim, self.rope_dim = m.num_heads, m.qk_nope_head_dim, m.qk_rope_head_dim
        self.v_dim, self.kv_rank = m.v_head_dim, m.kv_lora_rank
        self.width = self.kv_rank + self.rope_dim
        self.dtype = net.dtype
        self.bmm = ops.BatchMatMul()
        self.bmm_t = ops.BatchMatMul(transpose_b=True)
        self.mm = ops.MatMul()

    def init_caches(self, batch: int):
        return tuple(Tensor(np.zeros((batch, self.max_len, self.width), np.float32), self.dtype)
                     for _ in range(len(self.net.layers)))

    def rope_at(self, rope, x, pos):
        """x [..., Dr] rotated to position ``pos`` ([1] int32) with the tables of ``rope``."""
        cos = ops.gather(rope.cos, pos, 0).reshape(-1)                         # [Dr]
        sin = ops.gather(rope.sin, pos, 0).reshape(-1)
        shape = x.shape
        xr = self.mm(x.reshape(-1, self.rope_dim), rope.rot).reshape(shape)
        return x * cos + xr * sin

    def mla_step(self, mla, x, cache, pos):
        """x [B, d] (input-normed), cache [B, L, kv_rank + Dr], pos [1] -> (attention output [B, d], new cache)."""
        b = x.shape[0]
        q = mla.project_q(x).reshape(b, self.num_heads, self.nope_dim + self.rope_dim)
        q_nope = q[:, :, : self.nope_dim]
        q_rope = self.rope_at(mla.rope, q[:, :, self.nope_dim:], pos)                # [B, N, Dr]
        kv_a = mla.kv_a_proj(x)
        c = mla.kv_a_norm(kv_a[:, : self.kv_rank])
        k_rope = self.rope_at(mla.rope, kv_a[:, self.kv_rank:], pos)               # [B, Dr]
        entry = ops.concat((c, k_rope), -1).reshape(b, 1, self.width)
        slots = ops.arange(self.max_len).astype(ms.int32)
        here = (slots == pos).astype(x.dtype).reshape(1, self.max_len, 1)
        cache = cache * (1.0 - here) + entry * here
        c_all = cache[:, :, : self.kv_rank]                                        # [B, L, kv_rank]
        r_all = cache[:, :, self.kv_rank:]                                         # [B, L, Dr]
        w = mla.kv_b_proj.weight.reshape(self.num_heads, self.nope_dim + self.v_dim, self.kv_rank)
        w_uk = w[:, : self.nope_dim, :]                                              # [N, Dn, kv_rank]
        w_uv = w[:, self.nope_dim:, :]                                               # [N, Dv, kv_rank]
        q_lat = self.bmm(q_nope.transpose(1, 0, 2), w_uk).transpose(1, 0, 2)  # [B, N, kv_rank]
        scores = self.bmm_t(q_lat, c_all) + self.bmm_t(q_rope, r_all)         # [B, N, L]
        future = (slots > pos).astype(x.dtype) * -1e9
        probs = ops.softmax(scores * mla.core.scale + future.reshape(1, 1, self.max_len), -1)
        o_lat = self.bmm(probs, c_all)                                         # [B, N, kv_rank]
        o = self.bmm_t(o_lat.transpose(1, 0, 2), w_uv).transpose(1, 0, 2)     # [B, N, Dv]
        return mla.o_proj(o.reshape(b, self.num_heads * self.v_dim)), cache

    def construct(self, tokens, pos, caches):
        net = self.net
        b = tokens.shape[0]
        x = net.embedding(tokens)                                              # [B, d]
        new = ()
        for i, layer in enumerate(net.layers):
            a, c = self.mla_step(layer.attention, layer.input_norm(x), caches[i], pos)
            new = new + (c,)
            if layer.sandwich:
                a = layer.post_attn_norm(a)
            h = x + a
            z = layer.pre_mlp_norm(h)
            if layer.is_moe:
                f = layer.moe(z, b)[0]
            else:
                f = layer.mlp(z)
            if layer.sandwich:
                f = layer.post_mlp_norm(f)
            x = h + f
        return net.logits(net.final_norm(x)), new


def mutable_caches(caches):
    """Wrap caches for a ``ms.jit``-compiled step: a plain tuple argument is a compile-time constant (each new
    cache would trigger a recompilation); ``ms.mutable`` makes it a graph input."""
    return ms.mutable(tuple(caches))


def cache_floats_per_token(cfg) -> int:
    """Floats cached per token and layer: kv_lora_rank + qk_rope_head_dim (vs 2 * N * head_dim for MHA)."""
    return cfg.model.kv_lora_rank + cfg.model.qk_rope_head_dim
