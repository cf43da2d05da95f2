"""Apply the memory settings of the plan (``plan.context["memory"]``, ``pangu_ms/parallel/plan/memory.py``) to the
instantiated model and optimizer with MindSpore 2.9's own mechanisms, on Ascend; on CPU only as a dry run.

* ``recompute_layers``  -> ``Cell.recompute()`` on ``layers.{i}`` (per-stage full-layer recompute);
* ``offload``           -> ``Cell.offload(backward_prefetch=n)``: every Primitive *attribute* of the Cell (and its
  sub-Cells) is marked ``offload`` (``Primitive._offload``); the activations those primitives save for the
  backward are copied to host after the forward and prefetched n operators ahead in the backward. Functional ops
  (``ops.softmax(...)`` calls, no Primitive attribute) are not marked: in this model the marked ones are the
  MatMul / BatchMatMul primitives of the target (:func:`offload_primitive_counts` lists them);
* ``optimizer_state_device: CPU`` -> the AdamW moments (``adam_m.*`` / ``adam_v.*``, both optimizers of
  ``pangu_ms/train/optim.py`` name them so) get the ``parameter_device = "CPU"`` user data that
  ``Parameter(..., device="CPU")`` sets (MindSpore 2.9 ``common/parameter.py``; MindFormers 1.9 ``AdamW(swap=True)``
  creates its moments that way). Must run before the first compile, with ``MS_DEV_RUNTIME_CONF=switch_inline:False``.

On CPU host and device are the same memory: :func:`apply_swap` refuses (``AscendOnlyError``) unless ``dry_run``,
which resolves every target and reports what would be marked, changing nothing. The Ascend path is untested in
this repository (no Ascend device here).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from .apply_ascend import AscendOnlyError, PlanError, split_network

OPTIMIZER_STATE_PREFIXES = ("adam_m.", "adam_v.")


@dataclass
class SwapReport:
    recompute: list = field(default_factory=list)        # cell paths recomputed whole
    offload: list = field(default_factory=list)          # (cell path, backward_prefetch, primitives marked)
    optimizer_states: list = field(default_factory=list)  # Parameter names moved to host
    problems: list = field(default_factory=list)


def optimizer_states(optimizer) -> list:
    """The AdamW moment Parameters of ``optimizer`` (names ``adam_m.*`` / ``adam_v.*``)."""
    return [p for p in optimizer.get_parameters() if p.name.startswith(OPTIMIZER_STATE_PREFIXES)]


def offload_primitive_counts(cells: dict, paths) -> dict:
    """{cell path: number of Primitive attributes ``Cell.offload`` marks under it}."""
    return {p: len(cells[p]._get_prims_recursively()) for p in paths if p in cells}


def resolve_memory_plan(network, mem: dict, optimizer=None) -> SwapReport:
    """Resolve every target of ``mem`` in the instantiated model (and optimizer); nothing is changed."""
    model, _ = split_network(network)
    cells = dict(model.cells_and_names())
    rep = SwapReport()
    for i in mem["recompute_layers"]:
        path = f"layers.{i}"
        (rep.recompute.append(path) if path in cells else rep.problems.append(f"missing cell '{path}' "
                                                                              f"(recompute_layers)"))
    counts = offload_primitive_counts(cells, [o["cell"] for o in mem["offload"]])
    for o in mem["offload"]:
        if o["cell"] not in cells:
            rep.problems.append(f"missing cell '{o['cell']}' (offload)")
        elif counts[o["cell"]] == 0:
            rep.problems.append(f"cell '{o['cell']}' holds no Primitive attribute: Cell.offload would mark nothing")
        else:
            rep.offload.append((o["cell"], o["backward_prefetch"], counts[o["cell"]]))
    if mem["optimizer_state_device"]:
        if optimizer is None:
            rep.problems.append("optimizer_state_device is set, but no optimizer was passed")
        else:
            states = optimizer_states(optimizer)
            if not states:
                rep.problems.append(f"the optimizer has no {'/'.join(OPTIMIZER_STATE_PREFIXES)} Parameters")
            rep.optimizer_states = [p.name for p in states]
    return rep


def apply_swap(network, mem: dict, optimizer=None, dry_run: bool = False, strict: bool = True) -> SwapReport:
    """Apply ``mem`` (``plan.context["memory"]``) on Ascend; ``dry_run``: resolve and report only (any device)."""
    rep = resolve_memory_plan(network, mem, optimizer)
    if strict and rep.problems:
        raise PlanError("apply_swap: " + "; ".join(rep.problems[:10]))
    if dry_run:
        return rep
    import mindspore as ms
    target = ms.get_context("device_target")
    if target != "Ascend":
        raise AscendOnlyError(f"apply_swap is Ascend-only (device_target={target!r}): on CPU host and device are "
                              f"the same memory, so recompute-per-stage is the only setting with an effect and "
                              f"offload / host-resident Parameters have none; use dry_run=True to check the plan")
    for k, v in mem["env"].items():
        if os.environ.get(k) != v:
            raise AscendOnlyError(f"apply_swap: the optimizer-state swap needs {k}={v!r} in the environment "
                                  f"before MindSpore starts (got {os.environ.get(k)!r})")
    model, _ = split_network(network)
    cells = dict(model.cells_and_names())
    for path in rep.recompute:
        cells[path].recompute()
    for path, prefetch, _ in rep.offload:
        cells[path].offload(backward_prefetch=prefetch)
    if mem["optimizer_state_device"]:
        for p in optimizer_states(optimizer):
            p._set_user_data("parameter_device", mem["optimizer_state_device"])   # as Parameter(device=...)
    return rep
