"""Apply a recompute granularity (``train.recompute``; names in ``pangu_ms/config/recompute.py``) to a built
model with MindSpore's own mechanism, ``Cell.recompute()``: the marked Cells' forward is re-run in the backward
pass instead of keeping their intermediate tensors. The math is unchanged (same ops, same order).

Which Cells each module marks (per decoder layer, MTP layers included):

    full           whole_layer_cells(): every Cell of the layer but the MoE router      (outputs recomputed too)
                   (stored: the layer input, the post-attention residual, the router outputs)
    norm           input_norm, post_attn_norm, pre_mlp_norm, post_mlp_norm              (outputs recomputed too)
    mla_up_proj    attention.up_proj_cells(): q_a_norm, q_b_proj, q_heads, kv_latent, kv_a_norm, kv_b_proj,
                   kv_heads, rope                                                        (outputs recomputed too)
    core_attn      attention.core                                                        (its output is kept)
                   (full, core_attn, mtp: the recomputed cores' softmax is RecomputableSoftmax, whose
                   gradient autodiff derives; values and gradient bits are the same)
    moe_act        moe.experts.act + moe.experts.gate_scale, moe.shared_expert.act       (outputs recomputed too)
    mlp_act        mlp.act (dense layers)                                                (outputs recomputed too)
    experts        moe.experts (all its methods: the masked-dense all_experts or the per-group matmuls)
    shared_expert  moe.shared_expert (an error where the masked-dense dispatcher folds it into the experts)
    mlp            mlp (dense layers)
    mtp            the MTP module(s): enorm, hnorm, eh_proj + whole_layer_cells(layer)  (outputs recomputed too)

"outputs recomputed too" (``output_recompute=True``): a chain of such Cells is one recompute region, so neither
the tensors inside nor the ones passed between them are stored; only the region's inputs are. A Cell can be
configured once; fine modules are applied before the coarse ones that contain them (``experts`` after
``moe_act``, ``mtp`` and ``full`` last), which then leave the already configured Cells as they are.
"""
from __future__ import annotations

from ..config import ConfigError
from ..config.recompute import FULL, RECOMPUTE_MODULES, parse_recompute, recompute_label
from ..layers.explicit_broadcast import RecomputableSoftmax


def _layers(net) -> list:
    return list(net.layers) + [m.layer for m in net.mtp]


def _mark(cells, output: bool, marked: list, name: str) -> None:
    for cell in cells:
        if cell is None or getattr(cell, "_has_config_recompute", False):
            continue
        cell.recompute(output_recompute=output) if output else cell.recompute()
        marked.append(name)


def _module_cells(net, module: str) -> tuple[list, bool]:
    """(Cells to mark for ``module``, whether their outputs are recomputed too)."""
    layers = _layers(net)
    if module == "norm":
        return [getattr(ly, n, None) for ly in layers
                for n in ("input_norm", "post_attn_norm", "pre_mlp_norm", "post_mlp_norm")], True
    if module == "mla_up_proj":
        return [c for ly in layers if hasattr(ly.attention, "up_proj_cells") for c in ly.attention.up_proj_cells()], True
    if module == "core_attn":
        return [ly.attention.core for ly in layers], False
    moe = [ly.moe for ly in layers if ly.is_moe]
    if module == "moe_act":
        cells = [c for m in moe for c in (m.experts.act, m.experts.gate_scale)]
        return cells + [m.shared_expert.act for m in moe if m.has_shared and not m.fold_shared], True
    if module == "experts":
        return [m.experts for m in moe], False
    if module == "shared_expert":
        return [m.shared_expert for m in moe if m.has_shared], False
    if module == "mlp_act":
        return [ly.mlp.act for ly in layers if not ly.is_moe], True
    if module == "mlp":
        return [ly.mlp for ly in layers if not ly.is_moe], False
    if module == "mtp":
        return [c for m in net.mtp for c in [m.enorm, m.hnorm, m.eh_proj] + whole_layer_cells(m.layer)], True
    raise ConfigError(f"train.recompute: unknown recompute module {module!r}")


