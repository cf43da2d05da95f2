"""Parameter layouts of the plan, read from the model's parameter inventory (``model/inventory.py``).

Every inventory entry becomes a pattern (``layers.{i}.<suffix>`` for decoder layers, ``mtp.{j}.<...>`` for the
MTP modules, the name itself for model-level tensors) with its TensorSpec: the inventory's ``tp_dim`` is split
over ``tp`` (dense mesh), a routed expert's ``expert_dim`` over ``ep`` (the EP width) and its FFN dim over ``etp``
when the expert-TP size is > 1 (expert mesh ``(edp, ep, etp)``, config/expert_grid.py).
"""
from __future__ import annotations

from ...model.inventory import ParamEntry, layer_entries, layer_template, parameter_inventory
from .specs import ParamPlan, TensorSpec


def spec_of(entry: ParamEntry, pattern: str, expert_tp: bool) -> TensorSpec:
    dims = [()] * len(entry.shape)
    mesh = "dense"
    if entry.expert_dim is not None:
        mesh = "expert"
        dims[entry.expert_dim] = ("ep",)
        if entry.tp_dim is not None and expert_tp:
            dims[entry.tp_dim] = ("etp",)
    elif entry.tp_dim is not None:
        dims[entry.tp_dim] = ("tp",)
    return TensorSpec(pattern, entry.shape, tuple(dims), mesh, entry.fused_halves)


def pattern_of(entry: ParamEntry) -> str:
    if entry.layer is not None:
        return f"layers.{{i}}.{entry.suffix}"
    if entry.mtp is not None:
        return "mtp.{j}." + entry.name[len(f"mtp.{entry.mtp}."):]
    return entry.name


def _where(cfg, suffix: str) -> str:
    """``all`` / ``dense`` / ``moe``: which decoder layers hold a tensor of this suffix."""
    in_dense = suffix in {t[0] for t in layer_template(cfg, False)}
    in_moe = cfg.moe.enabled and suffix in {t[0] for t in layer_template(cfg, True)}
    if in_dense and (in_moe or not cfg.moe.enabled):
        return "all"
    return "dense" if in_dense else "moe"


def layer_specs(cfg, expert_tp: bool) -> dict:
    """suffix -> (TensorSpec of ``layers.{i}.<suffix>``, where) for the tensors of the decoder layers."""
    out = {}
    for moe_layer in ((False, True) if cfg.moe.enabled else (False,)):
        for entry in _template_entries(cfg, moe_layer):
            if entry.suffix not in out:
                out[entry.suffix] = (spec_of(entry, pattern_of(entry), expert_tp), _where(cfg, entry.suffix))
    return out


def _template_entries(cfg, moe_layer: bool) -> list:
    return layer_entries(cfg, moe_layer, "layers.0.", layer=0)


def param_plans(cfg, expert_tp: bool) -> list[ParamPlan]:
    """One ParamPlan per parameter pattern (decoder-layer patterns once, with the layers that hold them)."""
    mtp_suffixes = {t[0] for t in layer_template(cfg, cfg.moe.enabled)}
    layers = layer_specs(cfg, expert_tp)
    out, seen = [], set()
    for entry in parameter_inventory(cfg):
        pattern = pattern_of(entry)
        if pattern in seen:
            continue
        seen.add(pattern)
        if entry.layer is not None:
            spec, where = layers[entry.suffix]
            out.append(ParamPlan(pattern, spec, layers=where, mtp=entry.suffix in mtp_suffixes))
        else:
            out.append(ParamPlan(pattern, spec_of(entry, pattern, expert_tp), layers="none", mtp=False))
    return out
