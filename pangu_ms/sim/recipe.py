"""The training recipe of an estimate: the layout and pipeline split the simulator chose, written so that
``tools/show_plan.py --config`` and ``run/train.py --config`` run exactly that.

The recipe is the estimate's resolved config (dp derived from the cluster size, ``parallel.ranks_per_node`` from
the hardware profile, the recompute granularity ``sim.recompute: auto`` settled on) with the split made explicit:
``parallel.pipeline_split: explicit`` and ``parallel.layers_per_virtual_stage`` = the counts the simulator used,
so training needs no cost model to reproduce it.
"""
from __future__ import annotations

import dataclasses

import yaml

from ..config.loader import to_dict
from ..config.schema import Config
from .estimate import Estimate


def training_recipe(est: Estimate) -> Config:
    """The estimate's config with its split written out (``pipeline_split: explicit``)."""
    cfg = est.config
    counts = list(est.details["layers_per_virtual_stage"])
    return dataclasses.replace(cfg, parallel=dataclasses.replace(
        cfg.parallel, pipeline_split="explicit", layers_per_virtual_stage=counts))


def write_recipe(est: Estimate, path: str, source: str = "") -> Config:
    """Write :func:`training_recipe` to ``path`` (YAML, a comment header saying where the split came from)."""
    cfg = training_recipe(est)
    d = est.details
    header = (f"# Emitted by tools/simulate.py from {source or 'a recipe'}: hardware {est.layout['hardware']}, "
              f"{est.devices} devices.\n"
              f"# Pipeline split chosen by the simulator: {d['stage_split']} -> "
              f"parallel.layers_per_virtual_stage {d['layers_per_virtual_stage']}.\n"
              f"# Estimate: step {est.step_time_s:.4g} s, MFU {100 * est.mfu:.2f}%, "
              f"{est.memory_per_device_gb:.2f} GiB per device ({'fits' if est.fits else 'OOM'}).\n")
    with open(path, "w", encoding="utf-8") as f:
        f.write(header)
        yaml.safe_dump(to_dict(cfg), f, sort_keys=False)
    return cfg
