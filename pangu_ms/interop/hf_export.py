"""pangu_ms checkpoint -> HF directory (config.json, ``model.safetensors.index.json``, shards), streamed.

The HF tensors are written in the order of :func:`~pangu_ms.model.hf_names.hf_tensors` (inventory order,
experts expanded), cut in shards of at most ``shard_size`` bytes (one tensor larger than that gets a shard of its
own); each shard's header is known before its first byte, so every tensor is read from the checkpoint, cut
(``hf_arrays``) and written straight away: memory holds one expert block or one dense tensor. Works on
one-process and expert-parallel checkpoints alike (the experts are read from the part that holds them).
"""
from __future__ import annotations

import json
import os
import re

import numpy as np

from ..config import load_config
from ..model.hf_config import config_json, export_warnings
from ..model.hf_names import check_format, hf_arrays, hf_tensors
from ..model.inventory import parameter_inventory
from .errors import ConversionError
from .safetensors_io import DTYPES, SafetensorsWriter, _SIZE
from .sources import INDEX, CheckpointSource

_UNITS = {"": 1, "B": 1, "KB": 10 ** 3, "MB": 10 ** 6, "GB": 10 ** 9, "TB": 10 ** 12, "KIB": 2 ** 10,
          "MIB": 2 ** 20, "GIB": 2 ** 30}


def parse_size(text: str) -> int:
    """``5GB`` / ``500MB`` / ``2GiB`` / ``1000`` -> bytes."""
    hit = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", str(text))
    if not hit or hit.group(2).upper() not in _UNITS or float(hit.group(1)) <= 0:
        raise ConversionError(f"--shard-size: '{text}' is not a size like 5GB, 500MB or 2GiB")
    return int(float(hit.group(1)) * _UNITS[hit.group(2).upper()])


def checkpoint_recipe(directory: str, config: str | None = None):
    """The recipe of a checkpoint directory: ``config`` if given, else ``<run>/config.yaml`` (the run directory
    above ``checkpoints/``, where training and the importer write it)."""
    if config is None:
        run = os.path.dirname(os.path.dirname(directory))
        config = os.path.join(run, "config.yaml")
        if not os.path.isfile(config):
            raise ConversionError(f"{directory}: no recipe at {config} (give --config)")
    return load_config(config)


def check_source(source: CheckpointSource, cfg) -> None:
    """Every inventory parameter in the checkpoint with the inventory's shape."""
    for p in parameter_inventory(cfg):
        if not source.has(p.name):
            raise ConversionError(f"{source.directory}: parameter '{p.name}' of the recipe's model is not in the "
                                  f"checkpoint (recipe and checkpoint differ)")
        if tuple(source.shape(p.name)) != tuple(p.shape):
            raise ConversionError(f"{source.directory}: parameter '{p.name}' has shape {list(source.shape(p.name))}"
                                  f" in the checkpoint, the recipe's model has {list(p.shape)}")


ROW_BLOCK_BYTES = 1 << 26      # whole-tensor reads go in row blocks of at most 64 MB


def row_blocks(shape: tuple, itemsize: int = 4):
    """``(start, stop)`` row ranges covering dim 0 of ``shape`` in pieces of at most ROW_BLOCK_BYTES."""
    rows = shape[0] if shape else 1
    step = max(1, ROW_BLOCK_BYTES // max(1, int(np.prod(shape[1:])) * itemsize))
    return [(a, min(rows, a + step)) for a in range(0, rows, step)] or [(0, 0)]


class TensorCutter:
    """HF tensor -> its array, reading each pangu chunk once (one chunk cached: gate and up of an expert);
    :meth:`pieces` gives the same array as consecutive row blocks (plain tensors are never read whole)."""

    def __init__(self, source: CheckpointSource, dtype):
        self.source, self.dtype, self.key, self.block = source, dtype, None, None

    def pieces(self, t):
        if t.layout in ("plain", "copy", "stack_rows") and len(t.shape) > 1:
            offset = t.index * t.shape[0] if t.layout == "stack_rows" else 0
            for a, b in row_blocks(t.shape):
                yield self.source.read(t.source, offset + a, offset + b)
        else:
            yield self(t)

    def __call__(self, t) -> np.ndarray:
        if t.layout == "zeros":
            return np.zeros(t.shape, np.float32)
        if t.layout in ("plain", "copy"):
            return self.source.read(t.source)
        if t.layout == "stack_rows":
            rows = t.shape[0]
            return self.source.read(t.source, t.index * rows, (t.index + 1) * rows)
        key = (t.source, t.expert)
        if key != self.key:
            self.key, self.block = key, self.source.read(t.source, t.expert, t.expert + 1)
        return hf_arrays(t.layout, self.block, 2 if t.layout == "expert_gate_up" else 1)[t.index]


def plan_shards(tensors, dtype: str, shard_size: int) -> list[list]:
    shards, size = [[]], 0
    for t in tensors:
        n = int(np.prod(t.shape)) * _SIZE[dtype]
        if shards[-1] and size + n > shard_size:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += n
    return shards


def export_hf(checkpoint: str, out_dir: str, fmt: str = "openpangu", mtp: bool = True, shard_size: int = 5 * 10 ** 9,
              dtype: str | None = None, config: str | None = None, log=print) -> dict:
    """Convert; returns the index (``{"metadata": {"total_size"}, "weight_map"}``)."""
    from tqdm import tqdm
    from ..train.checkpoint import resolve_checkpoint
    check_format(fmt)
    directory = resolve_checkpoint(checkpoint, "--checkpoint")
    cfg = checkpoint_recipe(directory, config)
    source = CheckpointSource(directory)
    check_source(source, cfg)
    tensors = hf_tensors(cfg, fmt, mtp)
    for line in export_warnings(cfg):
        log(f"warning: {line}")
    dtype = dtype or cfg.model.param_dtype
    st_dtype = DTYPES[dtype]
    os.makedirs(out_dir, exist_ok=True)
    shards = plan_shards(tensors, st_dtype, shard_size)
    cut = TensorCutter(source, dtype)
    weight_map, total = {}, 0
    bar = tqdm(total=len(tensors), desc="export", unit="tensor", disable=None)
    for k, shard in enumerate(shards):
        file = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        writer = SafetensorsWriter(os.path.join(out_dir, file), [(t.name, st_dtype, t.shape) for t in shard],
                                   {"format": "pt"})
        for t in shard:
            for piece in cut.pieces(t):
                writer.write(t.name, piece)
            weight_map[t.name] = file
            bar.update(1)
        writer.close()
        total += writer.total
    bar.close()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    with open(os.path.join(out_dir, INDEX), "w", encoding="utf-8") as f:
        json.dump(index, f, indent=2)
    with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config_json(cfg, fmt, mtp, dtype), f, indent=2)
    log(f"exported {directory} -> {out_dir}: {len(tensors)} tensors ({fmt}, {dtype}, "
        f"{'with' if mtp and cfg.model.mtp_depth else 'without'} MTP) in {len(shards)} shard(s), {total} bytes")
    return index


__all__ = ["export_hf", "parse_size", "checkpoint_recipe", "check_source", "plan_shards", "row_blocks", "TensorCutter"]