def _check_composes(net, modules) -> None:
    """Modules that have nothing to act on in this model, or cannot be separated, are one error each."""
    layers = _layers(net)
    moe = [ly.moe for ly in layers if ly.is_moe]
    need = {"mla_up_proj": any(hasattr(ly.attention, "up_proj_cells") for ly in layers),
            "moe_act": bool(moe), "experts": bool(moe), "shared_expert": any(m.has_shared for m in moe),
            "mlp": any(not ly.is_moe for ly in layers), "mlp_act": any(not ly.is_moe for ly in layers),
            "mtp": len(net.mtp) > 0}
    why = {"mla_up_proj": "model.attention_type is not mla", "moe_act": "the model has no MoE layers",
           "experts": "the model has no MoE layers", "shared_expert": "moe.num_shared_experts is 0",
           "mlp": "the model has no dense FFN layers", "mlp_act": "the model has no dense FFN layers",
           "mtp": "model.mtp_depth is 0"}
    for m in sorted(modules):
        if m in need and not need[m]:
            raise ConfigError(f"train.recompute: module {m!r} has nothing to recompute ({why[m]})")
    if "shared_expert" in modules and any(x.fold_shared for x in moe) and "experts" not in modules:
        raise ConfigError("train.recompute: 'shared_expert' cannot be recomputed on its own with the masked-dense "
                          "dispatcher, which folds the shared expert into the routed-expert matmuls; use "
                          "'experts' (covers both)")


def _recomputable_softmax(layers) -> None:
    """The attention cores of ``layers`` (about to be recomputed) take the softmax without a custom backward
    (same values, same gradient bits; ``layers/explicit_broadcast.py`` says why), and a query-chunked core its
    autodiff path instead of the blockwise backward (``layers/blockwise_attention.py``)."""
    for ly in layers:
        core = ly.attention.core
        if not isinstance(core.softmax, RecomputableSoftmax):
            core.softmax = RecomputableSoftmax()
        if hasattr(core, "blockwise_backward"):      # query-chunked: the autodiff path (no custom bprop)
            core.blockwise_backward = False
        if hasattr(core, "use_fused_softmax"):       # the fused CPU core: its reference path
            core.use_fused_softmax = False


def whole_layer_cells(layer) -> list:
    """The Cells of decoder layer ``layer`` that ``full`` recomputes: all but the MoE router (with its aux-loss
    statistics) and the two residual adds, chained with their outputs recomputed too, so the layer stores its
    input, the post-attention residual and the router's small [T, E] outputs.

    Why not ``layer.recompute()``: with the router inside the recomputed layer MindSpore 2.9 (CPU) kept about one
    [B, N, S, S] tensor more per MoE layer than without recompute (measured with tools/bench_memory.py at seq
    1024: 122 vs 91 MB per MoE layer; 26 MB with the aux loss off); with the router outside, 38% less step
    memory than no recompute on the same 3-layer model (docs/memory.md)."""
    cells = [layer.input_norm, layer.attention, getattr(layer, "post_attn_norm", None), layer.pre_mlp_norm]
    if layer.is_moe:
        cells += [layer.moe.dispatcher, layer.moe.experts, getattr(layer.moe, "shared_expert", None)]
    else:
        cells.append(layer.mlp)
    return cells + [getattr(layer, "post_mlp_norm", None)]


def _mark_whole(layers, marked: list, name: str) -> None:
    _recomputable_softmax(layers)
    for ly in layers:
        _mark(whole_layer_cells(ly), True, marked, name)


def apply_recompute(net, spec, whole_layers=frozenset()) -> list:
    """Mark the Cells of ``spec`` (a ``train.recompute`` value or its parsed form) on ``PanguForCausalLM``
    ``net``; returns the marked Cells' module names (one entry per Cell). ``auto`` must be resolved first.
    ``whole_layers``: decoder-layer indices recomputed whole first (``train.recompute_layers_per_stage``); the
    modules of ``spec`` then apply to the other layers (a Cell is configured once)."""
    rc = parse_recompute(spec, "train.recompute", allow_auto=False) if not isinstance(spec, frozenset) else spec
    marked: list = []
    if whole_layers:
        _mark_whole([ly for i, ly in enumerate(net.layers) if i in whole_layers], marked, FULL)
    if rc == FULL:
        _mark_whole(_layers(net), marked, FULL)
        return marked
    _check_composes(net, rc)
    if "core_attn" in rc:
        _recomputable_softmax(_layers(net))
    if "mtp" in rc:
        _recomputable_softmax([m.layer for m in net.mtp])
    for module in RECOMPUTE_MODULES:         # fine before coarse (the list's order)
        if module in rc:
            cells, output = _module_cells(net, module)
            _mark(cells, output, marked, module)
    net.recompute_label = recompute_label(rc)
    return marked
