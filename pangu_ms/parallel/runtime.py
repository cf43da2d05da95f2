"""Explicit-collective runtime (msrun on CPU; the same code path is the reference for Ascend).

    rt = setup_parallel(cfg)      # under msrun (MS_ROLE / RANK_SIZE set): communication.init(), validate_layout,
                                  # create this rank's process groups; otherwise Runtime.single_process()
    rt.rank, rt.world, rt.dp_rank, rt.dp_size, rt.is_distributed
    rt.hooks                      # MoE hooks (local expert slice, EP dispatcher, aux reducer) or None
    rt.grad_reducer(net, optimizer)  # FusedGradReducer for TrainStep (None when world == 1)
    rt.barrier(), rt.micro_batch(global_batch), rt.describe()

``Runtime`` is the one runtime type (single process and msrun); the training step itself is built by
``pangu_ms.train`` (``TrainStep(loss_cell, optimizer, clip, rt.grad_reducer(net, optimizer))``).

How DP and EP combine (``dims.py``): the EP groups are drawn from the data-parallel ranks, so every rank is a DP
rank with its own micro-batch *and* an EP member. With dp=2, ep=2 on 2 ranks each rank trains on half of the
global batch and holds half of every MoE layer's routed experts; dense weights are replicated. Supported here:
tp = pp = cp = 1 (tensor/pipeline/context parallelism exist only in the Ascend plan, ``parallel/plan``).

Clipping: with EP the gradient tuple of a rank holds only its experts, so a local norm would miss the other
members' expert gradients; ``TrainStep`` clips with ``reducer.global_sq_norm`` whenever it has a reducer.
"""
from __future__ import annotations

import os

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

    def dispatcher(self, moe_cfg, fused_cpu_kernels: bool = False) -> nn.Cell:
        """The expert-parallel dispatcher for this rank; without EP the single-process one (with the backend's
        ``fused_cpu_kernels``)."""
        if self._ep.size == 1:
            return build_dispatcher(moe_cfg, fused_cpu_kernels)
        if moe_cfg.dispatcher == "drop_and_pad":
            if self.hierarchical:
                raise ConfigError("parallel.hierarchical_alltoall: only with moe.dispatcher=dropless")
            return FlatEPDispatcher(moe_cfg.num_experts, moe_cfg.top_k, self._ep, moe_cfg.capacity_factor,
                                    self.impl, moe_cfg.expert_placement)
        if self.hierarchical:
            return HierarchicalEPDispatcher(moe_cfg.num_experts, moe_cfg.top_k, self._inner, self._outer, self.impl)
        return FlatEPDispatcher(moe_cfg.num_experts, moe_cfg.top_k, self._ep, None, self.impl,
                                moe_cfg.expert_placement)

    @property
    def aux_reducer(self):
        """A new reducer Cell per access (one per MoE layer); None = identity (micro-batch statistics)."""
        if self._aux_group is None or self._aux_group.size == 1:
            return None
        return StatsReducer(self._aux_group, self.impl)


class Runtime:
    """This process's place in the job: rank, world, data-parallel coordinates, MoE hooks and process groups.

    ``Runtime.single_process()`` is the one-process runtime (no groups, no hooks, no reducer);
    ``Runtime.distributed(cfg, dims, rank, world, groups)`` the msrun one (``setup_parallel``)."""

    def __init__(self, cfg=None, dims: ParallelDims | None = None, rank: int = 0, world: int = 1,
                 groups: dict | None = None, impl: str = "auto"):
        self.cfg, self.dims = cfg, dims
        self.rank, self.world = rank, world
        self.is_distributed = world > 1
        self.groups = groups or {}                # kind -> CommGroup
        self.impl = impl
        if dims is None:
            self.dp_rank, self.dp_size = 0, 1
            self.hooks = None
        else:
            c = dims.coord(rank)
            self.dp_rank = c.dp * dims.cp + c.cp
            self.dp_size = dims.dp * dims.cp
            self.hooks = self._hooks()

    @classmethod
    def single_process(cls) -> "Runtime":
        return cls()

    @classmethod
    def distributed(cls, cfg, dims: ParallelDims, rank: int, world: int, groups: dict,
                    impl: str = "auto") -> "Runtime":
        return cls(cfg, dims, rank, world, groups, impl)

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
        optimizer is accepted too); required when world > 1."""
        if self.world == 1:
            return None
        if params is None:
            raise ValueError("Runtime.grad_reducer: pass the optimizer (its parameters give the gradient order)")
        if hasattr(params, "parameters"):
            params = params.parameters
        params = list(params)
        names = expert_param_names(net)
        if self.groups["ep"].size == 1:
            names = set()          # experts replicated like dense weights: one buffer
        return FusedGradReducer(params, names, self.groups["dp_cp"], self.groups["expert_dp"], self.groups["ep"],
                                self.dp_size, self.impl)

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
        if self.dims is None:
            return "rank 0/1 (single process)"
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
    if cfg.moe.enabled and p.etp not in (None, 1):
        raise ConfigError(f"parallel.etp: {p.etp}: the explicit msrun path has no expert tensor parallelism "
                          f"(etp must be 1; etp > 1 needs the Ascend plan, pangu_ms/parallel/apply_ascend.py)")


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
        return Runtime.single_process()
    from mindspore.communication import get_group_size, get_rank, init
    init()
    return distributed_runtime(cfg, get_rank(), get_group_size(), impl)


def distributed_runtime(cfg, rank: int, world: int, impl: str = "auto") -> Runtime:
    """The explicit-collective runtime of ``cfg`` for ``rank`` of ``world`` once the collectives are initialised
    (``setup_parallel`` does both; a process that trains several layouts calls ``init()`` once and this per
    layout)."""
    dims = validate_layout(cfg, world)
    _check_explicit(cfg)
    groups = build_groups(dims, rank, world, hierarchical=bool(cfg.parallel.hierarchical_alltoall))
    return Runtime.distributed(cfg, dims, rank, world, groups, impl)


__all__ = ["setup_parallel", "distributed_runtime", "Runtime", "MoEHooks", "build_groups", "launched_by_msrun"]
