"""Query-chunked causal attention with a blockwise backward: the CPU analogue of FlashAttention's memory use.

Forward (``masked_scores``, which ``ChunkedCausalAttention``'s autodiff path calls too, so the same bits): for
each chunk of queries [i0, i1), scores against the keys [0, i1) they can see, softmax, times the values.

Backward (hand-written ``bprop``): MindSpore keeps only the inputs and the output for it, not the chunks'
probabilities. Each chunk's probabilities are rebuilt from q and k by the same forward ops (bit-identical), then

    dV[:i1] += P^T dO_c          dP = dO_c V[:i1]^T           dS = P * (dP - rowsum(P * dP)) * scale
    dQ_c = dS K[:i1]             dK[:i1] += dS^T Q_c          (the RoPE part likewise, k_rope shared by heads)

one chunk at a time, so the backward's working set is one chunk's [B, N, chunk, i1] tensors instead of every
chunk's kept probabilities (about S^2 / 2 per head). The price is re-running each chunk's score matmuls and
softmax once (what recomputing the attention core costs, without MindSpore's recompute pass). The row sum is
expanded before it is subtracted (``explicit_broadcast``: implicitly broadcasting kernels hold four buffers).
The gradients equal autodiff's up to the order in which the chunks' dK / dV contributions are summed.

Not for a core inside a recomputed region (``full``, ``core_attn``, ``mtp``): a custom ``bprop`` there makes
MindSpore 2.9's recompute pass fail ("Graph cycle exists", docs/memory.md); those use the autodiff path.
"""
from __future__ import annotations

from mindspore import nn, ops

from .explicit_broadcast import expand_as


def _pad_keys(x, s):
    """``x`` [..., i1, D] (gradients of the first i1 keys) zero-padded to [..., S, D]."""
    pad = ((0, 0),) * (len(x.shape) - 2) + ((0, s - x.shape[-2]), (0, 0))
    return ops.Pad(pad)(x)


class BlockwiseAttention(nn.Cell):
    """(q_nope [B,N,S,Dn], q_rope [B,N,S,Dr], k_nope [B,N,S,Dn], k_rope [B,S,Dr], v [B,N,S,Dv], additive causal
    mask [S,S] or [B,1,S,S]) -> [B,N,S,Dv], ``chunk`` queries at a time (``chunk < S``)."""

    def __init__(self, scale: float, chunk: int):
        super().__init__()
        self.scale = scale
        self.chunk = int(chunk)
        self.score_matmul = ops.BatchMatMul(transpose_b=True)
        self.rope_score_matmul = ops.BatchMatMul(transpose_b=True)
        self.value_matmul = ops.BatchMatMul()
        self.transposed_matmul = ops.BatchMatMul(transpose_a=True)      # P^T dO, dS^T Q
        self.plain_matmul = ops.BatchMatMul()                           # dS K
        self.grad_matmul = ops.BatchMatMul(transpose_b=True)            # dO V^T
        self.softmax = ops.Softmax(-1)
        self.concat = ops.Concat(2)
        self.zeros_like = ops.ZerosLike()
        self.row_sum = ops.ReduceSum(keep_dims=True)

    def masked_scores(self, q_nope, q_rope, k_nope, k_rope, mask, i0, i1):
        """Scaled, masked scores [B, N, i1 - i0, i1] of the queries [i0, i1) against the keys [0, i1) they can see
        (``q_rope`` None: no RoPE part). The one definition of a chunk's scores: this backward's rebuild and
        ``ChunkedCausalAttention``'s autodiff path both use it, each with its own softmax."""
        b, n = q_nope.shape[0], q_nope.shape[1]
        c = i1 - i0
        scores = self.score_matmul(q_nope[:, :, i0:i1], k_nope[:, :, :i1])
        if q_rope is not None:
            dr = q_rope.shape[-1]
            rope = self.rope_score_matmul(q_rope[:, :, i0:i1].reshape(b, n * c, dr), k_rope[:, :i1])
            scores = scores + rope.reshape(b, n, c, i1)
        scores = scores * self.scale
        return scores + expand_as(mask[..., i0:i1, :i1], scores)

    def _probs(self, q_nope, q_rope, k_nope, k_rope, mask, i0, i1):
        return self.softmax(self.masked_scores(q_nope, q_rope, k_nope, k_rope, mask, i0, i1))

    def construct(self, q_nope, q_rope, k_nope, k_rope, v, mask):
        s = q_nope.shape[2]
        outs = ()
        for i0 in range(0, s, self.chunk):
            i1 = i0 + self.chunk if i0 + self.chunk < s else s
            if outs:            # one chunk at a time: its scores only after the previous chunk's output
                q_nope, q_rope = ops.depend(q_nope, outs[-1]), ops.depend(q_rope, outs[-1])
            outs = outs + (self.value_matmul(self._probs(q_nope, q_rope, k_nope, k_rope, mask, i0, i1),
                                             v[:, :, :i1]),)
        return self.concat(outs)

    def bprop(self, q_nope, q_rope, k_nope, k_rope, v, mask, out, dout):
        b, n, s, dr = q_rope.shape
        dq_nope, dq_rope = (), ()
        dk_nope, dk_rope, dv = self.zeros_like(k_nope), self.zeros_like(k_rope), self.zeros_like(v)
        for i0 in range(0, s, self.chunk):
            i1 = i0 + self.chunk if i0 + self.chunk < s else s
            c = i1 - i0
            # one chunk at a time: its probabilities are rebuilt after the previous chunk's gradients (the first
            # after dout arrives); every rebuilt input depends on the backward, so graph optimisation cannot merge
            # the rebuild with the forward's identical ops (that would keep the forward's tensors until here)
            anchor = dk_rope if dq_nope else dout
            q_nope, q_rope, mask = ops.depend(q_nope, anchor), ops.depend(q_rope, anchor), ops.depend(mask, anchor)
            probs = self._probs(q_nope, q_rope, k_nope, k_rope, mask, i0, i1)
            d_out = dout[:, :, i0:i1]
            dv = dv + _pad_keys(self.transposed_matmul(probs, d_out), s)
            dz = self.grad_matmul(d_out, v[:, :, :i1]) * probs
            row = self.row_sum(-dz, -1)
            d_scores = (dz + expand_as(row, probs) * probs) * self.scale
            dq_nope = dq_nope + (self.plain_matmul(d_scores, k_nope[:, :, :i1]),)
            dk_nope = dk_nope + _pad_keys(self.transposed_matmul(d_scores, q_nope[:, :, i0:i1]), s)
            d_rope = d_scores.reshape(b, n * c, i1)
            dq_rope = dq_rope + (self.plain_matmul(d_rope, k_rope[:, :i1]).reshape(b, n, c, dr),)
            q_rope_flat = q_rope[:, :, i0:i1].reshape(b, n * c, dr)
            dk_rope = dk_rope + _pad_keys(self.transposed_matmul(d_rope, q_rope_flat), s)
        return (self.concat(dq_nope), self.concat(dq_rope), dk_nope, dk_rope, dv, self.zeros_like(mask))


__all__ = ["BlockwiseAttention"]
