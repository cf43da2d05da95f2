"""HF directory (DeepSeek-V3 / openPangu naming) -> pangu_ms checkpoint directory, streamed.

``import_hf(hf_dir, out_dir, fmt)`` writes ``<out_dir>/config.yaml`` (the recipe: model / moe sections from
config.json, the rest defaults) and ``<out_dir>/checkpoints/step_00000000/`` (``model.safetensors`` with the
model weights in the model's parameter dtype, no optimizer state, plus ``manifest.json``), which
``stage.init_from=<out_dir>`` loads under any expert-parallel layout. Before a byte is written, the tensor set is
checked against the mapping of config.json: structure (layers, MTP layers, experts per layer), then every name
(unknown and missing tensors are errors) and every shape. Tensors are read one chunk at a time (an expert, a
dense matrix) and the output is written as they come, so memory holds about one tensor.
"""
from __future__ import annotations

import os
import re

import numpy as np

from ..config import dump_config, load_config
from ..config.errors import ConfigError
from ..model.hf_config import detect_format, recipe_sections
from ..model.hf_names import chunks, hf_tensors, pangu_block
from ..model.inventory import parameter_inventory
from .errors import ConversionError
from .hf_export import row_blocks
from .safetensors_io import DTYPES, SafetensorsWriter
from .sources import HFDirectory

_LAYER = re.compile(r"^model\.layers\.(\d+)\.")
_EXPERT = re.compile(r"^model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.")


def _structure(hf: HFDirectory, sections: dict, fmt: str, log) -> None:
    """Config/tensor mismatches as one error each; MTP depth follows the tensors (a config.json that promises
    MTP layers the files do not hold is reported, never silently accepted)."""
    m, e = sections["model"], sections["moe"]
    where = os.path.join(hf.path, "config.json")
    layers, experts = set(), {}
    for name in hf.names():
        if (hit := _LAYER.match(name)):
            layers.add(int(hit.group(1)))
        if (hit := _EXPERT.match(name)):
            experts.setdefault(int(hit.group(1)), set()).add(int(hit.group(2)))
    n = m["num_layers"]
    absent = sorted(set(range(n)) - layers)
    if absent:
        raise ConversionError(f"config/tensor mismatch: {where} says {n} layers, the tensors have no layer "
                              f"{absent[0]} ({len(absent)} layers absent)")
    mtp_found = sorted(i for i in layers if i >= n)
    if mtp_found != list(range(n, n + len(mtp_found))):
        raise ConversionError(f"config/tensor mismatch: layers {mtp_found} after the {n} of {where} are not "
                              f"consecutive MTP layers")
    key = "num_nextn_predict_layers" if fmt == "deepseek_v3" else "num_mtp_layers"
    if len(mtp_found) > m["mtp_depth"]:
        raise ConversionError(f"config/tensor mismatch: the tensors hold {len(mtp_found)} layers after the "
                              f"{n} main layers, {where} says {key}={m['mtp_depth']}")
    if len(mtp_found) < m["mtp_depth"]:
        log(f"note: {where} says {key}={m['mtp_depth']} but the tensors hold {len(mtp_found)} MTP layers "
            f"(HF transformers does not save them); importing with model.mtp_depth={len(mtp_found)}")
        m["mtp_depth"] = len(mtp_found)
    for layer, found in sorted(experts.items()):
        if len(found) != e["num_experts"] or max(found) != e["num_experts"] - 1:
            key = "n_routed_experts" if fmt == "deepseek_v3" else "num_routed_experts"
            raise ConversionError(f"config/tensor mismatch: layer {layer} holds {len(found)} routed experts "
                                  f"(ids {min(found)}..{max(found)}), {where} says {key}={e['num_experts']}")


def _expert_bias(hf: HFDirectory, sections: dict) -> bool:
    """DeepSeek-V3's ``e_score_correction_bias``: an expert bias unless every one is zero (HF always saves the
    buffer, so zeros mean a model without one)."""
    names = [n for n in hf.names() if n.endswith("mlp.gate.e_score_correction_bias")]
    return any(np.any(hf.read(n) != 0) for n in names)


