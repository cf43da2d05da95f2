"""Explicit broadcasting: elementwise ops between a large tensor and a smaller one, and a softmax whose backward
needs no implicit broadcast.

Measured on MindSpore 2.9.0, CPU, graph mode (docs/memory.md): a binary elementwise kernel whose operands have
different shapes (``x + mask`` with x [B, N, S, S] and mask [S, S], ``x * rstd`` with rstd [T, 1]) holds about
four output-sized buffers that the runtime does not reuse until the step ends, so the step's peak grows by
4x the output for every such op (ten broadcasting adds on a 32 MB tensor: 1.36 GB; the same chain with the
small operand first expanded by ``BroadcastTo``: 0.12 GB). Same-shape operands and Python scalars are not
affected. The built-in softmax backward subtracts a [..., 1] row sum from a [..., S] tensor, i.e. broadcasts
implicitly: :class:`Softmax` gives the same gradient with the row sum expanded first.

The values are the same as with implicit broadcasting (the same elementwise op on the same numbers). The
gradient of ``BroadcastTo`` is a ``ReduceSum`` over the expanded axes, so the backward of an explicitly
broadcast op has equal-shape operands too.
"""
from __future__ import annotations

from mindspore import nn, ops


def expand_as(small, like):
    """``small`` broadcast to ``like``'s shape (NumPy rules) as a tensor of its own."""
    return ops.broadcast_to(small, like.shape)


class Softmax(nn.Cell):
    """softmax over the last axis with a hand-written backward, dx = dy*y - sum(dy*y, -1)*y, the row sum expanded
    to y's shape before the multiply (the built-in backward broadcasts it implicitly). The backward's ops are in
    the order autodiff produces for :class:`RecomputableSoftmax`, so the two give bit-identical gradients."""

    def construct(self, x):
        return ops.softmax(x, -1)

    def bprop(self, x, out, dout):
        dz = dout * out
        row = (-dz).sum(-1, keepdims=True)
        return (dz + expand_as(row, out) * out,)


class RecomputableSoftmax(nn.Cell):
    """softmax over the last axis whose gradient MindSpore's autodiff derives from same-shape ops only, for the
    attention core inside a recomputed region.

    Forward: ``p + (f - stop_gradient(f))`` with ``p = stop_gradient(softmax(x))`` and ``f = p * (x - r)``,
    ``r = sum(p * x, -1)`` expanded to x's shape: the value is exactly p (f - f = 0), the gradient is
    d f / d x = the softmax Jacobian, dx = dy*p - sum(dy*p, -1)*p (same op order as :class:`Softmax`'s backward).
    Why not :class:`Softmax` there: a Cell with a custom ``bprop`` inside a recomputed decoder layer whose norms
    expand their weights makes MindSpore 2.9's recompute pass build a cyclic graph ("Graph cycle exists"); the
    built-in softmax's backward broadcasts implicitly (about 4 [.., S, S] buffers per layer held until the step
    ends, docs/memory.md). Costs: a few more same-shape elementwise kernels, and without recompute it keeps one
    more [.., S, S] tensor than :class:`Softmax` (so it is used only where the core is recomputed).
    """

    def construct(self, x):
        p = ops.stop_gradient(ops.softmax(x, -1))
        r = (p * x).sum(-1, keepdims=True)
        f = p * (x - expand_as(r, x))
        return p + (f - ops.stop_gradient(f))


__all__ = ["RecomputableSoftmax", "Softmax", "expand_as"]
