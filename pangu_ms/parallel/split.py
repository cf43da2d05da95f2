"""The pipeline split: which decoder layers and MTP modules each virtual pipeline stage runs.

One function, :func:`pipeline_split`, read by the Ascend plan (``parallel/stages.py``) and by the simulator
(``sim/estimate.py``), chosen by the recipe key ``parallel.pipeline_split``:

* ``balanced`` (default): equal item counts, the lighter stages at the ends (:func:`chunk_sizes`); needs no costs.
* ``time_balanced``: the smallest largest-stage time for per-item times the caller passes (the simulator's).
* ``memory_aware``: the time-balanced split when it fits every device; otherwise the fastest split that fits
  (per-item times and memory from the caller); when nothing fits, the time-balanced split, marked
  ``time_balanced_oom``.
* ``explicit``: ``parallel.layers_per_virtual_stage`` as written (MindSpeed ``num_layer_list``), e.g. what
  ``tools/simulate.py estimate --emit-recipe`` writes.

Items, in model order: ``layers.0 .. layers.{L-1}``, ``mtp.0 .. mtp.{D-1}``. The embedding runs with the first
virtual stage; final norm + LM head with the last, which also holds every MTP module (they re-use the embedding
and the head), so the last stage has at least D items. Costs are per item, with the embedding folded into item 0
and final norm + LM head into the last decoder layer (D = 0) or into ``mtp.0``.

Only the simulator can compute costs (it sits above this layer), so ``time_balanced`` / ``memory_aware`` without
costs raise a :class:`ConfigError` naming the key; the recipe the simulator emits carries the explicit split.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import ConfigError
from ..config.schema import PIPELINE_SPLITS
from .partition import bounds_from_counts, device_bytes, memory_aware_partition, partition

#: Methods that need per-item costs from the caller.
COST_METHODS = ("time_balanced", "memory_aware")
KEY = "parallel.layers_per_virtual_stage"


def split_items(num_layers: int, mtp_depth: int) -> list[str]:
    """The items the split distributes, in model order."""
    return [f"layers.{i}" for i in range(num_layers)] + [f"mtp.{j}" for j in range(mtp_depth)]


def chunk_sizes(num_items: int, num_chunks: int) -> list[int]:
    """Items per virtual stage for ``balanced``: with ``q, r = divmod(N, C)``, r stages get q + 1 items and C - r
    get q, the lighter ones taken from the ends in the order last, first, second-to-last, second, ... (the last
    stage also computes the LM head, twice with MTP; the first holds the embedding and the most in-flight
    activations of 1F1B). Raises ValueError if a stage would be empty."""
    if num_chunks <= 0:
        raise ValueError(f"num_chunks must be > 0, got {num_chunks}")
    if num_items < num_chunks:
        raise ValueError(f"{num_items} layers cannot fill {num_chunks} virtual stages")
    q, r = divmod(num_items, num_chunks)
    sizes = [q + 1] * num_chunks
    ends = []
    lo, hi = 0, num_chunks - 1
    while lo <= hi:
        ends.append(hi)
        if lo != hi:
            ends.append(lo)
        lo, hi = lo + 1, hi - 1
    for c in ends[: num_chunks - r]:
        sizes[c] = q
    return sizes


@dataclass(frozen=True)
class ItemCosts:
    """Per-item costs (one entry per :func:`split_items` item) for the cost-driven methods.

    time: seconds per micro-batch (fwd + bwd + exposed communication). For ``memory_aware`` also: state_bytes
    (model states of the item on a device holding it), act_bytes (stored activations per micro-batch),
    transient_bytes (one micro-batch working set), devices (per device its ``(virtual stage, micro-batches in
    flight)`` pairs) and budget (bytes per device for all of that).
    """

    time: list
    state_bytes: list | None = None
    act_bytes: list | None = None
    transient_bytes: list | None = None
    devices: list | None = None
    budget: float = float("inf")


@dataclass(frozen=True)
class PipelineSplit:
    """Items per virtual stage and how they were chosen (``explicit``, ``balanced``, ``time_balanced``,
    ``memory_aware`` or ``time_balanced_oom``)."""

    counts: tuple
    method: str

    @property
    def bounds(self) -> list:
        """``(start, end)`` item range of each virtual stage."""
        return bounds_from_counts(self.counts)

    def describe(self) -> str:
        """The one line both tools print (simulate.py estimate, show_plan.py)."""
        return f"pipeline split ({self.method}): {KEY} = {list(self.counts)}"


def split_problems(cfg) -> list[str]:
    """Every problem of ``parallel.pipeline_split`` / ``parallel.layers_per_virtual_stage`` (empty = valid)."""
    p, m = cfg.parallel, cfg.model
    n_items, k, d = m.num_layers + m.mtp_depth, p.pp * p.vpp, m.mtp_depth
    counts = list(p.layers_per_virtual_stage)
    if p.pipeline_split != "explicit":
        if counts:
            return [f"{KEY}: {counts} is set, but parallel.pipeline_split is '{p.pipeline_split}'; set "
                    f"parallel.pipeline_split=explicit to use it, or remove it"]
        if n_items < k:
            return []                          # config/validate.py reports layers < pp*vpp
        if p.pipeline_split == "balanced" and d and chunk_sizes(n_items, k)[-1] < d:
            return [f"model.mtp_depth: {d} MTP modules do not fit the last virtual stage "
                    f"({chunk_sizes(n_items, k)[-1]} slots of {n_items} layers over pp*vpp={k}); the MTP block "
                    f"must sit on the last stage (set parallel.pipeline_split=explicit and {KEY})"]
        if p.pipeline_split in COST_METHODS and d and m.num_layers + 1 < k:
            return [f"parallel.pp: {m.num_layers} layers + the MTP block (one virtual stage) cannot fill "
                    f"pp*vpp={k} virtual stages"]
        return []
    out = []
    if not counts:
        return [f"{KEY}: required when parallel.pipeline_split is 'explicit' (pp*vpp={k} entries summing to "
                f"{m.num_layers} layers + {d} MTP)"]
    if len(counts) != k:
        out.append(f"{KEY}: {len(counts)} entries, but parallel.pp*vpp = {p.pp}*{p.vpp} = {k} virtual stages")
    if min(counts) < 1:
        out.append(f"{KEY}: every virtual stage needs >= 1 layer, got {counts}")
    if sum(counts) != n_items:
        out.append(f"{KEY}: sums to {sum(counts)}, but the model has {m.num_layers} layers + {d} MTP = {n_items}")
    elif d and counts[-1] < d:
        out.append(f"{KEY}: the last virtual stage has {counts[-1]} items, fewer than model.mtp_depth={d} (every "
                   f"MTP module sits on the last stage)")
    return out


def pipeline_split(cfg, costs: ItemCosts | None = None) -> PipelineSplit:
    """The split of ``cfg`` (see the module docstring); raises ConfigError naming the key on a bad request."""
    problems = split_problems(cfg)
    if problems:
        raise ConfigError(problems[0])
    p, m = cfg.parallel, cfg.model
    n_items, k, d = m.num_layers + m.mtp_depth, p.pp * p.vpp, m.mtp_depth
    method = p.pipeline_split
    if method == "explicit":
        return PipelineSplit(tuple(p.layers_per_virtual_stage), "explicit")
    if method == "balanced":
        return PipelineSplit(tuple(chunk_sizes(n_items, k)), "balanced")
    if costs is None:
        raise ConfigError(f"parallel.pipeline_split: '{method}' needs per-layer time and memory costs from the "
                          f"simulator; run `tools/simulate.py estimate --config <recipe> --emit-recipe out.yaml` "
                          f"(writes the explicit {KEY}) or use balanced / explicit")
    if len(costs.time) != n_items:
        raise ValueError(f"pipeline_split: {len(costs.time)} item costs for {n_items} items")
    # every MTP module (and, folded into mtp.0, the head) sits on the last stage: split them as one item
    times = _merge_tail(costs.time, d, sum)
    bounds = partition(times, k)
    how = "time_balanced"
    if method == "memory_aware":
        state, act = _merge_tail(costs.state_bytes, d, sum), _merge_tail(costs.act_bytes, d, sum)
        trans = _merge_tail(costs.transient_bytes, d, max)
        if max(device_bytes(bounds, state, act, trans, costs.devices)) > costs.budget:
            fitted = memory_aware_partition(times, state, act, trans, costs.devices, costs.budget)
            bounds, how = (bounds, "time_balanced_oom") if fitted is None else (fitted, "memory_aware")
    counts = [e - a for a, e in bounds]
    if d:
        counts[-1] += d - 1
    return PipelineSplit(tuple(counts), how)


def _merge_tail(values: list, mtp_depth: int, combine) -> list:
    if mtp_depth <= 1:
        return list(values)
    return list(values[:-mtp_depth]) + [combine(values[-mtp_depth:])]


__all__ = ["PIPELINE_SPLITS", "COST_METHODS", "ItemCosts", "PipelineSplit", "chunk_sizes", "split_items",
           "split_problems", "pipeline_split"]
