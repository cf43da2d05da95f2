"""Data-parallel gradient reduction in fused flat buffers, expert gradients only over their replicas.

The objective of one step is the mean over the D = dp*cp data shards of the per-rank losses, which equals the
single-process loss on the concatenated global batch (equal token counts per rank). Hence:

* dense parameter (replicated on every rank): rank r holds dL_r/dθ, so  g = (1/D) * sum_{dp_cp group} g_r;
* routed-expert parameter (held by one member of each EP group; its replicas form the ``expert_dp`` group of
  D/EP ranks): the all-to-all's adjoint already sums, on the owner, the contributions of the tokens of *every*
  rank of its EP group, i.e. the owner holds sum_{r in EP group} dL_r/dW. So
  g = (1/D) * sum_{expert_dp group} g_r  -- the sum over replicas, divided by D (not by the replica count D/EP).
* the router's aux-loss term under the ``ep_group`` scope is covered by the dense rule: every member's loss holds
  the group's aux value, and the statistics AllReduce's adjoint sums the EP members' gradients, which makes
  (1/D) sum_r exactly the gradient of the mean over ranks of the per-rank aux terms.

Each rule is one AllReduce of one flat buffer (the gradients concatenated), then a scale and a split back.
Groups of one rank skip the collective. ``global_sq_norm`` gives the global gradient norm^2 that clipping must use:
the dense part is complete on every rank, the expert part is summed over the EP group (each EP group holds every
expert once).
"""
from __future__ import annotations

from mindspore import nn, ops

from ..layers.reduce import sum_of_squares
from ..moe.experts import RoutedExperts
from .comm import CommGroup, GroupSum


def expert_param_names(net: nn.Cell) -> set:
    """Names of the routed-expert parameters (the weights of every ``RoutedExperts`` cell)."""
    names = set()
    for _, cell in net.cells_and_names():
        if isinstance(cell, RoutedExperts):
            names.update(p.name for p in cell.get_parameters())
    return names


class FusedGradReducer(nn.Cell):
    """``construct(grads) -> grads`` for the parameters ``params`` (the order of the gradient tuple)."""

    def __init__(self, params, expert_names: set, dense_group: CommGroup, expert_group: CommGroup,
                 ep_group: CommGroup, data_shards: int, impl: str = "auto"):
        super().__init__()
        params = list(params)
        self.n = len(params)
        self.scale = 1.0 / float(data_shards)
        kinds, offs, sizes = [], [], []
        off = [0, 0]
        for p in params:
            kind = 1 if p.name in expert_names else 0
            size = 1
            for s in p.shape:
                size *= int(s)
            kinds.append(kind)
            offs.append(off[kind])
            sizes.append(size)
            off[kind] += size
        self.kinds, self.offs, self.sizes = tuple(kinds), tuple(offs), tuple(sizes)
        self.has = (off[0] > 0, off[1] > 0)
        self.n_expert = sum(kinds)
        self.dense_sum = GroupSum(dense_group, impl)
        self.expert_sum = GroupSum(expert_group, impl)
        self.ep_sum = GroupSum(ep_group, impl)
        self.ep_size = ep_group.size
        self.names = tuple(p.name for p in params)

    def _flat(self, grads, kind):
        parts = ()
        for g, k in zip(grads, self.kinds):
            if k == kind:
                parts = parts + (g.reshape(-1),)
        return ops.concat(parts)

    def construct(self, grads):
        dbuf = grads[0].reshape(-1)
        ebuf = grads[0].reshape(-1)
        if self.has[0]:
            dbuf = self.dense_sum(self._flat(grads, 0)) * self.scale
        if self.has[1]:
            ebuf = self.expert_sum(self._flat(grads, 1)) * self.scale
        out = ()
        for g, k, o, s in zip(grads, self.kinds, self.offs, self.sizes):
            if k == 0:
                out = out + (dbuf[o:o + s].reshape(g.shape),)
            else:
                out = out + (ebuf[o:o + s].reshape(g.shape),)
        return out

    def global_sq_norm(self, grads):
        """sum of squares of the *global* gradient (call on reduced gradients)."""
        dense = ()
        expert = ()
        for g, k in zip(grads, self.kinds):
            if k == 0:
                dense = dense + (sum_of_squares(g),)
            else:
                expert = expert + (sum_of_squares(g),)
        total = ops.addn(dense) if self.has[0] else ops.zeros((), grads[0].dtype)
        if self.has[1]:
            total = total + self.ep_sum(ops.addn(expert).reshape(1)).reshape(())
        return total


__all__ = ["FusedGradReducer", "expert_param_names"]
