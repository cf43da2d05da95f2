"""``train.recompute_layers_per_stage`` against the one pipeline split, and the layer sets it and ``train.swap`` name.

:func:`recompute_layer_indices` is the set of global decoder-layer indices recomputed whole because of the per-stage
counts (``pangu_ms/config/stage_recompute.py``), on the split of ``parallel.pipeline_split``
(:func:`pangu_ms.parallel.split.pipeline_split`); :func:`stage_recompute_problems` is the layout check
(``pangu_ms.parallel.dims.layout_problems`` runs it, like the split's own check).
"""
from __future__ import annotations

from ..config import ConfigError
from ..config.stage_recompute import KEY, parse_stage_counts, stage_count_problems, stage_recompute_layers
from ..config.swap import parse_swap_activations
from .split import COST_METHODS, pipeline_split, split_problems


def decoder_layers_per_virtual_stage(cfg) -> tuple:
    """Decoder layers (MTP excluded: every MTP module sits on the last virtual stage) of each virtual stage."""
    counts = list(pipeline_split(cfg).counts)
    counts[-1] -= cfg.model.mtp_depth
    return tuple(counts)


def recompute_layer_indices(cfg) -> frozenset:
    """Global decoder-layer indices recomputed whole by ``train.recompute_layers_per_stage`` (empty set when the
    key is empty). Raises ConfigError naming the key when the counts do not fit the split."""
    p = cfg.parallel
    counts = parse_stage_counts(cfg.train.recompute_layers_per_stage, p.pp * p.vpp)
    if not counts:
        return frozenset()
    return stage_recompute_layers(counts, decoder_layers_per_virtual_stage(cfg))


def stage_recompute_problems(cfg) -> list:
    """Problems of the per-stage counts against the split, and of layers listed in ``train.swap.layers`` that are
    also recomputed whole (such a layer stores only its input: nothing to swap; an empty ``train.swap.layers``
    means every layer that is not recomputed whole). Empty = valid. Splits that need the
    simulator's costs are checked once the simulator has made them explicit (tools/show_plan.py does)."""
    p = cfg.parallel
    try:
        counts = parse_stage_counts(cfg.train.recompute_layers_per_stage, p.pp * p.vpp)
    except ConfigError as e:
        return [str(e)]
    if not counts or p.pipeline_split in COST_METHODS or split_problems(cfg) \
            or cfg.model.num_layers + cfg.model.mtp_depth < p.pp * p.vpp:
        return []
    out = stage_count_problems(counts, decoder_layers_per_virtual_stage(cfg))
    if out:
        return out
    both = sorted(recompute_layer_indices(cfg) & set(cfg.train.swap.layers)) \
        if parse_swap_activations(cfg.train.swap.activations) else []
    if both:
        out.append(f"train.swap.activations: layers {both} are also recomputed whole by {KEY} (they store only "
                   f"their input, nothing to swap); drop them from train.swap.layers")
    return out


__all__ = ["decoder_layers_per_virtual_stage", "recompute_layer_indices", "stage_recompute_problems"]