def check_tensors(hf: HFDirectory, tensors, fmt: str) -> None:
    """Every HF tensor of the mapping present with its shape, nothing else: one error listing each kind."""
    expected = {t.name: t for t in tensors}
    optional = {t.name for t in tensors if t.layout in ("copy", "zeros")}
    present = set(hf.names())
    unknown = sorted(present - set(expected))
    if unknown:
        raise ConversionError(f"{hf.path}: {len(unknown)} tensor(s) not in the {fmt} mapping of its config.json, "
                              f"e.g. '{unknown[0]}' in {hf.file_of(unknown[0])}" +
                              (f" (also {', '.join(unknown[1:4])})" if len(unknown) > 1 else ""))
    missing = sorted(set(expected) - present - optional)
    if missing:
        raise ConversionError(f"{hf.path}: {len(missing)} tensor(s) of the {fmt} mapping missing, e.g. "
                              f"'{missing[0]}'" + (f" (also {', '.join(missing[1:4])})" if len(missing) > 1 else ""))
    for name in sorted(present):
        if hf.shape(name) != tuple(expected[name].shape):
            raise ConversionError(f"{hf.path}: tensor '{name}' in {hf.file_of(name)} has shape "
                                  f"{list(hf.shape(name))}, config.json implies {list(expected[name].shape)}")


def _check_copies(hf: HFDirectory, tensors) -> None:
    """The MTP layers' own embedding / head copies must equal the main ones (pangu_ms shares them)."""
    main = {"embedding.weight": "model.embed_tokens.weight", "lm_head.weight": "lm_head.weight"}
    for t in tensors:
        if t.layout == "copy" and t.name in hf.weight_map:
            ref = main[t.source]
            step = max(1, (1 << 24) // max(1, int(np.prod(t.shape[1:]))))
            for start in range(0, t.shape[0], step):
                if not np.array_equal(hf.read(t.name, start, start + step), hf.read(ref, start, start + step)):
                    raise ConversionError(f"{hf.path}: '{t.name}' differs from '{ref}' (rows from {start}); "
                                          f"pangu_ms's MTP shares the main model's embedding and head")


def hf_recipe(hf: HFDirectory, fmt: str = "auto", overrides=(), log=print):
    """The pangu_ms Config of an HF directory (after the structure check)."""
    where = os.path.join(hf.path, "config.json")
    fmt = detect_format(hf.config, where) if fmt == "auto" else fmt
    sections, ignored = recipe_sections(hf.config, fmt, where)
    if ignored:
        log(f"note: config.json keys without a pangu_ms meaning, ignored: {', '.join(ignored)}")
    _structure(hf, sections, fmt, log)
    if fmt == "deepseek_v3":
        sections["moe"]["expert_bias"] = _expert_bias(hf, sections)
    items = [f"{sec}.{k}={'' if v is None else v}" for sec, vals in sections.items() for k, v in vals.items()]
    try:
        return load_config(None, items + list(overrides)), fmt
    except ConfigError as e:
        raise ConversionError(f"{where}: the recipe it maps to is invalid: {e}") from None


def import_hf(hf_dir: str, out_dir: str, fmt: str = "auto", overrides=(), log=print) -> str:
    """Convert; returns the checkpoint directory."""
    from ..train.checkpoint import checkpoint_paths, file_digest, write_manifest
    from tqdm import tqdm
    hf = HFDirectory(hf_dir)
    cfg, fmt = hf_recipe(hf, fmt, overrides, log)
    tensors = hf_tensors(cfg, fmt, mtp=True)
    check_tensors(hf, tensors, fmt)
    _check_copies(hf, tensors)
    paths = checkpoint_paths(out_dir, 0)
    os.makedirs(paths.directory, exist_ok=True)
    if os.path.exists(paths.manifest):
        os.remove(paths.manifest)
    entries = parameter_inventory(cfg)
    dtype = DTYPES[cfg.model.param_dtype]
    writer = SafetensorsWriter(paths.shared, [(p.name, dtype, p.shape) for p in entries], {"format": "ms"})
    for entry in tqdm(entries, desc="import", unit="tensor", disable=None):
        for chunk in chunks(entry, tensors):
            if chunk.layout in ("plain", "stack_rows") and len(entry.shape) > 1:   # matrices in row blocks
                for t in chunk.tensors:                                 # stack_rows: gate rows, then up rows
                    for a, b in row_blocks(t.shape):
                        writer.write(entry.name, hf.read(t.name, a, b))
            else:
                writer.write(entry.name, pangu_block(chunk.layout, [hf.read(t.name) for t in chunk.tensors]))
    writer.close()
    dump_config(cfg, os.path.join(out_dir, "config.yaml"))
    write_manifest(paths, 0, "safetensors", 1, {os.path.basename(paths.shared): file_digest(paths.shared)},
                   {p.name: list(p.shape) for p in entries}, state={"imported_from": hf.path, "hf_format": fmt})
    log(f"imported {len(tensors)} HF tensors ({fmt}) from {hf.path} -> {paths.directory} "
        f"({len(entries)} parameters, mtp_depth {cfg.model.mtp_depth}); recipe {out_dir}/config.yaml")
    return paths.directory


__all__ = ["import_hf", "hf_recipe", "check_tensors"]
