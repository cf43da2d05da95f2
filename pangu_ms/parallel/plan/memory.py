"""The memory settings of the Ascend plan: per-stage full-layer recompute and swapping (``plan.context["memory"]``).

Pure data from the config (no MindSpore import). :mod:`pangu_ms.parallel.apply_swap` turns it into MindSpore 2.9
calls on Ascend; :mod:`pangu_ms.integrations.mindformers_yaml` into MindFormers 1.9 YAML sections:

* ``recompute_layers``: global decoder-layer indices recomputed whole (``train.recompute_layers_per_stage`` on the
  pipeline split; ``Cell.recompute()`` on ``layers.{i}``).
* ``offload``: ``[{"cell": "layers.{i}[.<path>]", "backward_prefetch": n}]``, one entry per Cell whose forward
  activations are swapped out (``Cell.offload(backward_prefetch=n)``, graph mode, Ascend).
* ``optimizer_state_device``: ``"CPU"`` when the AdamW moments live in host memory (``Parameter(device="CPU")``,
  the mechanism of MindFormers' ``AdamW(swap=True)``), else ``None``; ``env``: the environment that needs
  (``MS_DEV_RUNTIME_CONF="switch_inline:False"``, MindFormers' AdamW docstring).
"""
from __future__ import annotations

from ...config.stage_recompute import parse_stage_counts
from ...config.swap import SWAP_TARGETS, parse_swap_activations, swapped_layers
from ..stage_recompute import decoder_layers_per_virtual_stage, recompute_layer_indices

#: environment MindSpore 2.9 needs for host-resident Parameters (MindFormers 1.9 core/optim/adamw.py docstring)
OPTIMIZER_SWAP_ENV = {"MS_DEV_RUNTIME_CONF": "switch_inline:False"}


def offload_cells(cfg) -> list:
    """Cell paths (relative to the model) whose activations ``train.swap.activations`` offloads, in layer order."""
    m, e = cfg.model, cfg.moe
    targets = parse_swap_activations(cfg.train.swap.activations)
    whole = recompute_layer_indices(cfg)
    out = []
    for i in swapped_layers(cfg):
        if i in whole:                          # recomputed whole: stores only its input
            continue
        moe = e.enabled and i >= m.num_dense_layers
        for t in targets:
            if (t == "mlp" and moe) or (t in ("experts", "shared_expert") and not moe):
                continue
            if t == "shared_expert" and e.num_shared_experts == 0:
                continue
            out += [f"layers.{i}.{path}" if path else f"layers.{i}" for path in SWAP_TARGETS[t]]
    return out


def memory_plan(cfg) -> dict:
    """``plan.context["memory"]`` of ``cfg`` (see the module docstring)."""
    p, s = cfg.parallel, cfg.train.swap
    counts = parse_stage_counts(cfg.train.recompute_layers_per_stage, p.pp * p.vpp)
    return {
        "recompute_layers_per_stage": list(counts),
        "decoder_layers_per_virtual_stage": list(decoder_layers_per_virtual_stage(cfg)),
        "recompute_layers": sorted(recompute_layer_indices(cfg)),
        "offload": [{"cell": c, "backward_prefetch": s.prefetch} for c in offload_cells(cfg)],
        "optimizer_state_device": "CPU" if s.optimizer_state else None,
        "env": dict(OPTIMIZER_SWAP_ENV) if s.optimizer_state else {},
    }


def memory_lines(mem: dict) -> list:
    """The plan printer's lines for ``plan.context["memory"]``."""
    lines = []
    if mem["recompute_layers_per_stage"]:
        lines.append(f"  per-stage full recompute {mem['recompute_layers_per_stage']} of decoder layers per virtual "
                     f"stage {mem['decoder_layers_per_virtual_stage']} -> layers {mem['recompute_layers']} "
                     f"(Cell.recompute)")
    else:
        lines.append("  per-stage full recompute: off")
    if mem["offload"]:
        cells = [o["cell"] for o in mem["offload"]]
        shown = ", ".join(cells[:4]) + (f", ... ({len(cells)} cells)" if len(cells) > 4 else "")
        lines.append(f"  activation swap: Cell.offload(backward_prefetch={mem['offload'][0]['backward_prefetch']}) "
                     f"on {shown}")
    else:
        lines.append("  activation swap: off")
    if mem["optimizer_state_device"]:
        lines.append(f"  optimizer-state swap: AdamW moments as Parameter(device={mem['optimizer_state_device']!r}); "
                     f"env {mem['env']}")
    else:
        lines.append("  optimizer-state swap: off")
    lines.append("  (Ascend only: on CPU host and device are the same memory; nothing of this is applied there)")
    return lines
