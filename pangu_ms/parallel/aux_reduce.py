"""Aux-loss statistics reducers (the MoE ``aux_reducer`` hook; see ``pangu_ms/moe/aux_loss.py``).

``LoadBalancingLoss`` computes, for its token scope, counts_i (tokens routed to expert i), score_sums_i (sum of
the normalised router scores) and n (tokens), then L = alpha * sum_i (E/(k n) counts_i) (score_sums_i / n).
The reducer sums the three over its group before the formula:

* ``ep_group`` scope  -> :class:`StatsReducer` over the expert-parallel group (Pangu Ultra MoE): the loss is the
  one of the union of the group's micro-batches, identical on every member;
* ``global_batch``    -> the same over every rank.

One fused AllReduce of [counts | score_sums | n] per MoE layer. Its gradient is the sum over the group of the
incoming gradients (``comm.GroupSum``): each member's loss contains the group's aux term, so with the
data-parallel mean of the gradients the router receives exactly d(aux of the union)/d(scores) for its own tokens
(derivation in docs/parallel.md).
"""
from __future__ import annotations

from mindspore import nn, ops

from .comm import CommGroup, GroupSum


class StatsReducer(nn.Cell):
    def __init__(self, group: CommGroup, impl: str = "auto"):
        super().__init__()
        self.sum = GroupSum(group, impl)

    def construct(self, counts, score_sums, n):
        e = counts.shape[0]
        buf = ops.concat((counts.astype(score_sums.dtype), score_sums, n.astype(score_sums.dtype).reshape(1)))
        tot = self.sum(buf)
        return ops.stop_gradient(tot[:e]).astype(counts.dtype), tot[e:2 * e], \
            ops.stop_gradient(tot[2 * e]).astype(n.dtype)


__all__ = ["StatsReducer"]
