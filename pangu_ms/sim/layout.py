"""The parallel layout the simulator evaluates, derived from a :class:`Config` and a cluster size.

``resolve_layout(cfg, devices)`` fills ``parallel.dp = devices / (tp * pp * cp)`` when a cluster size is given,
runs the project's ``validate_config`` and the simulator-only checks below, and returns a flat
:class:`Layout`. Every impossible layout raises :class:`LayoutError` (a ``ConfigError``) naming the key.

Group geometry (Megatron rank order: tp innermost, then cp, then dp, then pp):
* a TP group is ``tp`` consecutive ranks: inside one node when tp <= devices_per_node;
* the expert-parallel group has width ``W = tp * ep`` with ``tp_extend_ep`` (TP ranks first, then ep DP
  ranks), else ``W = ep`` DP ranks at stride tp;
* the DP group strides over tp * cp ranks, and PP stages are always on different nodes at scale.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..config.loader import ConfigError
from ..config.schema import Config
from ..config.validate import validate_config


class LayoutError(ConfigError):
    """An impossible parallel layout; the message starts with the offending key."""


@dataclass(frozen=True)
class Layout:
    devices: int
    dp: int
    tp: int
    pp: int
    vpp: int
    ep: int
    cp: int
    mbs: int
    seq: int
    global_batch: int
    n_micro: int            # micro-batches per step per pipeline
    tp_extend_ep: bool
    hierarchical_alltoall: bool
    optimizer_shard: bool
    devices_per_node: int
    schedule: str           # 1f1b | interleaved | dualpipe

    @property
    def ep_width(self) -> int:
        """Devices one MoE layer's expert set is spread over."""
        return self.ep * (self.tp if self.tp_extend_ep else 1)

    @property
    def expert_shards(self) -> int:
        """Devices one expert's weights are divided among x devices holding different experts (= tp * ep)."""
        return self.tp * self.ep

    @property
    def expert_dp(self) -> int:
        """Replicas of each expert shard (the expert gradients' reduction group)."""
        return max(1, self.dp * self.cp * self.tp // self.expert_shards)

    @property
    def tokens_per_micro(self) -> int:
        """Tokens of one micro-batch on one CP rank (each TP rank of the group sees all of them)."""
        return self.mbs * self.seq // self.cp


def _with_parallel(cfg: Config, **kw) -> Config:
    return dataclasses.replace(cfg, parallel=dataclasses.replace(cfg.parallel, **kw))


def apply_devices(cfg: Config, devices: int) -> Config:
    """Return cfg with ``parallel.dp`` derived from the cluster size."""
    p = cfg.parallel
    per_replica = p.tp * p.pp * p.cp
    if devices <= 0:
        raise LayoutError(f"sim.devices: must be > 0, got {devices}")
    if devices % per_replica:
        raise LayoutError(f"sim.devices: {devices} devices are not divisible by tp*pp*cp = "
                          f"{p.tp}*{p.pp}*{p.cp} = {per_replica}")
    return _with_parallel(cfg, dp=devices // per_replica, device_num=0)


def resolve_layout(cfg: Config, devices: int | None = None, devices_per_node: int | None = None,
                   validate: bool = True) -> tuple[Config, Layout]:
    """Check cfg (+ cluster size) and return ``(cfg_with_dp, Layout)``; raises LayoutError."""
    devices = devices or cfg.sim.devices or 0
    if devices:
        cfg = apply_devices(cfg, devices)
    p, s = cfg.parallel, cfg.sim
    if validate:
        try:
            validate_config(cfg)
        except LayoutError:
            raise
        except ConfigError as e:
            raise LayoutError(str(e)) from None
    dpn = devices_per_node or p.ranks_per_node
    if p.tp > dpn:
        raise LayoutError(f"parallel.tp: {p.tp} > devices_per_node={dpn}; TP across nodes is not modelled")
    schedule = s.pp_schedule
    if schedule == "auto":
        schedule = "interleaved" if p.vpp > 1 else "1f1b"
    if schedule == "interleaved" and p.vpp == 1 and p.pp > 1:
        schedule = "1f1b"
    if schedule == "dualpipe" and (p.pp % 2 or p.vpp != 1):
        raise LayoutError(f"sim.pp_schedule: dualpipe needs an even pp and vpp=1 (got pp={p.pp}, vpp={p.vpp})")
    if not 0.0 <= s.swap_activations <= 1.0:
        raise LayoutError(f"sim.swap_activations: must be in [0, 1], got {s.swap_activations}")
    if not 0.0 <= s.recompute_fraction <= 1.0:
        raise LayoutError(f"sim.recompute_fraction: must be in [0, 1], got {s.recompute_fraction}")
    if s.expert_imbalance < 1.0:
        raise LayoutError(f"sim.expert_imbalance: max/mean load is >= 1, got {s.expert_imbalance}")
    t = cfg.train
    n_micro = t.global_batch_size // (p.micro_batch_size * p.dp)
    return cfg, Layout(
        devices=p.world_size, dp=p.dp, tp=p.tp, pp=p.pp, vpp=p.vpp, ep=p.ep, cp=p.cp,
        mbs=p.micro_batch_size, seq=t.seq_length, global_batch=t.global_batch_size, n_micro=n_micro,
        tp_extend_ep=p.tp_extend_ep and cfg.moe.enabled, hierarchical_alltoall=p.hierarchical_alltoall,
        optimizer_shard=p.optimizer_shard, devices_per_node=dpn, schedule=schedule)
