"""Explicit-collective runtime (msrun on CPU; the same code path is the reference for Ascend).

    rt = setup_parallel(cfg)      # under msrun (MS_ROLE / RANK_SIZE set): communication.init(), validate_layout,
                                  # create this rank's process groups; otherwise a single-process runtime
    rt.rank, rt.world, rt.dp_rank, rt.dp_size, rt.is_distributed
    rt.hooks                      # MoE hooks (local expert slice, EP dispatcher, aux reducer) or None
    rt.grad_reducer(net[, params])  # FusedGradReducer for TrainStep (None when world == 1)
    rt.train_step(net, optimizer, grad_clip)   # TrainStep whose clipping uses the global norm (see below)
    rt.barrier()

How DP and EP combine (``dims.py``): the EP groups are drawn from the data-parallel ranks, so every rank is a DP
rank with its own micro-batch *and* an EP member. With dp=2, ep=2 on 2 ranks each rank trains on half of the
global batch and holds half of every MoE layer's routed experts; dense weights are replicated. Supported here:
tp = pp = cp = 1 (tensor/pipeline/context parallelism exist only in the Ascend plan, ``parallel/plan``).

Clipping: with EP the gradient tuple of a rank holds only its experts, so a local norm would miss the other
members' expert gradients; ``TrainStep`` clips with ``reducer.global_sq_norm`` whenever it has a reducer.
"""
from __future__ import annotations

import os
from types import SimpleNamespace

import mindspore as ms
from mindspore import nn, ops

from ..config import ConfigError
from ..moe.dispatcher import build_dispatcher
from .aux_reduce import StatsReducer
from .comm import CommGroup, single_group, world_group_name
from .dims import ParallelDims, group_name, validate_layout
from .ep_dispatcher import FlatEPDispatcher, HierarchicalEPDispatcher
from .grads import FusedGradReducer, expert_param_names


def launched_by_msrun() -> bool:
    return bool(os.environ.get("MS_ROLE")) or int(os.environ.get("RANK_SIZE", "1")) > 1


class MoEHooks:
    """What every MoE layer of this rank receives (``pangu_ms/moe/layer.py``)."""

    def __init__(self, moe_cfg, local_experts, ep: CommGroup, inner: CommGroup | None, outer: CommGroup | None,
                 aux_group: CommGroup | None, hierarchical: bool, impl: str = "auto"):
        self.local_experts = local_experts
        self._ep, self._inner, self._outer = ep, inner, outer
        self._aux_group = aux_group
        self.hierarchical = hierarchical
        self.impl = impl

    def dispatcher(self, moe_cfg) -> nn.Cell:
        if self._ep.size == 1:
            return build_dispatcher(moe_cfg)
        if moe_cfg.dispatcher == "drop_and_pad":
            if self.hierarchical:
                raise ConfigError("parallel.hierarchical_alltoall: only with moe.dispatcher=dropless")
            return FlatEPDispatcher(moe_cfg.num_experts, moe_cfg.top_k, self._ep, moe_cfg.capacity_factor,
                                    self.impl)
        if self.hierarchical:
            return HierarchicalEPDispatcher(moe_cfg.num_experts, moe_cfg.top_k, self._inner, self._outer, self.impl)
        return FlatEPDispatcher(moe_cfg.num_experts, moe_cfg.top_k, self._ep, None, self.impl)

    @property
    def aux_reducer(self):
        """A new reducer Cell per access (one per MoE layer); None = identity (micro-batch statistics)."""
        if self._aux_group is None or self._aux_group.size == 1:
            return None
        return StatsReducer(self._aux_group, self.impl)


