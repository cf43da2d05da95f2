"""Expert placement planner and trigger (numpy).

Greedy plan of one MoE layer (MindSpeed's rule): experts in order of decreasing predicted load (ties: lower
expert id first), each onto the EP rank with the least predicted load so far that still has a free slot (ties:
lower rank). The resulting groups are unlabeled, so they are then matched to the ranks that already hold most of
their experts (a maximum-overlap assignment), which minimises the experts that have to move; experts that stay
keep their local slot (``placement_table.table_from_members``).

Trigger (:func:`decide`): the layer migrates only if the plan lowers the predicted coefficient of variation of
the per-rank load by at least ``threshold`` (absolute) and by more than zero.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..moe.load_stats import cv, device_load
from .placement_table import members, moved_experts, table_from_members


def greedy_members(pred, ep_width: int) -> np.ndarray:
    """Group label (0..W-1) of every expert from the greedy heaviest-to-least-loaded rule (labels in order of
    first use, not yet matched to ranks)."""
    pred = np.asarray(pred, np.float64)
    e = pred.size
    el = e // ep_width
    order = sorted(range(e), key=lambda x: (-pred[x], x))
    load = np.zeros(ep_width)
    count = np.zeros(ep_width, np.int64)
    group = np.empty(e, np.int64)
    for x in order:
        free = [d for d in range(ep_width) if count[d] < el]
        d = min(free, key=lambda d: (load[d], d))
        group[x] = d
        load[d] += pred[x]
        count[d] += 1
    return group


def plan_table(pred, old_table, ep_width: int) -> np.ndarray:
    """The new table of one layer from the predicted load ``pred`` [E] and the current table."""
    group = greedy_members(pred, ep_width)
    old_member = members(old_table, ep_width)
    overlap = np.zeros((ep_width, ep_width))
    for x in range(group.size):
        overlap[group[x], old_member[x]] += 1.0
    rows, cols = linear_sum_assignment(-overlap)          # group -> rank with the largest total overlap
    rank_of_group = np.empty(ep_width, np.int64)
    rank_of_group[rows] = cols
    return table_from_members(rank_of_group[group], ep_width, old_table)


@dataclass
class Decision:
    layer: int
    cv_before: float          # predicted per-rank load CV under the current table
    cv_after: float           # ... under the planned table
    migrate: bool
    table: np.ndarray         # the planned table (the current one when not migrating)
    moved: list               # logical experts changing rank


def decide(layer: int, pred, old_table, ep_width: int, threshold: float) -> Decision:
    new = plan_table(pred, old_table, ep_width)
    before = cv(device_load(pred, old_table, ep_width))
    after = cv(device_load(pred, new, ep_width))
    moved = moved_experts(old_table, new, ep_width)
    gain = before - after
    go = bool(moved) and gain > 1e-12 and gain >= threshold
    return Decision(layer, before, after, go, new if go else np.asarray(old_table, np.int32), moved if go else [])


def is_check_step(completed_steps: int, interval: int) -> bool:
    """A placement check runs after every ``interval``-th optimizer step (``completed_steps`` = steps done)."""
    return completed_steps > 0 and completed_steps % interval == 0


__all__ = ["greedy_members", "plan_table", "Decision", "decide", "is_check_step"]
