"""Decoder layer with Depth-Scaled Sandwich-Norm, the decoder stack, and the causal-LM model with its loss.

Decoder layer (``sandwich_norm: true``, Pangu Ultra / Pangu Ultra MoE):
    h = x + PostAttnNorm(Attention(InputNorm(x)))        PostAttnNorm gamma starts at c_attn / sqrt(L)
    y = h + PostMLPNorm(FFN(PreMLPNorm(h)))               PostMLPNorm gamma starts at c_mlp / sqrt(L)
With ``sandwich_norm: false`` the two post-norms disappear (plain pre-norm, DeepSeek-V3).
FFN is a dense SwiGLU for the first ``num_dense_layers`` layers and a MoE layer after.

Loss = CE(next token) + mtp_loss_weight * mean_j CE_mtp_j + sum of the MoE layers' aux losses (MTP layers
included). Tokens are kept flattened [B*S, d] between layers.
"""
from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from ..backend import get_backend
from ..config.schema import Config
from ..moe.layer import MoELayer
from .attention import build_attention
from .init import Initializer, dssn_gammas
from .linear import Linear
from .loss import CrossEntropy
from .mlp import SwiGLUMLP
from .mtp import MTPModule

_DTYPES = {"float32": ms.float32, "float64": ms.float64, "float16": ms.float16, "bfloat16": ms.bfloat16}


def model_dtype(cfg: Config):
    """Parameter/compute dtype of the reference path (one dtype; see Linear's docstring)."""
    return _DTYPES[cfg.model.compute_dtype]


class DecoderLayer(nn.Cell):
    def __init__(self, cfg: Config, moe_layer: bool, init: Initializer, backend, dtype, hooks=None):
        super().__init__()
        m = cfg.model
        self.sandwich = m.sandwich_norm
        self.is_moe = moe_layer
        g_attn, g_mlp = dssn_gammas(m)
        self.input_norm = backend.rms_norm(m.hidden_size, m.norm_eps, dtype=dtype)
        self.attention = build_attention(m, init, backend, dtype, cfg.long_context)
        if self.sandwich:
            self.post_attn_norm = backend.rms_norm(m.hidden_size, m.norm_eps, g_attn, dtype)
        self.pre_mlp_norm = backend.rms_norm(m.hidden_size, m.norm_eps, dtype=dtype)
        if moe_layer:
            self.moe = MoELayer(m.hidden_size, cfg.moe, init, backend, dtype, hooks)
        else:
            self.mlp = SwiGLUMLP(m.hidden_size, m.dense_ffn_hidden, init, backend, dtype)
        if self.sandwich:
            self.post_mlp_norm = backend.rms_norm(m.hidden_size, m.norm_eps, g_mlp, dtype)
        self.num_experts = max(cfg.moe.num_experts, 1)

    def construct(self, x, batch, mask):
        a = self.attention(self.input_norm(x), batch, mask)
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


class Embedding(nn.Cell):
    """Token embedding [V, d] looked up with the ``Gather`` primitive (``mint`` embedding has no CPU kernel);
    ``gather`` is the primitive the Ascend plan shards (vocab-parallel weight, tokens over dp x cp)."""

    def __init__(self, vocab: int, hidden: int, init: Initializer, dtype):
        super().__init__()
        self.weight = Parameter(Tensor(init.embedding((vocab, hidden)), dtype), name="weight")
        self.gather = ops.Gather()

    def construct(self, ids):
        return self.gather(self.weight, ids.reshape(-1), 0)


