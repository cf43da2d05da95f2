"""The two sides of a conversion as row readers: an HF directory (config.json + safetensors shards, with or
without ``model.safetensors.index.json``) and a pangu_ms checkpoint directory (the shared part plus the
per-rank expert parts, assembled by the expert ranges the manifest records). Both open every file's header up
front, so a missing or truncated shard is named before anything is converted."""
from __future__ import annotations

import json
import os

import numpy as np

from .errors import ConversionError
from .safetensors_io import SafetensorsReader

INDEX = "model.safetensors.index.json"


class HFDirectory:
    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        if not os.path.isdir(self.path):
            raise ConversionError(f"--hf-dir: {self.path} is not a directory")
        cfg_path = os.path.join(self.path, "config.json")
        if not os.path.isfile(cfg_path):
            raise ConversionError(f"{self.path}: no config.json")
        with open(cfg_path, encoding="utf-8") as f:
            self.config = json.load(f)
        index = os.path.join(self.path, INDEX)
        if os.path.isfile(index):
            with open(index, encoding="utf-8") as f:
                self.weight_map = json.load(f)["weight_map"]
        else:
            files = sorted(n for n in os.listdir(self.path) if n.endswith(".safetensors"))
            if not files:
                raise ConversionError(f"{self.path}: no {INDEX} and no *.safetensors file")
            self.weight_map = {}
            for name in files:
                for t in SafetensorsReader(os.path.join(self.path, name)).names():
                    self.weight_map[t] = name
        self.readers = {}
        for file in sorted(set(self.weight_map.values())):
            full = os.path.join(self.path, file)
            if not os.path.isfile(full):
                raise ConversionError(f"{self.path}: shard {file} named by {INDEX} is missing")
            self.readers[file] = SafetensorsReader(full)
        for name, file in self.weight_map.items():
            if name not in self.readers[file].tensors:
                raise ConversionError(f"{self.path}: {INDEX} puts tensor '{name}' in {file}, which does not hold it")

    def names(self) -> list[str]:
        return list(self.weight_map)

    def file_of(self, name: str) -> str:
        return self.weight_map[name]

    def shape(self, name: str) -> tuple:
        return self.readers[self.weight_map[name]].shape(name)

    def read(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        return self.readers[self.weight_map[name]].read(name, start, stop)


class CheckpointSource:
    """Rows of the parameters of one pangu_ms checkpoint directory (weights and optimizer state alike)."""

    def __init__(self, directory: str):
        from ..train.checkpoint import MANIFEST, read_manifest
        self.directory = directory
        self.manifest = read_manifest(directory)
        if self.manifest.get("format") != "safetensors":
            raise ConversionError(f"{directory}: checkpoint format {self.manifest.get('format')}: the converter "
                                  f"reads safetensors checkpoints (train.checkpoint_format=safetensors)")
        self.shared = SafetensorsReader(os.path.join(directory, "model.safetensors"))
        self.experts = self.manifest.get("experts")
        self.parts = {}
        if self.manifest.get("expert_parts"):
            if self.experts is None:
                raise ConversionError(f"{directory}: an expert-parallel checkpoint without expert ranges in its "
                                      f"{MANIFEST} (saved by an older pangu_ms): load and save it once under its "
                                      f"own layout")
            self.parts = {f: SafetensorsReader(os.path.join(directory, f)) for f in self.experts["ranges"]}

    def has(self, name: str) -> bool:
        return name in self.shared.tensors or (self.experts is not None and name in self.experts["names"])

    def shape(self, name: str) -> tuple:
        if name in self.shared.tensors:
            return self.shared.shape(name)
        file = next(iter(self.parts))
        return (self.experts["total"],) + self.parts[file].shape(name)[1:]

    def read(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows ``start:stop``; of an expert tensor the *logical* experts (the router's ids) ``start..stop-1``,
        wherever a dynamic expert placement put them (``train.checkpoint.saved_slots``)."""
        from ..train.checkpoint import saved_slots, slot_runs
        if name in self.shared.tensors:
            return self.shared.read(name, start, stop)
        stop = self.experts["total"] if stop is None else stop
        pieces = []
        for at, end_run in slot_runs(saved_slots(self.experts, name, range(start, stop), self.shared.read)):
            while at < end_run:
                hit = next(((f, lo, n) for f, (lo, n) in sorted(self.experts["ranges"].items())
                            if lo <= at < lo + n), None)
                if hit is None:
                    raise ConversionError(f"{self.directory}: no expert part holds expert {at} of '{name}'")
                f, lo, n = hit
                end = min(end_run, lo + n)
                pieces.append(self.parts[f].read(name, at - lo, end - lo))
                at = end
        return np.concatenate(pieces, 0)


__all__ = ["INDEX", "HFDirectory", "CheckpointSource"]
