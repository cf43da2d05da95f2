"""Expert placement table of one MoE layer (numpy).

``table[e]`` is the *physical slot* of logical expert ``e`` (the router's expert id): slot ``p`` lives on EP
member ``p // El`` at local index ``p % El`` (``El = E / W`` experts per member, ``W`` = EP width). The identity
table is the static layout of ``dims.experts_of`` (member j holds experts ``[j El, (j+1) El)``). Every EP group
uses the same table, so the replicas of a slot (the ``expert_dp`` group) always hold the same expert.

The table is the ``placement`` Parameter of the flat EP dispatcher (``ep_dispatcher.FlatEPDispatcher``), so it is
saved in ``model.safetensors`` with the weights whose layout it describes and restored with them on resume.
"""
from __future__ import annotations

import numpy as np


def identity(num_experts: int) -> np.ndarray:
    return np.arange(num_experts, dtype=np.int32)


def check_table(table, ep_width: int) -> np.ndarray:
    """``table`` as int32 after checking it is a permutation of the slots and E divides by ``ep_width``."""
    t = np.asarray(table)
    e = t.size
    if t.ndim != 1 or e % ep_width or sorted(t.tolist()) != list(range(e)):
        raise ValueError(f"not a placement table of {e} experts over {ep_width} EP ranks: {t.tolist()}")
    return t.astype(np.int32)


def members(table, ep_width: int) -> np.ndarray:
    """EP member holding each logical expert."""
    t = np.asarray(table)
    return t // (t.size // ep_width)


def experts_at_slots(table) -> np.ndarray:
    """Inverse table: the logical expert held by each physical slot."""
    t = np.asarray(table)
    inv = np.empty_like(t)
    inv[t] = np.arange(t.size, dtype=t.dtype)
    return inv


def table_from_members(member, ep_width: int, old_table=None) -> np.ndarray:
    """A table placing expert e on member ``member[e]`` (each member exactly E/W experts). Experts that stay on
    the member that held them in ``old_table`` keep their old local slot; the others fill the free slots in
    ascending order (so a member's unchanged experts never move in memory)."""
    member = np.asarray(member, np.int64)
    e = member.size
    el = e // ep_width
    if np.bincount(member, minlength=ep_width).tolist() != [el] * ep_width:
        raise ValueError(f"member assignment does not give every EP rank {el} experts: {member.tolist()}")
    table = np.full(e, -1, np.int64)
    used = np.zeros(e, bool)
    if old_table is not None:
        old = np.asarray(old_table, np.int64)
        for x in range(e):
            if old[x] // el == member[x]:
                table[x] = old[x]
                used[old[x]] = True
    for x in range(e):
        if table[x] < 0:
            free = next(p for p in range(member[x] * el, (member[x] + 1) * el) if not used[p])
            table[x] = free
            used[free] = True
    return table.astype(np.int32)


def moved_experts(old_table, new_table, ep_width: int) -> list[int]:
    """Logical experts whose EP member changes."""
    return [int(x) for x in np.nonzero(members(old_table, ep_width) != members(new_table, ep_width))[0]]


__all__ = ["identity", "check_table", "members", "experts_at_slots", "table_from_members", "moved_experts"]
