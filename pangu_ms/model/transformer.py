"""Decoder layer with Depth-Scaled Sandwich-Norm, the decoder stack, and the causal-LM model (no loss inside).

Decoder layer (``sandwich_norm: true``, Pangu Ultra / Pangu Ultra MoE):
    h = x + PostAttnNorm(Attention(InputNorm(x)))        PostAttnNorm gamma starts at c_attn / sqrt(L)
    y = h + PostMLPNorm(FFN(PreMLPNorm(h)))               PostMLPNorm gamma starts at c_mlp / sqrt(L)
With ``sandwich_norm: false`` the two post-norms disappear (plain pre-norm, DeepSeek-V3).
FFN is a dense SwiGLU for the first ``num_dense_layers`` layers and a MoE layer after.

The model returns logits and the MoE side outputs; the loss (CE + weighted MTP + aux) is the loss Cell of
``loss.py``. The model is built from the (model, moe, seed) config sections only (``build.py`` maps a whole
recipe onto them). Tokens are kept flattened [B*S, d] between layers.
"""
from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from ..backend import get_backend
from ..config.schema import ModelConfig, MoEConfig
from ..kernels.ops import embedding_primitives
from ..layers.init import Initializer, dssn_gammas
from ..layers.linear import Linear
from ..layers.mlp import SwiGLUMLP
from ..moe.layer import MoELayer
from .attention import AttentionOptions, build_attention
from .mtp import MTPModule

_DTYPES = {"float32": ms.float32, "float64": ms.float64, "float16": ms.float16, "bfloat16": ms.bfloat16}


def model_dtype(model_cfg: ModelConfig):
    """Parameter/compute dtype of the reference path (one dtype; see Linear's docstring)."""
    return _DTYPES[model_cfg.compute_dtype]


class DecoderLayer(nn.Cell):
    def __init__(self, m: ModelConfig, moe_cfg: MoEConfig, moe_layer: bool, init: Initializer, backend, dtype,
                 hooks=None, attention: AttentionOptions | None = None):
        super().__init__()
        self.sandwich = m.sandwich_norm
        self.is_moe = moe_layer
        g_attn, g_mlp = dssn_gammas(m)
        self.input_norm = backend.rms_norm(m.hidden_size, m.norm_eps, dtype=dtype)
        self.attention = build_attention(m, init, backend, dtype, attention)
        if self.sandwich:
            self.post_attn_norm = backend.rms_norm(m.hidden_size, m.norm_eps, g_attn, dtype)
        self.pre_mlp_norm = backend.rms_norm(m.hidden_size, m.norm_eps, dtype=dtype)
        if moe_layer:
            self.moe = MoELayer(m.hidden_size, moe_cfg, init, backend, dtype, hooks)
        else:
            self.mlp = SwiGLUMLP(m.hidden_size, m.dense_ffn_hidden, init, backend, dtype)
        if self.sandwich:
            self.post_mlp_norm = backend.rms_norm(m.hidden_size, m.norm_eps, g_mlp, dtype)
        self.num_experts = max(moe_cfg.num_experts, 1)

    def construct(self, x, batch, mask, positions=None):
        a = self.attention(self.input_norm(x), batch, mask, positions)
        if self.sandwich:
            a = self.post_attn_norm(a)
        h = x + a
        z = self.pre_mlp_norm(h)
        if self.is_moe:
            f, aux, load, drop = self.moe(z, batch)
        else:
            f = self.mlp(z)
            aux = ops.zeros((), x.dtype)
            load = ops.zeros((self.num_experts,), x.dtype)
            drop = ops.zeros((), x.dtype)
        if self.sandwich:
            f = self.post_mlp_norm(f)
        return h + f, aux, load, drop


def causal_mask(s: int, dtype):
    """Additive [S, S] mask: 0 on and below the diagonal, -1e9 above (keys after the query)."""
    row = ops.arange(s).reshape(s, 1)
    col = ops.arange(s).reshape(1, s)
    return (col > row).astype(dtype) * -1e9


def document_mask(segment_ids, dtype):
    """Additive [B, 1, S, S] mask of packed rows: 0 where the key is at or before the query *and* in the same
    document (equal ``segment_ids`` [B, S]), -1e9 elsewhere (the reset attention mask)."""
    b, s = segment_ids.shape
    same = ops.equal(segment_ids.reshape(b, s, 1), segment_ids.reshape(b, 1, s))
    row = ops.arange(s).reshape(1, s, 1)
    col = ops.arange(s).reshape(1, 1, s)
    allowed = ops.logical_and(same, col <= row)
    return ((1 - allowed.astype(dtype)) * -1e9).reshape(b, 1, s, s)


def attention_mask(s: int, dtype, segment_ids=None):
    """``causal_mask(s)``, or ``document_mask(segment_ids)`` when the row's document boundaries are given."""
    return causal_mask(s, dtype) if segment_ids is None else document_mask(segment_ids, dtype)


class Embedding(nn.Cell):
    """Token embedding [V, d] looked up with the ``Gather`` primitive (``mint`` embedding has no CPU kernel);
    ``gather`` is the primitive the Ascend plan shards (vocab-parallel weight, tokens over dp x cp)."""

    def __init__(self, vocab: int, hidden: int, init: Initializer, dtype, fused_cpu_kernel: bool = False):
        """``fused_cpu_kernel`` (the ``cpu_fused`` backend): the lookup and its gradient as C++ kernels
        (``kernels/cpu/embedding.cc``); MindSpore's CPU gradient of ``Gather`` is a slow UnsortedSegmentSum."""
        super().__init__()
        self.weight = Parameter(Tensor(init.embedding((vocab, hidden)), dtype), name="weight")
        self.gather = ops.Gather()
        self.fused_cpu_kernel = fused_cpu_kernel
        if fused_cpu_kernel:
            self.fused_lookup, self.fused_lookup_backward = embedding_primitives()

    def construct(self, ids):
        if self.fused_cpu_kernel:
            return self.fused_lookup(self.weight, ids.reshape(-1).astype(ms.int32))
        return self.gather(self.weight, ids.reshape(-1), 0)


