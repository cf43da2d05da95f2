"""The one list of recompute granularities, shared by training (``train.recompute``) and the simulator
(``sim.recompute``).

A granularity is ``none``, ``full`` (store only each decoder layer's input, re-run the whole layer), a named
preset, or a list of modules (each re-run in the backward pass instead of storing its intermediate tensors):

    norm           the decoder layer's RMSNorms (input / post-attention / pre-MLP / post-MLP), outputs included
    mla_up_proj    MLA's latent norms, q_b / kv_b up-projections, head split and the RoPE part: q, k, v are
                   re-computed from the stored latents (DeepSeek-V3)
    core_attn      the attention core (scores, softmax); its inputs q, k, v and its output are kept
    moe_act        SwiGLU activations of the routed experts (with the gate multiply) and of the shared expert
    mlp_act        the SwiGLU activation of the dense FFN (with moe_act: MindSpeed --recompute-activation-function)
    experts        the routed experts (fc1, activation, fc2; with the masked-dense dispatcher the folded shared
                   expert too)
    shared_expert  the shared expert (not separable where the masked-dense dispatcher folds it into the experts)
    mlp            the dense FFN of the dense layers
    mtp            the whole MTP module(s)

Presets (names the simulator has always used): ``selective`` = norm + mla_up_proj + moe_act + mlp_act (cheap
element-wise and up-projection recompute), ``moe_fine`` = selective + experts (MindSpeed "zero memory" style).
``auto`` (training: with ``train.memory_budget_gb``; simulator: the fastest that fits) picks from AUTO_ORDER.
"""
from __future__ import annotations

from .errors import ConfigError

RECOMPUTE_MODULES = ("norm", "mla_up_proj", "core_attn", "moe_act", "mlp_act", "experts", "shared_expert", "mlp",
                     "mtp")
RECOMPUTE_PRESETS = {
    "none": (),
    "selective": ("norm", "mla_up_proj", "moe_act", "mlp_act"),
    "moe_fine": ("norm", "mla_up_proj", "moe_act", "mlp_act", "experts"),
}
FULL = "full"
AUTO = "auto"
# candidates of ``auto``, cheapest (least re-run compute) first
AUTO_ORDER = ("none", "selective", "moe_fine", "full")


def recompute_names() -> tuple:
    """Every accepted string value (presets, ``full``, ``auto``)."""
    return tuple(RECOMPUTE_PRESETS) + (FULL, AUTO)


def parse_recompute(value, key: str, allow_auto: bool = True):
    """``value`` of recipe key ``key`` -> ``"full"``, ``"auto"`` or a frozenset of module names (empty = none).

    Accepts a preset / ``full`` / ``auto`` string, a comma-separated string of modules, or a list of modules.
    Anything else raises one ConfigError naming ``key`` and the value."""
    known = ", ".join(recompute_names())
    mods = ", ".join(RECOMPUTE_MODULES)
    if isinstance(value, str):
        v = value.strip()
        if v == FULL:
            return FULL
        if v == AUTO:
            if not allow_auto:
                raise ConfigError(f"{key}: 'auto' is not accepted here (resolve it first)")
            return AUTO
        if v in RECOMPUTE_PRESETS:
            return frozenset(RECOMPUTE_PRESETS[v])
        items = [s.strip() for s in v.split(",")] if "," in v else [v]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise ConfigError(f"{key}: expected one of {known} or a list of modules ({mods}), got {value!r}")
    out = []
    for item in items:
        if not isinstance(item, str) or item not in RECOMPUTE_MODULES:
            hint = " ('full' / presets are not list items)" if item in recompute_names() else ""
            raise ConfigError(f"{key}: unknown recompute module {item!r} in {value!r}{hint}; expected "
                              f"{known} or a list of modules from {mods}")
        out.append(item)
    return frozenset(out)


def recompute_label(spec) -> str:
    """Short name of a parsed granularity (a preset name when the module set equals one)."""
    if isinstance(spec, str):
        return spec
    for name, mods in RECOMPUTE_PRESETS.items():
        if spec == frozenset(mods):
            return name
    return "+".join(m for m in RECOMPUTE_MODULES if m in spec)


def check_recompute_applies(cfg, spec, key: str = "train.recompute") -> None:
    """One ConfigError when a module of ``spec`` (parsed) has nothing to act on in ``cfg``'s model, or cannot be
    separated from another one (the model-side twin of this check is ``pangu_ms/model/recompute.py``)."""
    if isinstance(spec, str):                       # full / auto
        return
    m, e = cfg.model, cfg.moe
    moe_layers = e.enabled and m.num_layers > m.num_dense_layers
    dense_layers = m.num_dense_layers > 0 or not e.enabled
    why = {"mla_up_proj": None if m.attention_type == "mla" else f"model.attention_type is {m.attention_type}, "
                                                                    "not mla",
           "moe_act": None if moe_layers else "the model has no MoE layers",
           "experts": None if moe_layers else "the model has no MoE layers",
           "shared_expert": None if moe_layers and e.num_shared_experts > 0 else "moe.num_shared_experts is 0 "
                                                                                 "(or no MoE layers)",
           "mlp": None if dense_layers else "the model has no dense FFN layers (model.num_dense_layers is 0)",
           "mlp_act": None if dense_layers else "the model has no dense FFN layers (model.num_dense_layers is 0)",
           "mtp": None if m.mtp_depth > 0 else "model.mtp_depth is 0"}
    for mod in sorted(spec):
        if why.get(mod):
            raise ConfigError(f"{key}: module {mod!r} has nothing to recompute ({why[mod]})")
    folded = e.dispatcher == "dropless" and e.resolved_dropless_impl() == "masked_dense"
    if "shared_expert" in spec and folded and "experts" not in spec:
        raise ConfigError(f"{key}: 'shared_expert' cannot be recomputed on its own with the masked-dense "
                          "dispatcher (moe.dropless_impl resolves to masked_dense), which folds the shared expert "
                          "into the routed-expert matmuls; use 'experts' (covers both) or "
                          "moe.dropless_impl=sorted_block")


def resolve_recompute(cfg, value, key: str = "train.recompute"):
    """``value`` parsed for ``cfg``'s model: a preset keeps only the modules that have something to act on
    (``selective`` on a GQA model has no ``mla_up_proj``); an explicit list must apply as written."""
    spec = parse_recompute(value, key)
    if isinstance(spec, str):
        return spec
    if isinstance(value, str) and value.strip() in RECOMPUTE_PRESETS:
        keep = []
        for mod in spec:
            try:
                check_recompute_applies(cfg, frozenset([mod]), key)
                keep.append(mod)
            except ConfigError:
                pass
        return frozenset(keep)
    check_recompute_applies(cfg, spec, key)
    return spec
