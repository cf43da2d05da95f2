"""Run-to-run reproducible reductions on CPU.

MindSpore 2.9's CPU ReduceSum over *all* elements of a tensor with at least 200,000 elements
(``AccelerateLongVector``) splits it into blocks whose count is chosen by timing the first calls
(``ParallelLaunchAutoSearch``) and adds the block sums in the order the blocks finish: the fp32 result can
differ by an ulp between two runs of the same program, even on one thread (the block count still varies).
A reduction along an axis computes every output element in one sequential loop, whatever the thread split, so
``sum_of_squares`` reduces a long tensor as rows first, then the (short) vector of row sums.
"""
from __future__ import annotations

from mindspore import ops

LONG_VECTOR = 200_000      # MindSpore's CPU threshold for the block-parallel all-element reduction
ROWS = 4_096               # row sums of a long tensor: well below LONG_VECTOR, so their sum is sequential too


def sum_of_squares(x):
    """sum(x * x) over all elements, in an order that does not depend on thread timing."""
    flat = x.reshape(-1)
    n = flat.shape[0]
    if n < LONG_VECTOR:
        return (flat * flat).sum()
    last = x.shape[-1] if len(x.shape) > 1 else 0
    if 0 < last < LONG_VECTOR and n // last < LONG_VECTOR:      # rows of the tensor itself: no padding copy
        return (flat * flat).reshape(n // last, last).sum(axis=1).sum()
    cols = -(-n // ROWS)
    if ROWS * cols != n:
        flat = ops.concat((flat, ops.zeros((ROWS * cols - n,), flat.dtype)), 0)
    return (flat * flat).reshape(ROWS, cols).sum(axis=1).sum()


__all__ = ["sum_of_squares", "LONG_VECTOR"]
