"""Optimizer-state sharding (``optimizer_level=level1``) over the replicas of each parameter."""
from __future__ import annotations

import copy
from math import prod

from ..stages import StageAssignment
from .specs import TensorSpec


def _opt_group(replicas: int, shard_size: int) -> int:
    if shard_size > 0 and replicas % shard_size == 0:
        return shard_size
    return replicas


def _local_dim0(spec: TensorSpec, axis_sizes) -> int:
    return spec.shape[0] // spec.factors(axis_sizes)[0]


def _apply_opt_shard(params, axis_sizes, stage_size, shard_size, threshold_kb, enabled):
    total = 0
    for p in params:
        f = prod(p.spec.factors(axis_sizes))
        p.replicas = stage_size // f
        local = prod(p.spec.shape) // f
        p.opt_shard, p.opt_note = 1, ""
        if not enabled or p.replicas == 1:
            p.opt_note = "no replicas" if enabled else "optimizer_shard off"
        elif local * 4 < threshold_kb * 1024:
            p.opt_note = f"< {threshold_kb} KB threshold"
        else:
            g = _opt_group(p.replicas, shard_size)
            if _local_dim0(p.spec, axis_sizes) % g:
                p.opt_note = f"dim0 slice {_local_dim0(p.spec, axis_sizes)} not divisible by {g} replicas"
            else:
                p.opt_shard = g
        total += local // p.opt_shard
    return total


def _choose_shard_size(params, axis_sizes, stage_size, threshold_kb, counts):
    """Pick ``optimizer_weight_shard_size`` minimising per-device optimizer state (counts: pattern -> copies)."""
    cands = {-1}
    for p in params:
        r = stage_size // prod(p.spec.factors(axis_sizes))
        cands |= {s for s in range(2, r + 1) if r % s == 0}
    best = None
    for s in sorted(cands):
        ps = copy.deepcopy(params)
        _apply_opt_shard(ps, axis_sizes, stage_size, s, threshold_kb, True)
        per_dev = sum(prod(p.spec.shape) // prod(p.spec.factors(axis_sizes)) // p.opt_shard * counts.get(p.pattern, 1)
                      for p in ps)
        key = (per_dev, s != -1, s)
        if best is None or key < best[0]:
            best = (key, s)
    return best[1]


def _copies_per_stage(cfg, stages: StageAssignment, stage: int) -> dict:
    """Instances of dense / MoE decoder layers on physical ``stage``."""
    m = cfg.model
    items = [it for c in stages.stage_items(stage) for it in c if it.startswith("layers.")]
    n_dense = sum(1 for it in items if int(it.split(".")[1]) < m.num_dense_layers)
    n_moe = len(items) - n_dense
    return {"dense": n_dense, "moe": n_moe, "all": n_dense + n_moe}


def _heaviest_counts(cfg, stages, params, axis_sizes) -> dict:
    """pattern -> copies on the stage with the most decoder-layer parameters per device."""
    best = None
    for s in range(stages.pp):
        per = _copies_per_stage(cfg, stages, s)
        counts = {q.pattern: per.get(q.layers, 0) for q in params if q.layers != "none"}
        n = sum(prod(q.spec.shape) // prod(q.spec.factors(axis_sizes)) * counts[q.pattern] for q in params
                if q.layers != "none")
        if best is None or n > best[0]:
            best = (n, counts)
    return best[1]
