"""The expert grid of a layout: expert-parallel width and expert tensor-parallel size (MoE parallel folding).

Inside one pipeline stage the ``S = dp * cp * tp`` ranks run attention as ``(dp, cp, tp)`` and the MoE layers as
``(edp, ep, etp)`` over the same ranks (Megatron-Core "MoE parallel folding", arXiv 2504.14960)::

    EP x ETP x expert-DP = TP x CP x DP,    local index l = (edp * EP + ep) * ETP + etp   (etp fastest)

``EP`` (the expert-parallel width: the experts are split over EP ranks) and ``ETP`` (each expert's FFN dim is
split over ETP ranks) are independent of attention TP; the one requirement is ``EP * ETP | S``.

Config keys (``parallel.ep``, ``parallel.etp``, ``parallel.tp_extend_ep``):

* ``etp`` set: ``EP = ep``, ``ETP = etp``.
* ``etp`` unset (``null``, the default) keeps the two older layouts, which are special cases:
  ``tp_extend_ep: false`` is ``ETP = tp``, ``EP = ep``; ``tp_extend_ep: true`` (MindSpeed ``moe_tp_extend_ep``)
  is ``ETP = 1``, ``EP = ep * tp`` (``ep`` then counts EP ranks per TP group).
* both: ``tp_extend_ep: true`` admits only ``etp: 1`` (and ``EP`` stays ``ep * tp``); any other ``etp`` is a
  ConfigError naming both keys.

This module is the one definition; ``parallel/dims.py`` (rank grid, groups), ``config/validate.py``, the
simulator and the Ascend plan read ``ParallelDims.ep_width`` / ``ParallelDims.etp``, which come from here.
"""
from __future__ import annotations

from .errors import ConfigError


def expert_grid(dp: int, cp: int, tp: int, ep: int, etp: int | None = None,
                tp_extend_ep: bool = False) -> tuple[int, int]:
    """``(ep_width, etp)`` of a layout; raises :class:`ConfigError` (naming the key) when the grid cannot form."""
    problem = expert_grid_problem(dp, cp, tp, ep, etp, tp_extend_ep)
    if problem:
        raise ConfigError(problem)
    return expert_sizes(tp, ep, etp, tp_extend_ep)


def expert_sizes(tp: int, ep: int, etp: int | None = None, tp_extend_ep: bool = False) -> tuple[int, int]:
    """``(ep_width, etp)`` from the keys, without the divisibility checks (for messages that come first)."""
    if tp_extend_ep:
        return ep * tp, 1
    return ep, (tp if etp is None else etp)


def expert_grid_problem(dp: int, cp: int, tp: int, ep: int, etp: int | None = None,
                        tp_extend_ep: bool = False) -> str | None:
    """The first reason the expert grid cannot form, as a one-line message (None = valid)."""
    if isinstance(etp, bool) or (etp is not None and (not isinstance(etp, int) or etp <= 0)):
        return f"parallel.etp: must be an integer > 0 (or null: derived from tp and tp_extend_ep), got {etp!r}"
    if tp_extend_ep and etp is not None and etp != 1:
        return (f"parallel.etp / parallel.tp_extend_ep: etp={etp} contradicts tp_extend_ep=true (which is etp=1 "
                f"with EP width ep*tp); set parallel.tp_extend_ep=false to use etp={etp}, or drop parallel.etp")
    width, e = expert_sizes(tp, ep, etp, tp_extend_ep)
    stage = dp * cp * tp
    if stage % (width * e) == 0:
        return None
    if etp is None:
        # the derived layouts: ep*tp | dp*cp*tp  <=>  ep | dp*cp
        why = ("with tp_extend_ep the expert-parallel group is ep*tp consecutive ranks of a stage"
               if tp_extend_ep else
               f"etp is not set, so experts are tensor-parallel over tp={tp} and the expert-parallel group is "
               f"taken from the data ranks")
        hint = "" if tp_extend_ep or tp == 1 else (
            f"; to split the experts over ep={ep} ranks without tensor-parallel experts set parallel.etp=1 "
            f"(needs ep | dp*cp*tp={stage})")
        return f"parallel.ep: ep={ep} does not divide dp*cp={dp * cp}; {why}{hint}"
    return (f"parallel.ep: ep*etp = {ep}*{etp} = {ep * etp} does not divide dp*cp*tp = {dp}*{cp}*{tp} = {stage} "
            f"(the MoE layers re-factor the stage's ranks as expert-DP x EP x ETP)")


__all__ = ["expert_grid", "expert_grid_problem", "expert_sizes"]
