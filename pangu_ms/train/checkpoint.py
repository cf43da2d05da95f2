"""Atomic checkpoints with keep-last-N and automatic resume.

Layout under ``<output_dir>/checkpoints``::

    step_00000100/            one complete checkpoint
        model.safetensors     every Parameter of the train step: weights, AdamW moments, global step, buffers
        state.json            step, data position (= the step: the data sampler is a pure function of it),
                              model-shape fingerprint, config, format; written last
    step_00000100.tmp-<pid>/  a save in progress (never loaded)

A save writes into a temporary directory and renames it into place only once every file is flushed, so a
process killed mid-save leaves a ``.tmp-*`` directory that :func:`latest_checkpoint` ignores (and the next save
removes). Loading refuses a checkpoint whose model shape differs from the model being trained, naming the first
differing parameter. There is no hidden RNG to restore: weights are seeded, the model has no dropout, and
batches are a function of (seed, step, rank).
"""
from __future__ import annotations

import glob
import json
import os
import re
import shutil

import mindspore as ms

_STEP_DIR = re.compile(r"^step_(\d{8})$")


class CheckpointError(RuntimeError):
    pass


def shape_fingerprint(cell) -> dict:
    return {p.name: list(p.shape) for p in cell.get_parameters()}


def _fname(fmt: str) -> str:
    return "model.safetensors" if fmt == "safetensors" else "model.ckpt"


def save_checkpoint(cell, root: str, step: int, extra: dict | None = None, fmt: str = "safetensors",
                    keep_last: int = 3) -> str:
    """Save every Parameter of ``cell`` (model + optimizer) as checkpoint ``step``; returns its directory."""
    os.makedirs(root, exist_ok=True)
    for stale in glob.glob(os.path.join(root, "*.tmp-*")):
        shutil.rmtree(stale, ignore_errors=True)
    final = os.path.join(root, f"step_{step:08d}")
    tmp = f"{final}.tmp-{os.getpid()}"
    os.makedirs(tmp)
    ms.save_checkpoint(cell, os.path.join(tmp, _fname(fmt)), format=fmt)
    state = {"step": step, "format": fmt, "data_step": step, "shapes": shape_fingerprint(cell), **(extra or {})}
    with open(os.path.join(tmp, "state.json"), "w", encoding="utf-8") as f:
        json.dump(state, f)
        f.flush()
        os.fsync(f.fileno())
    if os.path.exists(final):
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(root)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(root: str) -> list[str]:
    """Complete checkpoints (a state.json present), oldest first."""
    if not os.path.isdir(root):
        return []
    out = []
    for name in os.listdir(root):
        m = _STEP_DIR.match(name)
        path = os.path.join(root, name)
        if m and os.path.isfile(os.path.join(path, "state.json")):
            out.append((int(m.group(1)), path))
    return [p for _, p in sorted(out)]


def latest_checkpoint(root: str) -> str | None:
    ckpts = list_checkpoints(root)
    return ckpts[-1] if ckpts else None


def read_state(path: str) -> dict:
    with open(os.path.join(path, "state.json"), encoding="utf-8") as f:
        return json.load(f)


def load_checkpoint(cell, path: str, strict_shapes: bool = True) -> dict:
    """Load checkpoint directory ``path`` into ``cell``; returns its state.json. Errors name the mismatch."""
    if not os.path.isdir(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    state_file = os.path.join(path, "state.json")
    if not os.path.isfile(state_file):
        raise CheckpointError(f"{path}: incomplete checkpoint (no state.json; a torn save?)")
    state = read_state(path)
    mine = shape_fingerprint(cell)
    theirs = state.get("shapes", {})
    if strict_shapes:
        for name, shape in mine.items():
            if name in theirs and list(theirs[name]) != list(shape):
                raise CheckpointError(f"{path}: parameter '{name}' has shape {theirs[name]} in the checkpoint "
                                      f"but {shape} in the model (different model shape)")
        missing = [n for n in mine if n not in theirs]
        if missing:
            raise CheckpointError(f"{path}: parameter '{missing[0]}' (and {len(missing) - 1} more) missing "
                                  f"from the checkpoint (different model?)")
    fmt = state.get("format", "safetensors")
    params = ms.load_checkpoint(os.path.join(path, _fname(fmt)), format=fmt)
    not_loaded, _ = ms.load_param_into_net(cell, params, strict_load=True)
    if strict_shapes and not_loaded:
        raise CheckpointError(f"{path}: parameters not loaded: {not_loaded[:5]}")
    return state