class PanguForCausalLM(nn.Cell):
    """The whole model. ``construct(input_ids [B,S], next_tokens [B,S] or None, segment_ids [B,S] or None,
    position_ids [B,S] or None)`` returns (logits [B*S, V], mtp_logits, aux_loss, expert_load
    [n_moe_layers, E], drop_rate) and no loss.

    ``segment_ids`` (the packed row's document ids, ``pangu_ms.data.packing``): attention stays inside each
    document (``document_mask``; ``train.reset_attention_mask``); ``position_ids``: RoPE positions
    (``train.reset_position_ids``: restarting at 0 in every document); default causal over the row and 0..S-1.

    ``next_tokens`` (the labels) feed the MTP modules: depth j+1 combines h_i with the embedding of token
    i+j+1 and predicts token i+j+2; ``mtp_logits`` holds one [B*(S-1-j), V] tensor per depth (empty without
    ``next_tokens`` or MTP). ``aux_loss`` sums the MoE layers' aux losses, MTP layers included;
    ``expert_load`` counts the tokens routed to each expert in each MoE layer of the main stack (MTP excluded);
    ``drop_rate`` is the mean over MoE layers (zero when dropless).
    """

    def __init__(self, model_cfg: ModelConfig, moe_cfg: MoEConfig, seed: int, backend: str | None = None, hooks=None,
                 attention: AttentionOptions | None = None):
        """``hooks``: optional expert-parallel hooks handed to every MoE layer (see ``MoELayer``); the model
        itself never sees ranks or process groups. ``attention``: RoPE scaling / attention chunking.
        ``backend``: ``cpu`` / ``ascend``, default ``model_cfg.backend``."""
        super().__init__()
        self.model_cfg = m = model_cfg
        dtype = model_dtype(m)
        be = get_backend(backend or m.backend)
        init = Initializer(m, seed)
        self.embedding = Embedding(m.vocab_size, m.hidden_size, init, dtype, be.fused_cpu_kernels)
        moe_flags = [moe_cfg.enabled and i >= m.num_dense_layers for i in range(m.num_layers)]
        self.layers = nn.CellList([DecoderLayer(m, moe_cfg, f, init, be, dtype, hooks, attention)
                                   for f in moe_flags])
        self.moe_layer_ids = [i for i, f in enumerate(moe_flags) if f]
        self.final_norm = be.rms_norm(m.hidden_size, m.norm_eps, dtype=dtype)
        self.tied = m.tie_embeddings
        if not self.tied:
            self.lm_head = Linear(m.hidden_size, m.vocab_size, init, dtype)

        def mtp_layer():
            return DecoderLayer(m, moe_cfg, moe_cfg.enabled, init, be, dtype, hooks, attention)
        self.mtp = nn.CellList([MTPModule(m, init, be, dtype, mtp_layer) for _ in range(m.mtp_depth)])
        self.n_moe = len(self.moe_layer_ids)
        self.num_experts = max(moe_cfg.num_experts, 1)
        self.dtype = dtype
        self.head_mm = ops.MatMul(transpose_b=True)

    def logits(self, hidden):
        if self.tied:
            return self.head_mm(hidden, self.embedding.weight)
        return self.lm_head(hidden)

    def hidden_states(self, input_ids, segment_ids=None, position_ids=None):
        """Final-norm hidden states [B*S, d] plus (aux loss sum, per-layer expert loads, drop-rate sum)."""
        b, s = input_ids.shape
        x = self.embedding(input_ids)
        mask = attention_mask(s, self.dtype, segment_ids)
        aux = ops.zeros((), self.dtype)
        drop = ops.zeros((), self.dtype)
        loads = ()
        for i, layer in enumerate(self.layers):
            x, a, load, d = layer(x, b, mask, position_ids)
            aux = aux + a
            drop = drop + d
            if i in self.moe_layer_ids:
                loads = loads + (load,)
        return self.final_norm(x), aux, loads, drop

    def construct(self, input_ids, next_tokens=None, segment_ids=None, position_ids=None):
        b, s = input_ids.shape
        hidden, aux, loads, drop = self.hidden_states(input_ids, segment_ids, position_ids)
        mtp_logits = ()
        if next_tokens is not None:
            prev = hidden
            for j, module in enumerate(self.mtp):
                n = s - 1 - j
                prev = prev.reshape(b, -1, prev.shape[-1])[:, :n].reshape(b * n, -1)
                mask = attention_mask(n, self.dtype, None if segment_ids is None else segment_ids[:, :n])
                positions = None if position_ids is None else position_ids[:, :n]
                prev, a = module(prev, self.embedding(next_tokens[:, j: j + n]), b, mask, positions)
                mtp_logits = mtp_logits + (self.logits(module.final_norm(prev)),)
                aux = aux + a
        if self.n_moe > 0:
            load = ops.stack(loads, 0)
            drop = drop / self.n_moe
        else:
            load = ops.zeros((1, self.num_experts), self.dtype)
        return self.logits(hidden), mtp_logits, aux, load, drop
