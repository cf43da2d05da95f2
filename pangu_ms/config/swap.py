"""Tensor swapping (offload to host memory between uses) in the recipe: ``train.swap``.

What MindSpore 2.9 / MindFormers 1.9 provide, and what each key turns into (``pangu_ms/parallel/plan/memory.py``,
``pangu_ms/integrations/mindformers_yaml.py``; docs/swap.md):

    optimizer_state  the AdamW moments live in host memory and are brought to the device for the update:
                     MindSpore ``Parameter(..., device="CPU")`` (Ascend only), which is what MindFormers'
                     ``optimizer: {type: AdamW, swap: true}`` does for its ``adam_m`` / ``adam_v`` states; needs
                     ``MS_DEV_RUNTIME_CONF="switch_inline:False"``.
    activations      forward activations of the named Cells are offloaded after the forward and prefetched back
                     for the backward: MindSpore ``Cell.offload(backward_prefetch)`` (graph mode, Ascend); in
                     MindFormers ``swap_config`` (``layer_swap`` for whole layers, ``op_swap`` for patterns).
    prefetch         ``backward_prefetch``: how many operators ahead of its use the backward starts the copy
                     back (MindFormers ``default_prefetch``; 1 = one operator ahead).
    layers           the decoder layers (global indices) the activation swap applies to; empty = every decoder
                     layer that ``train.recompute_layers_per_stage`` does not recompute whole.

Activation targets (Cells of one decoder layer): ``layer`` (the whole decoder layer), ``core_attn`` (the attention
core), ``experts`` (routed experts), ``shared_expert`` and ``mlp`` (the dense FFN). On CPU host and device are the
same memory: none of this is applied there (the plan and the accounting are).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError
from .recompute import FULL, parse_recompute

#: activation swap target -> Cell path(s) inside one decoder layer (``layers.{i}.<path>``); '' is the layer itself
SWAP_TARGETS = {
    "layer": ("",),
    "core_attn": ("attention.core",),
    "experts": ("moe.experts",),
    "shared_expert": ("moe.shared_expert",),
    "mlp": ("mlp",),
}


@dataclass
class SwapConfig:
    """``train.swap``: offload to host memory between uses (Ascend only; see ``pangu_ms/config/swap.py``).

    Attributes:
        optimizer_state: keep the AdamW moments in host memory (``Parameter(device="CPU")``).
        activations: ``none`` or a list of targets (layer, core_attn, experts, shared_expert, mlp) whose
            forward activations are offloaded (``Cell.offload``).
        prefetch: ``backward_prefetch`` of the activation swap (operators ahead), an integer >= 1.
        layers: global decoder-layer indices the activation swap covers; empty = every decoder layer not
            recomputed whole by ``train.recompute_layers_per_stage``.
    """

    optimizer_state: bool = False
    activations: Any = "none"
    prefetch: int = 1
    layers: list[int] = field(default_factory=list)


def parse_swap_activations(value, key: str = "train.swap.activations") -> tuple:
    """``value`` -> tuple of targets in SWAP_TARGETS order (empty = none); one ConfigError naming ``key``."""
    known = ", ".join(SWAP_TARGETS)
    if value is None or value == "none" or value == []:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise ConfigError(f"{key}: expected 'none' or a list of targets ({known}), got {value!r}")
    for item in items:
        if not isinstance(item, str) or item not in SWAP_TARGETS:
            raise ConfigError(f"{key}: unknown swap target {item!r} in {value!r}; expected 'none' or a list of "
                              f"{known}")
    if len(set(items)) != len(items):
        raise ConfigError(f"{key}: a target is listed twice in {value!r}")
    return tuple(t for t in SWAP_TARGETS if t in items)


def swapped_layers(cfg) -> tuple:
    """Decoder-layer indices ``train.swap.layers`` names (all of them when empty; the plan leaves out the layers
    recomputed whole); empty when no activation is swapped."""
    s = cfg.train.swap
    if not parse_swap_activations(s.activations):
        return ()
    return tuple(sorted(s.layers)) if s.layers else tuple(range(cfg.model.num_layers))


def validate_swap(cfg) -> None:
    """Every check of ``train.swap`` that needs no pipeline split (one ConfigError naming the key)."""
    s, m, e = cfg.train.swap, cfg.model, cfg.moe
    if not isinstance(s.optimizer_state, bool):
        raise ConfigError(f"train.swap.optimizer_state: expected true/false, got {s.optimizer_state!r}")
    targets = parse_swap_activations(s.activations)
    if isinstance(s.prefetch, bool) or not isinstance(s.prefetch, int) or s.prefetch < 1:
        raise ConfigError(f"train.swap.prefetch: must be an integer >= 1 (operators ahead), got {s.prefetch!r}")
    if s.layers:
        if not targets:
            raise ConfigError(f"train.swap.layers: {list(s.layers)} is set, but train.swap.activations is none")
        bad = [i for i in s.layers if not 0 <= i < m.num_layers]
        if bad:
            raise ConfigError(f"train.swap.layers: {bad[0]} is not a decoder layer index in "
                              f"[0, {m.num_layers}) (model.num_layers)")
        if len(set(s.layers)) != len(s.layers):
            raise ConfigError(f"train.swap.layers: an index is listed twice in {list(s.layers)}")
    layers = set(swapped_layers(cfg))
    moe_layers = {i for i in layers if i >= m.num_dense_layers} if e.enabled else set()
    dense_layers = layers - moe_layers
    why = {"experts": None if moe_layers else "no MoE layer among the swapped layers",
           "shared_expert": None if moe_layers and e.num_shared_experts > 0 else
           "no MoE layer with a shared expert (moe.num_shared_experts) among the swapped layers",
           "mlp": None if dense_layers else "no dense FFN layer among the swapped layers"}
    for t in targets:
        if why.get(t):
            raise ConfigError(f"train.swap.activations: target {t!r} has nothing to swap ({why[t]})")
    if "layer" in targets and len(targets) > 1:
        raise ConfigError(f"train.swap.activations: 'layer' already swaps the whole decoder layer; drop the other "
                          f"targets {[t for t in targets if t != 'layer']}")
    rc = parse_recompute(cfg.train.recompute, "train.recompute")
    if targets and rc == FULL:
        raise ConfigError("train.swap.activations: train.recompute is 'full', so no decoder-layer activation is "
                          "stored to swap (MindFormers ignores such a swap); use one of the two")
    if targets and not isinstance(rc, str):
        both = sorted(set(targets) & set(rc))
        if both:
            raise ConfigError(f"train.swap.activations: {both} are also in train.recompute: a recomputed module "
                              f"stores nothing to swap; choose one per module")
