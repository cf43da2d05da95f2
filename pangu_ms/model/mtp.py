"""Multi-token prediction module (DeepSeek-V3 style; Pangu Ultra MoE uses depth 1).

For depth j, position i combines the previous depth's hidden state h_i (depth 0 = the main model's final-norm
output; choice, as in vLLM's DeepSeek MTP) with the embedding of token i+j+1 and predicts token i+j+2:
    h' = Layer(eh_proj([enorm(emb(t_{i+j+1})) ; hnorm(h_i)]))
    logits = LMHead(final_norm(h'))
The embedding and the LM head are shared with the main model; the layer is a full decoder layer (MoE when the
model has experts). Returns (h', aux_loss of its MoE layer).
"""
from __future__ import annotations

from mindspore import nn, ops

from ..layers.linear import Linear


class MTPModule(nn.Cell):
    """``build_layer()`` returns the module's decoder layer (built between ``eh_proj`` and ``final_norm``: the
    seeded initialiser draws in construction order)."""

    def __init__(self, m, init, backend, dtype, build_layer):
        super().__init__()
        self.enorm = backend.rms_norm(m.hidden_size, m.norm_eps, dtype=dtype)
        self.hnorm = backend.rms_norm(m.hidden_size, m.norm_eps, dtype=dtype)
        self.eh_proj = Linear(2 * m.hidden_size, m.hidden_size, init, dtype)
        self.layer = build_layer()
        self.final_norm = backend.rms_norm(m.hidden_size, m.norm_eps, dtype=dtype)

    def construct(self, prev_hidden, next_embed, batch, mask, positions=None):
        x = self.eh_proj(ops.concat((self.enorm(next_embed), self.hnorm(prev_hidden)), -1))
        h, aux, _, _ = self.layer(x, batch, mask, positions)
        return h, aux
