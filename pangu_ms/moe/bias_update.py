"""Aux-loss-free load balancing (DeepSeek-V3): after each optimizer step, for every MoE layer l of the main stack

    b_l <- b_l + rate * sign(mean_i(load_l) - load_l)

where ``load_l`` [E] counts the tokens of the *global* batch routed to each expert (the model's ``expert_load``
rows, summed over the data-parallel ranks by ``load_sum``). The bias is the router's ``expert_bias`` Parameter
(``requires_grad=False``): it shifts the top-k selection only, never the gate values, and it is saved in checkpoints
with every other Parameter. Experts with exactly the mean load keep their bias (sign 0).

Only the main-stack routers are updated: the MTP module's router load is not part of ``expert_load``, so its bias
(when ``moe.expert_bias`` is on) stays at its initial zero; ``ExpertBiasUpdate.skipped`` names those routers.
"""
from __future__ import annotations

import numpy as np
from mindspore import ParameterTuple, nn, ops

from .router import TopKRouter


def expert_bias_step(bias: np.ndarray, load: np.ndarray, rate: float) -> np.ndarray:
    """Reference (numpy) update of one layer: ``bias + rate * sign(mean(load) - load)``."""
    load = np.asarray(load, np.float64)
    return bias + rate * np.sign(load.mean() - load)


class ExpertBiasUpdate(nn.Cell):
    """``construct(load [n_moe_layers, E])``: applies the sign update to the routers' biases in place and returns
    the global load. ``load_sum``: a Cell summing a tensor over the data-parallel ranks (None in one process)."""

    def __init__(self, routers, rate: float, load_sum: nn.Cell = None, skipped=()):
        super().__init__(auto_prefix=False)
        self.biases = ParameterTuple(r.expert_bias for r in routers)
        self.rate = float(rate)
        self.load_sum = load_sum
        self.skipped = tuple(skipped)

    def construct(self, load):
        if self.load_sum is not None:
            load = self.load_sum(load)
        for i in range(len(self.biases)):
            row = load[i].astype(self.biases[i].dtype)
            ops.assign_add(self.biases[i], ops.sign(row.mean() - row) * self.rate)
        return load


def build_expert_bias_update(net: nn.Cell, load_sum: nn.Cell = None):
    """The update for ``net`` (a ``PanguForCausalLM``), or None when no router carries a bias or the rate is 0.
    Routers are taken in ``net.moe_layer_ids`` order, the row order of the model's ``expert_load``."""
    routers = [net.layers[i].moe.router for i in getattr(net, "moe_layer_ids", [])]
    routers = [r for r in routers if r.use_bias]
    if not routers or routers[0].bias_update_rate == 0:
        return None
    main = {id(r) for r in routers}
    skipped = [name for name, cell in net.cells_and_names()
               if isinstance(cell, TopKRouter) and cell.use_bias and id(cell) not in main]
    return ExpertBiasUpdate(routers, routers[0].bias_update_rate, load_sum, skipped)