class ParallelRuntime:
    def __init__(self, cfg, dims: ParallelDims, rank: int, world: int, groups: dict, impl: str = "auto"):
        self.cfg, self.dims = cfg, dims
        self.rank, self.world = rank, world
        self.is_distributed = world > 1
        c = dims.coord(rank)
        self.dp_rank = c.dp * dims.cp + c.cp
        self.dp_size = dims.dp * dims.cp
        self.groups = groups                      # kind -> CommGroup
        self.impl = impl
        self.hooks = self._hooks()

    # ------------------------------------------------------------------ hooks
    def _hooks(self):
        moe = self.cfg.moe
        if not moe.enabled:
            return None
        ep = self.groups["ep"]
        scope = moe.aux_loss_scope
        aux_group = {"ep_group": ep, "global_batch": self.groups["world"]}.get(scope)
        if ep.size == 1 and (aux_group is None or aux_group.size == 1):
            return None
        local = None
        if ep.size > 1:
            r = self.dims.experts_of(self.rank)
            local = (r.start, len(r))
        hier = bool(self.cfg.parallel.hierarchical_alltoall) and ep.size > 1
        if ep.size > 1:     # the dispatchers assume EP member index == dims' ep coordinate (expert ownership)
            assert ep.index == self.dims.coord(self.rank).ep, (ep, self.dims.coord(self.rank))
            if hier:
                inner, outer = self.groups["inner"], self.groups["outer"]
                assert outer.index * inner.size + inner.index == ep.index, (inner, outer, ep)
        return MoEHooks(moe, local, ep, self.groups.get("inner"), self.groups.get("outer"), aux_group, hier,
                        self.impl)

    # ------------------------------------------------------------------ gradients
    def grad_reducer(self, net: nn.Cell, params=None):
        """The gradient reducer for ``TrainStep``; None when world == 1.

        ``params``: the parameters in the order of the gradient tuple, i.e. ``optimizer.parameters`` (an
        optimizer is accepted too). Default: the order of ``build_optimizer(net.trainable_params(), ...)``
        (decay group first, then the rest; ``pangu_ms.train.optim.decay_groups``)."""
        if self.world == 1:
            return None
        if params is None:
            from ..train.optim import decay_groups
            params = [p for g in decay_groups(net.trainable_params(), 1.0) for p in g["params"]]
        elif hasattr(params, "parameters"):
            params = params.parameters
        params = list(params)
        names = expert_param_names(net)
        if self.groups["ep"].size == 1:
            names = set()          # experts replicated like dense weights: one buffer
        return FusedGradReducer(params, names, self.groups["dp_cp"], self.groups["expert_dp"], self.groups["ep"],
                                self.dp_size, self.impl)

    def train_step(self, net, optimizer, grad_clip: float = 1.0, return_grads: bool = False):
        """``TrainStep`` with this rank's reducer; it clips by the global norm (``reducer.global_sq_norm``)."""
        from ..train.step import TrainStep
        return TrainStep(net, optimizer, grad_clip, self.grad_reducer(net, optimizer), return_grads)

    # ------------------------------------------------------------------ misc
    def barrier(self):
        if self.world > 1:
            import numpy as np
            from mindspore.ops import AllReduce
            AllReduce()(ms.Tensor(np.ones(1, np.float32))).asnumpy()   # a world AllReduce is a barrier

    def micro_batch(self, global_batch):
        """Rows of a global batch ([B, ...], B divisible by dp_size) that this rank trains on."""
        b = global_batch.shape[0] // self.dp_size
        return global_batch[self.dp_rank * b:(self.dp_rank + 1) * b]

    def describe(self) -> str:
        g = {k: v.ranks for k, v in self.groups.items()}
        hier = self.hooks.hierarchical if self.hooks is not None else False
        return (f"rank {self.rank}/{self.world} dp_rank {self.dp_rank}/{self.dp_size} groups {g} "
                f"experts {list(self.dims.experts_of(self.rank)) if self.cfg.moe.enabled else []} "
                f"hierarchical {hier}")


def _check_explicit(cfg):
    p = cfg.parallel
    bad = [f"{n}={getattr(p, n)}" for n in ("tp", "pp", "cp") if getattr(p, n) != 1]
    if bad:
        raise ConfigError(f"parallel: the explicit msrun path implements data and expert parallelism only "
                          f"({', '.join(bad)} needs the Ascend plan, pangu_ms/parallel/apply_ascend.py)")


def build_groups(dims: ParallelDims, rank: int, world: int, create: bool = True, world_name: str | None = None,
                 hierarchical: bool = False):
    """CommGroups of ``rank`` (kinds: world, dp_cp, ep, expert_dp and, with ``hierarchical``, inner/outer); with
    ``create`` the multi-rank sub-groups are created with ``mindspore.communication.create_group``."""
    wname = world_name if world_name is not None else world_group_name()
    kinds = {"world": tuple(range(world))}
    for kind in ("dp_cp", "ep", "expert_dp"):
        kinds[kind] = tuple(dims.group_of(kind, rank))
    if hierarchical and dims.num_experts and dims.ep_width > 1:
        inner, outer = dims.hierarchical_of(rank)
        kinds["inner"], kinds["outer"] = tuple(inner), tuple(outer)
    out = {}
    created = {}
    for kind, ranks in kinds.items():
        is_world = len(ranks) == world
        if len(ranks) == 1:
            out[kind] = single_group(rank)
            continue
        name = wname if is_world else group_name(kind, ranks)
        if create and not is_world and name not in created:
            from mindspore.communication import create_group
            create_group(name, list(ranks))
            created[name] = True
        out[kind] = CommGroup(ranks=tuple(ranks), index=ranks.index(rank), name=name, is_world=is_world)
    return out


def setup_parallel(cfg, impl: str = "auto"):
    """See the module docstring. Without msrun: a single-process runtime (no ``init()``)."""
    if not launched_by_msrun():
        return single_process_runtime(cfg)
    from mindspore.communication import get_group_size, get_rank, init
    init()
    rank, world = get_rank(), get_group_size()
    dims = validate_layout(cfg, world)
    _check_explicit(cfg)
    groups = build_groups(dims, rank, world, hierarchical=bool(cfg.parallel.hierarchical_alltoall))
    return ParallelRuntime(cfg, dims, rank, world, groups, impl)


def single_process_runtime(cfg=None):
    from ..train.step import TrainStep
    return SimpleNamespace(rank=0, world=1, dp_rank=0, dp_size=1, is_distributed=False, hooks=None,
                           grad_reducer=lambda net, params=None: None, barrier=lambda: None,
                           train_step=lambda net, opt, clip=1.0, return_grads=False:
                           TrainStep(net, opt, clip, None, return_grads),
                           micro_batch=lambda b: b)


__all__ = ["setup_parallel", "ParallelRuntime", "MoEHooks", "build_groups",
           "launched_by_msrun", "single_process_runtime"]
