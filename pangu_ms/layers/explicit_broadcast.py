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
    """softmax over the last axis; backward dx = (dy - sum(dy * y, -1)) * y with the row sum expanded to y's
    shape before the subtraction (the built-in backward broadcasts it implicitly)."""

    def construct(self, x):
        return ops.softmax(x, -1)

    def bprop(self, x, out, dout):
        row = (dout * out).sum(-1, keepdims=True)
        return ((dout - expand_as(row, out)) * out,)


__all__ = ["Softmax", "expand_as"]
