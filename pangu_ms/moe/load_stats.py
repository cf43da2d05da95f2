"""Expert-load statistics (numpy, host side; counts only).

Inputs are the tokens routed to each expert, *before any drop* (the router's top-k selection), summed over the
data-parallel ranks: ``load [n_moe_layers, E]`` as the training step returns it after the cross-rank sum, and
optionally the expert placement ``tables [n_moe_layers, E]`` (physical slot ``member * E/W + local slot`` of
every logical expert, see ``pangu_ms/parallel/placement_table.py``) with the EP width ``W``.

Per MoE layer ``i`` (keys of :func:`load_summary`, logged to metrics.jsonl and tensorboard):
    moe/layer<i>/tokens              routed (token, expert) pairs = tokens * top_k
    moe/layer<i>/load_max, load_min  max / min expert load over the mean
    moe/layer<i>/load_cv             coefficient of variation (population std / mean) of the expert load
    moe/layer<i>/device_cv           CV of the per-EP-rank load (sum of the loads of the experts a rank holds)
    moe/layer<i>/device_max_mean     max / mean of the per-EP-rank load (what the slowest rank costs)
Device loads are sums over the EP groups: with several EP groups (dp > ep) each member index aggregates the
same slot of every group.
"""
from __future__ import annotations

import numpy as np


def cv(x) -> float:
    """Coefficient of variation: population std / mean (0 for an all-zero vector)."""
    x = np.asarray(x, np.float64)
    m = x.mean()
    return float(x.std() / m) if m > 0 else 0.0


def device_load(load, table, ep_width: int) -> np.ndarray:
    """Per EP member: the sum of the loads of the experts placed on it. ``load`` [E] (or [L, E] with ``table``
    [L, E]); ``table[e]`` = physical slot of logical expert e; member = slot // (E / W)."""
    load = np.asarray(load, np.float64)
    table = np.asarray(table, np.int64)
    e = load.shape[-1]
    if e % ep_width:
        raise ValueError(f"{e} experts are not divisible by the EP width {ep_width}")
    member = table // (e // ep_width)
    if load.ndim == 1:
        return np.bincount(member, weights=load, minlength=ep_width)
    return np.stack([np.bincount(m, weights=row, minlength=ep_width) for m, row in zip(member, load)])


def load_summary(load, tables=None, ep_width: int = 1) -> dict:
    """The per-layer scalars listed in the module docstring (device keys only with ``ep_width`` > 1)."""
    load = np.asarray(load, np.float64)
    out = {}
    for i, row in enumerate(load):
        mean = row.mean()
        if mean <= 0:
            continue
        out[f"moe/layer{i}/tokens"] = float(row.sum())
        out[f"moe/layer{i}/load_max"] = float(row.max() / mean)
        out[f"moe/layer{i}/load_min"] = float(row.min() / mean)
        out[f"moe/layer{i}/load_cv"] = cv(row)
        if ep_width > 1:
            table = np.arange(row.size) if tables is None else np.asarray(tables)[i]
            dev = device_load(row, table, ep_width)
            out[f"moe/layer{i}/device_cv"] = cv(dev)
            out[f"moe/layer{i}/device_max_mean"] = float(dev.max() / dev.mean())
    return out


def read_expert_load(run_dir: str) -> list[dict]:
    """The ``expert_load.jsonl`` records of a run directory, one per logged step (the last one per step)."""
    import json
    import os
    path = os.path.join(run_dir, "expert_load.jsonl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no expert_load.jsonl in {run_dir} (a pangu_ms MoE run directory)")
    rows = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                try:
                    r = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
                rows[r["step"]] = r
    if not rows:
        raise ValueError(f"{path} is empty")
    return [rows[s] for s in sorted(rows)]


def measured_imbalance(records, ep_width: int | None = None) -> float:
    """Mean over logged steps and MoE layers of the per-EP-rank max/mean load (the simulator's
    ``sim.expert_imbalance``). ``ep_width`` None: the run's own EP width and placement tables; otherwise the
    static contiguous placement onto ``ep_width`` ranks (E must be divisible by it)."""
    vals = []
    for r in records:
        load = np.asarray(r["load"], np.float64)
        w = int(r.get("ep_width", 1)) if ep_width is None else ep_width
        if w <= 1:
            raise ValueError("the run has no expert parallelism: give an EP width to spread its experts over")
        for i, row in enumerate(load):
            table = r["tables"][i] if ep_width is None and "tables" in r else np.arange(row.size)
            dev = device_load(row, table, w)
            if dev.mean() > 0:
                vals.append(dev.max() / dev.mean())
    return float(np.mean(vals))


def per_expert_scalars(load) -> dict:
    """``moe_experts/layer<i>/e<j>``: tokens routed to expert j of layer i (tensorboard only)."""
    return {f"moe_experts/layer{i}/e{j}": float(v) for i, row in enumerate(np.asarray(load, np.float64))
            for j, v in enumerate(row)}


__all__ = ["cv", "device_load", "load_summary", "per_expert_scalars", "read_expert_load", "measured_imbalance"]
