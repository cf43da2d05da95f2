"""Parallel dimensions: rank <-> (pp, dp, cp, tp) coordinates, expert coordinates, process groups, validation.

Pure Python (no MindSpore import): the explicit CPU path (msrun + hand-written collectives) and the Ascend shard
plan (:mod:`pangu_ms.parallel.plan`) both read their rank lists from here, so they agree by construction.

Rank order (Megatron style, TP fastest)::

    rank = ((pp * DP + dp) * CP + cp) * TP + tp

so a pipeline stage owns the contiguous block ``[pp * S, (pp + 1) * S)`` with ``S = DP * CP * TP`` (this is how
MindSpore's ``pipeline_stages`` splits the devices), and inside a stage the local index ``l = rank - pp * S``
is the row-major index of the device matrix ``(dp, cp, tp)``.

Expert grid (MoE parallel folding, see ``config/expert_grid.py`` for the keys). In MoE layers the ``S`` ranks of a
stage are re-factored as ``(edp, ep, etp)`` with the same local index, independently of ``(dp, cp, tp)``::

    l = (edp * W + ep) * ETP + etp,    W * ETP * EDP = S

with ``W = ep_width`` (experts split over W ranks) and ``ETP = etp`` (each expert's FFN dim split over ETP
consecutive ranks). The two older layouts are special cases: without ``tp_extend_ep`` ETP = TP and W = ep (the
expert-TP group is the TP group, the EP group has the same tp rank and consecutive ``dc = dp * CP + cp``); with
``tp_extend_ep`` (MindSpeed ``moe_tp_extend_ep``) ETP = 1 and the EP group is the ``ep * TP`` consecutive local
ranks (the TP group shards the *expert set*).

The expert-parallel rank inside its group is ``r = ep`` and that rank owns experts ``[r * E / W, (r + 1) * E / W)``.
Ranks with the same (ep, etp) in different ``edp`` slices hold replicas of the same expert shards (group
``expert_dp``): expert gradients are reduced over that group only, dense gradients over ``dp_cp``.

Hierarchical all-to-all: each EP group is cut by node (``rank // ranks_per_node``) into *inner* groups (members on
one node; intra-node all-to-all) and *outer* groups (the j-th member of every node; inter-node AllGather). For the
718B layout (TP 8 = ranks_per_node, EP 4, tp_extend_ep) the EP group is 32 ranks on 4 nodes: inner = the node's
8 ranks (its TP group), outer = 4 ranks, one per node.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

from ..config import ConfigError
from ..config.expert_grid import expert_grid, expert_grid_problem
from .split import split_problems
from .stage_recompute import stage_recompute_problems

#: Group kinds, see :meth:`ParallelDims.groups`.
GROUP_KINDS = ("dp", "tp", "pp", "cp", "dp_cp", "ep", "expert_dp", "expert_tp", "embedding")


@dataclass(frozen=True)
class Coord:
    """Coordinates of one rank. ``ep`` is the rank inside its expert-parallel group (0..W-1)."""

    rank: int
    pp: int
    dp: int
    cp: int
    tp: int
    edp: int
    ep: int
    etp: int
    node: int


class ParallelDims:
    """The parallel layout as arithmetic. Construct with :meth:`from_config` or directly.

    Raises :class:`ConfigError` when the degrees cannot form the grids (see :func:`layout_problems` for the full
    list of checks with readable messages).
    """

    def __init__(self, dp=1, tp=1, pp=1, cp=1, ep=1, vpp=1, tp_extend_ep=False, etp=None, ranks_per_node=8,
                 num_experts=0, micro_batch_size=1, seq_length=0, global_batch_size=0,
                 hierarchical_alltoall=False, optimizer_shard=False, pipeline_schedule="1f1b"):
        self.dp, self.tp, self.pp, self.cp, self.ep, self.vpp = int(dp), int(tp), int(pp), int(cp), int(ep), int(vpp)
        self.tp_extend_ep = bool(tp_extend_ep)
        self.ranks_per_node = int(ranks_per_node)
        self.num_experts = int(num_experts)
        # the run's shape (what the simulator costs; training reads the same fields from the config)
        self.micro_batch_size, self.seq_length = int(micro_batch_size), int(seq_length)
        self.global_batch_size = int(global_batch_size)
        self.hierarchical_alltoall, self.optimizer_shard = bool(hierarchical_alltoall), bool(optimizer_shard)
        self.pipeline_schedule = str(pipeline_schedule)
        for n in ("dp", "tp", "pp", "cp", "ep", "vpp", "ranks_per_node", "micro_batch_size"):
            if getattr(self, n) <= 0:
                raise ConfigError(f"parallel.{n}: must be > 0, got {getattr(self, n)}")
        self.etp_setting = None if etp is None else int(etp)
        self._width, self._etp = expert_grid(self.dp, self.cp, self.tp, self.ep, self.etp_setting,
                                             self.tp_extend_ep)

    @classmethod
    def from_config(cls, cfg) -> "ParallelDims":
        p, t = cfg.parallel, cfg.train
        return cls(dp=p.dp, tp=p.tp, pp=p.pp, cp=p.cp, ep=p.ep, vpp=p.vpp,
                   tp_extend_ep=p.tp_extend_ep and cfg.moe.enabled, etp=p.etp if cfg.moe.enabled else None,
                   ranks_per_node=p.ranks_per_node,
                   num_experts=cfg.moe.num_experts, micro_batch_size=p.micro_batch_size, seq_length=t.seq_length,
                   global_batch_size=t.global_batch_size, hierarchical_alltoall=p.hierarchical_alltoall,
                   optimizer_shard=p.optimizer_shard, pipeline_schedule=pipeline_schedule(cfg))

    # ------------------------------------------------------------------ sizes
    @property
    def world(self) -> int:
        return self.dp * self.tp * self.pp * self.cp

    @property
    def stage_size(self) -> int:
        """Devices in one pipeline stage (dp * cp * tp)."""
        return self.dp * self.cp * self.tp

    @property
    def ep_width(self) -> int:
        """Members of one expert-parallel group W (ep; ep * tp with tp_extend_ep): config/expert_grid.py."""
        return self._width

    @property
    def etp(self) -> int:
        """Expert tensor-parallel size (parallel.etp; derived: tp, or 1 with tp_extend_ep)."""
        return self._etp

    @property
    def edp(self) -> int:
        """Replicas of each expert shard inside a stage (dp * cp * tp / (ep_width * etp))."""
        return self.stage_size // (self._width * self._etp)

    @property
    def expert_shards(self) -> int:
        """Devices one expert's weights are divided among x devices holding different experts (ep_width * etp)."""
        return self._width * self._etp

    def routed_rows(self, top_k: int, ffn: int) -> tuple[float, float]:
        """(routed token copies per micro-batch token, FFN width) one device's expert GEMMs see.

        A device routes tok/tp tokens (sequence parallel); its ETP group gathers the routed rows of its etp
        members, each computing a 1/etp slice of the FFN dim: rows = top_k * etp / tp, width = ffn / etp."""
        return top_k * self._etp / self.tp, ffn / self._etp

    def ep_node_span(self, ranks_per_node: int | None = None) -> tuple[int, int]:
        """(members of an EP group on one node, nodes the group spans), from the first EP group's ranks
        (members are ``etp`` apart inside a stage)."""
        rpn = ranks_per_node or self.ranks_per_node
        nodes: dict = {}
        for j in range(self._width):
            n = (j * self._etp) // rpn
            nodes[n] = nodes.get(n, 0) + 1
        return max(nodes.values()), len(nodes)

    @property
    def micro_batches(self) -> int:
        """Micro-batches per step per pipeline (gradient accumulation steps)."""
        return self.global_batch_size // (self.micro_batch_size * self.dp)

    @property
    def tokens_per_micro(self) -> int:
        """Tokens of one micro-batch on one CP rank (each TP rank of the group sees all of them)."""
        return self.micro_batch_size * self.seq_length // self.cp

    @property
    def experts_per_rank(self) -> int:
        return self.num_experts // self.ep_width if self.num_experts else 0

    @property
    def num_nodes(self) -> int:
        return -(-self.world // self.ranks_per_node)

    # ------------------------------------------------------------------ coordinates
    def rank_of(self, pp=0, dp=0, cp=0, tp=0) -> int:
        for n, v, size in (("pp", pp, self.pp), ("dp", dp, self.dp), ("cp", cp, self.cp), ("tp", tp, self.tp)):
            if not 0 <= v < size:
                raise ValueError(f"{n}={v} out of range [0, {size})")
        return ((pp * self.dp + dp) * self.cp + cp) * self.tp + tp

    def expert_rank_of(self, pp=0, edp=0, ep=0, etp=0) -> int:
        """Rank from expert coordinates (``ep`` in [0, ep_width), ``etp`` in [0, etp))."""
        if not 0 <= edp < self.edp or not 0 <= ep < self.ep_width or not 0 <= etp < self.etp:
            raise ValueError(f"expert coordinates (edp={edp}, ep={ep}, etp={etp}) out of range "
                             f"({self.edp}, {self.ep_width}, {self.etp})")
        local = (edp * self.ep_width + ep) * self.etp + etp
        return pp * self.stage_size + local

    def coord(self, rank: int) -> Coord:
        if not 0 <= rank < self.world:
            raise ValueError(f"rank {rank} out of range [0, {self.world})")
        tp = rank % self.tp
        cp = (rank // self.tp) % self.cp
        dp = (rank // (self.tp * self.cp)) % self.dp
        pp = rank // self.stage_size
        local = rank - pp * self.stage_size
        etp = local % self._etp
        edp, ep = divmod(local // self._etp, self._width)
        return Coord(rank=rank, pp=pp, dp=dp, cp=cp, tp=tp, edp=edp, ep=ep, etp=etp,
                     node=rank // self.ranks_per_node)

    def node_of(self, rank: int) -> int:
        return rank // self.ranks_per_node

    # ------------------------------------------------------------------ experts
    def experts_of(self, rank: int) -> range:
        """Global ids of the routed experts held by ``rank`` (contiguous block ``[r*E/W, (r+1)*E/W)``)."""
        n = self.experts_per_rank
        r = self.coord(rank).ep
        return range(r * n, (r + 1) * n)

    def expert_owner(self, expert: int) -> int:
        """EP rank (inside any EP group) that owns global expert ``expert``."""
        if not 0 <= expert < self.num_experts:
            raise ValueError(f"expert {expert} out of range [0, {self.num_experts})")
        return expert // self.experts_per_rank

    # ------------------------------------------------------------------ groups
    def _partition(self, key) -> list[tuple[int, ...]]:
        buckets: dict = {}
        for r in range(self.world):
            buckets.setdefault(key(self.coord(r)), []).append(r)
        return sorted(tuple(v) for v in buckets.values())

    @cached_property
    def _groups(self) -> dict:
        g = {
            "dp": self._partition(lambda c: (c.pp, c.cp, c.tp)),
            "tp": self._partition(lambda c: (c.pp, c.dp, c.cp)),
            "pp": self._partition(lambda c: (c.dp, c.cp, c.tp)),
            "cp": self._partition(lambda c: (c.pp, c.dp, c.tp)),
            "dp_cp": self._partition(lambda c: (c.pp, c.tp)),
            "ep": self._partition(lambda c: (c.pp, c.edp, c.etp)),
            "expert_dp": self._partition(lambda c: (c.pp, c.ep, c.etp)),
            "expert_tp": self._partition(lambda c: (c.pp, c.edp, c.ep)),
        }
        # Embedding group: first and last stage ranks with the same (dp, cp, tp); the input embedding is used on
        # stage 0 and again by the MTP module (and a tied LM head) on the last stage, so its gradient is summed
        # over this pair. A single-rank group when pp == 1.
        g["embedding"] = [tuple(sorted({grp[0], grp[-1]})) for grp in g["pp"]]
        return g

    def groups(self, kind: str) -> list[tuple[int, ...]]:
        """Every group of ``kind`` as sorted rank tuples; the groups of one kind partition the world
        (``embedding`` excepted: it only covers the first and last stage).

        kinds: ``dp`` (dense replicas), ``tp``, ``pp``, ``cp``, ``dp_cp`` (dense gradient reduction when cp > 1),
        ``ep`` (expert-parallel all-to-all), ``expert_dp`` (replicas of the same experts: expert gradient
        reduction and the EP-replica optimizer shard), ``expert_tp`` (shards of one expert's FFN dim),
        ``embedding``.
        """
        if kind not in GROUP_KINDS:
            raise KeyError(f"unknown group kind '{kind}' (known: {', '.join(GROUP_KINDS)})")
        return list(self._groups[kind])

    def group_of(self, kind: str, rank: int) -> tuple[int, ...]:
        """The group of ``kind`` containing ``rank``."""
        for g in self.groups(kind):
            if rank in g:
                return g
        raise ValueError(f"rank {rank} is in no '{kind}' group")

    def rank_groups(self, rank: int) -> dict:
        """``{kind: ranks}`` for every group kind containing ``rank`` (what one process needs to create)."""
        out = {k: self.group_of(k, rank) for k in GROUP_KINDS if k != "embedding"}
        emb = [g for g in self.groups("embedding") if rank in g]
        if emb:
            out["embedding"] = emb[0]
        return out

    # ------------------------------------------------------------------ hierarchical all-to-all
    def hierarchical_split(self, ep_group) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
        """Split one EP group into (inner, outer) groups by node.

        inner: the members on one node, one group per node, in node order (intra-node all-to-all).
        outer: ``outer[j]`` holds the j-th member of every node (inter-node AllGather).
        Raises ConfigError when the nodes hold different numbers of members.
        """
        by_node: dict = {}
        for r in sorted(ep_group):
            by_node.setdefault(self.node_of(r), []).append(r)
        inner = [tuple(by_node[n]) for n in sorted(by_node)]
        sizes = {len(g) for g in inner}
        if len(sizes) != 1:
            raise ConfigError(
                f"parallel.hierarchical_alltoall: EP group {_short(ep_group)} has an unequal number of members per "
                f"node ({', '.join(f'node {n}: {len(by_node[n])}' for n in sorted(by_node))}) with "
                f"ranks_per_node={self.ranks_per_node}")
        k = sizes.pop()
        outer = [tuple(g[j] for g in inner) for j in range(k)]
        return inner, outer

    def hierarchical_groups(self) -> dict:
        """``{"inner": [...], "outer": [...]}`` over every EP group of the world."""
        inner, outer = [], []
        for g in self.groups("ep"):
            i, o = self.hierarchical_split(g)
            inner += i
            outer += o
        return {"inner": sorted(inner), "outer": sorted(outer)}

    def hierarchical_of(self, rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(inner group, outer group) of ``rank``."""
        inner, outer = self.hierarchical_split(self.group_of("ep", rank))
        return (next(g for g in inner if rank in g), next(g for g in outer if rank in g))

    # ------------------------------------------------------------------ misc
    def summary(self) -> dict:
        return {
            "world": self.world, "dp": self.dp, "tp": self.tp, "pp": self.pp, "vpp": self.vpp, "cp": self.cp,
            "ep": self.ep, "etp_setting": self.etp_setting, "tp_extend_ep": self.tp_extend_ep,
            "stage_size": self.stage_size,
            "ep_width": self.ep_width, "expert_tp": self.etp, "expert_dp": self.edp,
            "experts_per_rank": self.experts_per_rank, "ranks_per_node": self.ranks_per_node,
            "num_nodes": self.num_nodes,
        }


def group_name(kind: str, ranks) -> str:
    """Deterministic communication-group name for ``create_group`` (identical on every member rank)."""
    ranks = tuple(int(r) for r in ranks)
    if len(ranks) <= 8:
        tag = "-".join(map(str, ranks))
    else:
        tag = f"{ranks[0]}x{len(ranks)}_" + hashlib.sha1(",".join(map(str, ranks)).encode()).hexdigest()[:10]
    return f"pangu_{kind}_{tag}"


def _short(ranks) -> str:
    ranks = list(ranks)
    return str(ranks) if len(ranks) <= 8 else f"[{ranks[0]}, {ranks[1]}, ..., {ranks[-1]}] ({len(ranks)} ranks)"


def pipeline_schedule(cfg) -> str:
    """The pipeline schedule the layout runs: ``sim.pp_schedule``, with ``auto`` = interleaved when vpp > 1, else
    1F1B (and interleaved = 1F1B when there is one virtual stage per stage)."""
    p, schedule = cfg.parallel, cfg.sim.pp_schedule
    if schedule == "auto":
        schedule = "interleaved" if p.vpp > 1 else "1f1b"
    if schedule == "interleaved" and p.vpp == 1 and p.pp > 1:
        schedule = "1f1b"
    return schedule


# ---------------------------------------------------------------------- validation
def layout_problems(cfg, world_size: int | None = None) -> list[str]:
    """Every violation of the layout checks that :func:`pangu_ms.config.validate_config` does not make,
    one readable one-line message each (empty list = valid).

    ``world_size``: the launch's world size (msrun ``--worker_num``), if known; it must equal dp*tp*pp*cp.
    The basic checks (world = dp*tp*pp*cp vs device_num, num_experts % width, width | dp*tp, heads % tp,
    layers vs pp*vpp, micro-batches >= pp, cp | seq) live in ``config/validate.py`` and are not repeated.
    """
    p, m, e, t = cfg.parallel, cfg.model, cfg.moe, cfg.train
    out: list[str] = []
    bad_degree = [n for n in ("dp", "tp", "pp", "cp", "ep", "vpp", "ranks_per_node", "micro_batch_size")
                  if getattr(p, n) <= 0]
    if bad_degree:
        return [f"parallel.{n}: must be > 0, got {getattr(p, n)}" for n in bad_degree]
    world = p.world_size
    if world_size is not None and world_size != world:
        out.append(f"parallel: launched with {world_size} ranks but dp*tp*pp*cp = {p.dp}*{p.tp}*{p.pp}*{p.cp} "
                   f"= {world}")
    # expert grid (config/expert_grid.py)
    grid_problem = expert_grid_problem(p.dp, p.cp, p.tp, p.ep, p.etp, p.tp_extend_ep) if e.enabled else None
    if grid_problem:
        out.append(grid_problem)
    etp = 1 if grid_problem or not e.enabled else p.expert_grid()[1]
    etp_key = "tp" if p.etp is None else "etp"
    # tensor-parallel divisibility of every sharded dimension
    if p.tp > 1:
        if m.vocab_size % p.tp:
            out.append(f"parallel.tp: model.vocab_size={m.vocab_size} is not divisible by tp={p.tp} "
                       f"(vocab-parallel embedding / LM head)")
        has_dense_ffn = m.num_dense_layers > 0 or not e.enabled
        if has_dense_ffn and m.dense_ffn_hidden % p.tp:
            out.append(f"parallel.tp: model.dense_ffn_hidden={m.dense_ffn_hidden} is not divisible by tp={p.tp}")
        if e.enabled and e.num_shared_experts and (e.num_shared_experts * e.expert_ffn_hidden) % p.tp:
            out.append(f"parallel.tp: shared-expert width num_shared_experts*expert_ffn_hidden="
                       f"{e.num_shared_experts * e.expert_ffn_hidden} is not divisible by tp={p.tp}")
        if m.attention_type == "gqa" and m.num_kv_heads % p.tp:
            out.append(f"parallel.tp: model.num_kv_heads={m.num_kv_heads} is not divisible by tp={p.tp}")
    if e.enabled and etp > 1 and e.expert_ffn_hidden % etp:
        out.append(f"parallel.{etp_key}: moe.expert_ffn_hidden={e.expert_ffn_hidden} is not divisible by "
                   f"{etp_key}={etp} (experts are tensor-parallel over etp={etp}; set parallel.etp to a divisor, "
                   f"e.g. parallel.etp=1)")
    if e.enabled and etp != p.tp and e.dispatcher == "drop_and_pad" and not grid_problem:
        key = "tp_extend_ep" if p.tp_extend_ep else "etp"
        out.append(f"parallel.{key}: expert TP etp={etp} != tp={p.tp} needs moe.dispatcher=dropless (the "
                   f"re-factored expert groups use grouped GEMM without drop-and-pad)")
    if not e.enabled and p.tp_extend_ep and p.tp > 1:
        out.append("parallel.tp_extend_ep: set but the model has no experts (moe.num_experts=0)")
    if not e.enabled and p.etp not in (None, 1):
        out.append(f"parallel.etp: {p.etp} but the model has no experts (moe.num_experts=0)")
    # pipeline
    n_micro = t.global_batch_size // max(1, p.micro_batch_size * p.dp)
    if p.pp > 1 and p.vpp > 1 and n_micro % p.pp:
        out.append(f"train.global_batch_size: {n_micro} micro-batches per step is not a multiple of pp={p.pp} "
                   f"(the interleaved 1F1B schedule with vpp={p.vpp} needs that)")
    if cfg.sim.pp_schedule == "dualpipe" and (p.pp % 2 or p.vpp != 1):
        out.append(f"sim.pp_schedule: dualpipe needs an even pp and vpp=1 (got pp={p.pp}, vpp={p.vpp})")
    out += split_problems(cfg)
    out += stage_recompute_problems(cfg)
    # node geometry
    if p.tp > p.ranks_per_node:
        out.append(f"parallel.tp: {p.tp} > parallel.ranks_per_node={p.ranks_per_node}; a TP group must lie inside "
                   f"one node (TP collectives run on every layer; the simulator does not model TP across nodes)")
    if e.enabled and etp != p.tp and etp > p.ranks_per_node:
        out.append(f"parallel.etp: {etp} > parallel.ranks_per_node={p.ranks_per_node}; an expert-TP group must "
                   f"lie inside one node")
    # hierarchical all-to-all
    if p.hierarchical_alltoall and e.enabled and not grid_problem:
        if world > p.ranks_per_node and world % p.ranks_per_node:
            out.append(f"parallel.ranks_per_node: world size {world} is not a multiple of ranks_per_node="
                       f"{p.ranks_per_node} (hierarchical_alltoall needs whole nodes)")
        elif p.expert_grid()[0] > 1:
            dims = ParallelDims.from_config(cfg)
            try:
                dims.hierarchical_split(dims.groups("ep")[0])
                for g in dims.groups("ep"):
                    dims.hierarchical_split(g)
            except ConfigError as err:
                out.append(str(err))
    return out


def layout_notes(cfg) -> list[str]:
    """Non-fatal remarks (settings that are legal but have no effect)."""
    p, e = cfg.parallel, cfg.moe
    notes = []
    grid_ok = e.enabled and not expert_grid_problem(p.dp, p.cp, p.tp, p.ep, p.etp, p.tp_extend_ep)
    width, etp = p.expert_grid() if grid_ok else (1, 1)
    if p.hierarchical_alltoall and (not e.enabled or width == 1):
        notes.append("parallel.hierarchical_alltoall: no effect (expert-parallel width is 1)")
    elif p.hierarchical_alltoall and grid_ok and p.world_size > 0:
        try:
            dims = ParallelDims.from_config(cfg)
            inner, outer = dims.hierarchical_split(dims.groups("ep")[0])
            if len(inner) == 1:
                notes.append(f"parallel.hierarchical_alltoall: each EP group lies on one node "
                             f"(ranks_per_node={p.ranks_per_node}); the hierarchical dispatch degenerates to flat")
        except ConfigError:
            pass
    if p.tp_extend_ep and p.tp == 1:
        notes.append("parallel.tp_extend_ep: no effect with tp=1")
    if grid_ok and p.etp is None and etp > 1:
        notes.append(f"parallel.etp: not set, so the routed experts are tensor-parallel over tp={etp} with EP width "
                     f"{width}; set parallel.etp (e.g. 1) to re-factor the expert grid independently of tp")
    if p.optimizer_shard and p.dp * p.cp == 1:
        notes.append("parallel.optimizer_shard: no effect with dp*cp=1 (no replicas to shard over)")
    if p.world_size > 4096:
        notes.append(f"parallel: world {p.world_size} > 4096, the range the MindSpore 2.9 docstring of "
                     f"set_auto_parallel_context(device_num=...) states (the 2.9 Python code only checks >= 1); "
                     f"verify on the target cluster")
    return notes


def validate_layout(cfg, world_size: int | None = None) -> ParallelDims:
    """Raise one :class:`ConfigError` for the first layout violation; return the :class:`ParallelDims`.

    Run after :func:`pangu_ms.config.validate_config` (the basic checks are there).
    """
    problems = layout_problems(cfg, world_size)
    if problems:
        raise ConfigError(problems[0])
    return ParallelDims.from_config(cfg)


def partitions_world(groups, world: int) -> bool:
    """True when ``groups`` are disjoint and cover ``range(world)``."""
    seen = [r for g in groups for r in g]
    return len(seen) == world and sorted(seen) == list(range(world))


__all__ = ["GROUP_KINDS", "Coord", "ParallelDims", "pipeline_schedule", "group_name", "layout_problems", "layout_notes",
           "validate_layout", "partitions_world"]
