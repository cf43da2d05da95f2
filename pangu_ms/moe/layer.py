"""MoE layer = shared expert + the routed stages: route -> dispatch -> experts -> combine.

    y = SharedExpert(x) + combine(experts(dispatch(x, route(x))))
(with the masked-dense dispatcher the shared expert is computed inside the expert matmuls, see ``all_experts``)
Returns (y, aux_loss, expert_load [E] (tokens routed to each expert, before any drop), drop_rate).
"""
from __future__ import annotations

import mindspore as ms
from mindspore import nn, ops

from ..config.schema import MoEConfig
from ..layers.mlp import SwiGLUMLP
from .aux_loss import LoadBalancingLoss
from .dispatcher import MaskedDenseDispatcher, build_dispatcher
from .experts import RoutedExperts
from .router import TopKRouter


class MoELayer(nn.Cell):
    def __init__(self, hidden: int, cfg: MoEConfig, init, backend, dtype=ms.float32, hooks=None):
        """``hooks`` (expert parallelism, see ``pangu_ms.parallel``) may provide ``local_experts`` (first, count),
        ``dispatcher(cfg)`` (a Cell with the dispatcher interface) and ``aux_reducer`` (statistics reducer of the
        aux-loss scope). Without hooks the layer is the single-process reference."""
        super().__init__()
        local = getattr(hooks, "local_experts", None)
        reducer = getattr(hooks, "aux_reducer", None)
        self.router = TopKRouter(hidden, cfg, init, dtype)
        self.experts = RoutedExperts(cfg.num_experts, hidden, cfg.expert_ffn_hidden, init, backend, dtype, local)
        self.has_shared = cfg.num_shared_experts > 0
        if self.has_shared:
            self.shared_expert = SwiGLUMLP(hidden, cfg.num_shared_experts * cfg.expert_ffn_hidden, init,
                                           backend, dtype)
        fused = backend.fused_cpu_kernels
        self.dispatcher = hooks.dispatcher(cfg, fused) if hooks is not None else build_dispatcher(cfg, fused)
        # masked-dense experts run every expert on every token in two matmuls; the shared expert then rides
        # along in the same two matmuls as extra experts with gate 1 (fewer, larger kernels; same math)
        self.fold_shared = self.has_shared and isinstance(self.dispatcher, MaskedDenseDispatcher)
        self.use_aux = cfg.aux_loss_scope != "none" and cfg.aux_loss_coeff > 0
        self.aux = LoadBalancingLoss(cfg.num_experts, cfg.top_k, cfg.aux_loss_coeff, cfg.aux_loss_scope, reducer)

    def construct(self, x, batch):
        idx, w, mask, probs = self.router(x)
        if self.fold_shared:
            y, drop_rate = self.dispatcher(x, idx, w, self.experts, self.shared_expert)
        else:
            y, drop_rate = self.dispatcher(x, idx, w, self.experts)
            if self.has_shared:
                y = y + self.shared_expert(x)
        aux = self.aux(mask, probs, batch) if self.use_aux else ops.zeros((), probs.dtype)
        return y, aux.astype(x.dtype), ops.stop_gradient(mask.sum(0)), drop_rate
