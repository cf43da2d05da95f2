"""The memory and layout sections of a MindFormers 1.9 YAML for a pangu_ms recipe (pure; imports no MindFormers).

``mindformers_sections(cfg)`` returns the sections a MindFormers ``run_mindformer.py`` YAML needs so that a
MindFormers 1.9 model (``LayerSetting`` in ``mindformers/parallel_core/training_graph/transformer/utils.py`` and
the legacy ``mindformers/models/utils.py``) splits, recomputes and swaps the same layers as the pangu_ms Ascend plan
(``pangu_ms/parallel/plan/memory.py``):

* ``parallel_config``: data_parallel / model_parallel / context_parallel / expert_parallel / pipeline_stage /
  micro_batch_num (MindFormers' ``optimizer_shard`` there is deprecated: ``parallel.enable_parallel_optimizer``).
* ``model.model_config``: ``offset`` (MindFormers splits ``num_layers // (pp*vpp) + offset[chunk][stage]`` decoder
  layers per virtual stage; written from pangu_ms's split so both place the same layers) and ``pp_interleave_num``.
* ``recompute_config.recompute``: ``train.recompute_layers_per_stage`` as MindFormers' per-stage counts (a list of
  pp ints; with vpp > 1 a list of vpp lists of pp ints, [chunk][stage]); ``True`` for ``train.recompute: full``.
  **With swap on, MindFormers reads the same key as global layer indices** (``_format_recompute_list_select_layer_
  index``), so then the layer indices of :func:`pangu_ms.parallel.stage_recompute.recompute_layer_indices` are
  written. Module granularities (``train.recompute: [norm, ...]``) map onto ``select_recompute`` patterns of the
  MindFormers model's own Cell names and are not written.
* ``swap_config``: ``swap``, ``default_prefetch`` (= ``train.swap.prefetch``), ``layer_swap`` (target ``layer``) and
  ``op_swap`` (other targets, as regex patterns of pangu_ms Cell names inside a decoder layer, matched by
  ``LayerSetting.set_pattern_swap``), each with the explicit list of global layer indices.
* ``optimizer.swap``: ``train.swap.optimizer_state`` (MindFormers ``AdamW(swap=True)`` keeps ``adam_m`` / ``adam_v``
  as ``Parameter(device="CPU")``), and ``env`` the environment that needs.
"""
from __future__ import annotations

import yaml

from ..config.stage_recompute import parse_stage_counts
from ..config.recompute import FULL, parse_recompute
from ..config.swap import SWAP_TARGETS, parse_swap_activations
from ..parallel.plan.memory import OPTIMIZER_SWAP_ENV, offload_cells
from ..parallel.stage_recompute import decoder_layers_per_virtual_stage, recompute_layer_indices


def _by_chunk(values, pp: int, vpp: int):
    """Per-virtual-stage values (virtual stage c = chunk c // pp on stage c % pp) in MindFormers' layout."""
    values = [int(v) for v in values]
    return values if vpp == 1 else [values[i * pp:(i + 1) * pp] for i in range(vpp)]


def layer_offset(cfg):
    """MindFormers ``offset`` reproducing pangu_ms's decoder layers per virtual stage."""
    p = cfg.parallel
    decoder = decoder_layers_per_virtual_stage(cfg)
    avg = cfg.model.num_layers // (p.pp * p.vpp)
    return _by_chunk([n - avg for n in decoder], p.pp, p.vpp)


def _swap_section(cfg) -> dict:
    s = cfg.train.swap
    targets = parse_swap_activations(s.activations)
    if not targets:
        return {"swap": False}
    cells = offload_cells(cfg)
    layer_swap, op_swap = [], []
    for t in targets:
        for path in SWAP_TARGETS[t]:
            if path:
                layers = [int(c.split(".")[1]) for c in cells if c.split(".", 2)[2:] == [path]]
                op_swap.append({"op_name": path.replace(".", r"\."), "backward_prefetch": s.prefetch,
                                "layers": layers})
            else:
                layers = [int(c.split(".")[1]) for c in cells if c.count(".") == 1]
                layer_swap.append({"backward_prefetch": s.prefetch, "layers": layers})
    return {"swap": True, "default_prefetch": s.prefetch, "layer_swap": layer_swap or None,
            "op_swap": op_swap or None}


def _recompute_value(cfg, swap_on: bool):
    p = cfg.parallel
    counts = parse_stage_counts(cfg.train.recompute_layers_per_stage, p.pp * p.vpp)
    if counts:
        return sorted(recompute_layer_indices(cfg)) if swap_on else _by_chunk(counts, p.pp, p.vpp)
    return parse_recompute(cfg.train.recompute, "train.recompute") == FULL


def mindformers_sections(cfg) -> dict:
    """The MindFormers YAML sections of ``cfg`` (see the module docstring)."""
    p, t = cfg.parallel, cfg.train
    swap = _swap_section(cfg)
    out = {
        "parallel": {"enable_parallel_optimizer": bool(p.optimizer_shard)},
        "parallel_config": {"data_parallel": p.dp, "model_parallel": p.tp, "context_parallel": p.cp,
                            "expert_parallel": p.ep, "pipeline_stage": p.pp,
                            "micro_batch_num": t.global_batch_size // (p.micro_batch_size * p.dp)},
        "recompute_config": {"recompute": _recompute_value(cfg, swap["swap"])},
        "swap_config": swap,
        "optimizer": {"type": "AdamW", "swap": bool(t.swap.optimizer_state)},
        "env": dict(OPTIMIZER_SWAP_ENV) if t.swap.optimizer_state else {},
    }
    if p.pp > 1:
        out["model"] = {"model_config": {"offset": layer_offset(cfg), "pp_interleave_num": p.vpp}}
    return out


def mindformers_yaml(cfg) -> str:
    """:func:`mindformers_sections` as YAML text (``env`` as a comment: it is not a MindFormers key)."""
    sec = mindformers_sections(cfg)
    env = sec.pop("env")
    head = "".join(f"# export {k}=\"{v}\"   (needed by optimizer.swap)\n" for k, v in env.items())
    if cfg.parallel.pp > 1 and cfg.model.mtp_depth and decoder_layers_per_virtual_stage(cfg)[-1] == 0:
        head += ("# note: the last virtual stage holds only the MTP module(s); MindFormers places MTP with the last "
                 "decoder layer (one virtual stage earlier)\n")
    return head + yaml.safe_dump(sec, sort_keys=False, default_flow_style=None)