class PanguForCausalLM(nn.Cell):
    """The whole model. ``construct(input_ids [B,S], labels [B,S], loss_mask [B,S] or None)`` returns
    (loss, lm_loss, mtp_loss, aux_loss, expert_load [n_moe_layers, E], drop_rate).

    ``expert_load`` counts the tokens routed to each expert in each MoE layer of the main stack (MTP excluded);
    ``drop_rate`` is the mean over MoE layers (zero when dropless).
    """

    def __init__(self, cfg: Config, seed: int | None = None, backend: str | None = None, hooks=None):
        """``hooks``: optional expert-parallel hooks handed to every MoE layer (see ``MoELayer``); the model
        itself never sees ranks or process groups. ``backend`` defaults to ``model.backend``."""
        super().__init__()
        self.cfg = cfg
        m = cfg.model
        dtype = model_dtype(cfg)
        be = get_backend(backend or m.backend)
        init = Initializer(m, cfg.train.seed if seed is None else seed)
        self.embedding = Embedding(m.vocab_size, m.hidden_size, init, dtype)
        moe_flags = [cfg.moe.enabled and i >= m.num_dense_layers for i in range(m.num_layers)]
        self.layers = nn.CellList([DecoderLayer(cfg, f, init, be, dtype, hooks) for f in moe_flags])
        self.moe_layer_ids = [i for i, f in enumerate(moe_flags) if f]
        self.final_norm = be.rms_norm(m.hidden_size, m.norm_eps, dtype=dtype)
        self.tied = m.tie_embeddings
        if not self.tied:
            self.lm_head = Linear(m.hidden_size, m.vocab_size, init, dtype)
        self.mtp = nn.CellList([MTPModule(cfg, init, be, dtype, hooks, DecoderLayer) for _ in range(m.mtp_depth)])
        self.mtp_weight = m.mtp_loss_weight
        self.ce = CrossEntropy()
        self.n_moe = len(self.moe_layer_ids)
        self.num_experts = max(cfg.moe.num_experts, 1)
        self.dtype = dtype
        self.head_mm = ops.MatMul(transpose_b=True)

    def logits(self, hidden):
        if self.tied:
            return self.head_mm(hidden, self.embedding.weight)
        return self.lm_head(hidden)

    def hidden_states(self, input_ids):
        """Final-norm hidden states [B*S, d] plus (aux loss sum, per-layer expert loads, drop-rate sum)."""
        b, s = input_ids.shape
        x = self.embedding(input_ids)
        mask = causal_mask(s, self.dtype)
        aux = ops.zeros((), self.dtype)
        drop = ops.zeros((), self.dtype)
        loads = ()
        for i, layer in enumerate(self.layers):
            x, a, load, d = layer(x, b, mask)
            aux = aux + a
            drop = drop + d
            if i in self.moe_layer_ids:
                loads = loads + (load,)
        return self.final_norm(x), aux, loads, drop

    def construct(self, input_ids, labels, loss_mask=None):
        b, s = input_ids.shape
        hidden, aux, loads, drop = self.hidden_states(input_ids)
        lm_loss = self.ce(self.logits(hidden), labels.reshape(-1), loss_mask)
        mtp_loss = ops.zeros((), self.dtype)
        prev = hidden
        for j, module in enumerate(self.mtp):
            # depth j+1: position i predicts token i+j+2 from h_i and the embedding of token i+j+1
            n = s - 1 - j
            prev = prev.reshape(b, -1, prev.shape[-1])[:, :n].reshape(b * n, -1)
            nxt = labels[:, j: j + n]
            tgt = labels[:, j + 1: j + 1 + n]
            prev, a = module(prev, self.embedding(nxt), b, causal_mask(n, self.dtype))
            m_mask = None if loss_mask is None else loss_mask[:, j + 1: j + 1 + n]
            mtp_loss = mtp_loss + self.ce(self.logits(module.final_norm(prev)), tgt.reshape(-1), m_mask)
            aux = aux + a
        if len(self.mtp) > 0:
            mtp_loss = mtp_loss / len(self.mtp)
        loss = lm_loss + self.mtp_weight * mtp_loss + aux
        if self.n_moe > 0:
            load = ops.stack(loads, 0)
            drop = drop / self.n_moe
        else:
            load = ops.zeros((1, self.num_experts), self.dtype)
        return loss, lm_loss, mtp_loss, aux, load, drop
