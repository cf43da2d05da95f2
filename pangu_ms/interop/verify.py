"""Tensor-by-tensor comparison of an HF directory with a pangu_ms checkpoint.

Each HF tensor of the mapping (the checkpoint recipe's model in the directory's format) is compared with the
piece of the pangu tensor it maps to, in row blocks: max abs difference (float32 arithmetic; float64 for small
blocks) and a checksum of each side (sha256 of the
float32 bytes, first 12 hex digits; equal checksums = bit-identical in float32). Unknown, missing and mis-shaped
tensors are errors (:func:`~pangu_ms.interop.hf_import.check_tensors`), never skipped; so is a config.json whose
model differs from the recipe's.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ..model.hf_config import detect_format, recipe_sections
from ..model.hf_names import hf_tensors
from .errors import ConversionError
from .hf_export import TensorCutter, check_source, checkpoint_recipe
from .hf_import import check_tensors
from .sources import CheckpointSource, HFDirectory


@dataclass(frozen=True)
class TensorCheck:
    name: str
    max_abs_diff: float
    hf_checksum: str
    pangu_checksum: str


def _check_config(hf: HFDirectory, fmt: str, cfg) -> None:
    sections, _ = recipe_sections(hf.config, fmt, f"{hf.path}/config.json")
    for section, values in sections.items():
        for key, value in values.items():
            if section == "model" and key in ("mtp_depth", "latent_norm_eps"):
                continue                      # checked through the tensors / not stored by HF
            ours = getattr(getattr(cfg, section), key)
            if ours != value:
                raise ConversionError(f"{hf.path}/config.json gives {section}.{key}={value}, the checkpoint's recipe "
                                      f"has {ours}")


def verify(hf_dir: str, checkpoint: str, fmt: str = "auto", config: str | None = None) -> list[TensorCheck]:
    from ..train.checkpoint import resolve_checkpoint
    hf = HFDirectory(hf_dir)
    directory = resolve_checkpoint(checkpoint, "--checkpoint")
    cfg = checkpoint_recipe(directory, config)
    fmt = detect_format(hf.config, f"{hf.path}/config.json") if fmt == "auto" else fmt
    _check_config(hf, fmt, cfg)
    source = CheckpointSource(directory)
    check_source(source, cfg)
    has_mtp = any(n.startswith(f"model.layers.{cfg.model.num_layers}.") for n in hf.names())
    tensors = hf_tensors(cfg, fmt, mtp=has_mtp)
    check_tensors(hf, tensors, fmt)
    cut = TensorCutter(source, cfg.model.param_dtype)
    out = []
    for t in tensors:
        if t.name not in hf.weight_map:            # optional copies / zero buffers the directory leaves out
            continue
        diff, mine, theirs, at = 0.0, hashlib.sha256(), hashlib.sha256(), 0
        for ours in cut.pieces(t):                 # row blocks of the pangu side, the same rows of the HF side
            rows = ours.shape[0] if ours.ndim else 1
            hf_rows = hf.read(t.name, at, at + rows) if ours.ndim else hf.read(t.name)
            at += rows
            ours = np.ascontiguousarray(ours, np.float32)
            hf_rows = np.ascontiguousarray(hf_rows, np.float32)
            if ours.size:
                delta = np.subtract(hf_rows, ours, dtype=np.float64 if ours.size < 1 << 16 else np.float32)
                diff = max(diff, float(np.max(np.abs(delta, out=delta))))
            mine.update(memoryview(ours.reshape(-1)).cast("B"))
            theirs.update(memoryview(hf_rows.reshape(-1)).cast("B"))
        out.append(TensorCheck(t.name, diff, theirs.hexdigest()[:12], mine.hexdigest()[:12]))
    return out


__all__ = ["TensorCheck", "verify"]
