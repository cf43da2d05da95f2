"""Streaming safetensors files: read one tensor (or rows of it) at a time, write tensor by tensor.

The ``safetensors`` package reads and writes whole dicts and its numpy frontend has no bfloat16, so conversion
of a 700B checkpoint cannot go through it. The file format is simple (8-byte little-endian header length, a JSON
header ``{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}`` padded with spaces, then
the tensor bytes): :class:`SafetensorsReader` parses the header, checks every offset against the file size (a
truncated shard is named before anything is read) and reads rows with ``np.fromfile`` (plain reads, no mmap, so
the resident memory is the arrays asked for); :class:`SafetensorsWriter` takes every (name, dtype, shape) up
front, writes the header, and then the bytes of each tensor in order, in as many pieces as the caller likes.
BF16 is read as float32 (exact) and written from float32 with round-to-nearest-even. Files written here are read
by ``safetensors.safe_open`` and MindSpore's ``load_checkpoint`` (tests/interop check both).
"""
from __future__ import annotations

import json
import os
import struct
from math import prod

import numpy as np

from .errors import ConversionError

_NUMPY = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
          "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_, "BF16": np.uint16}
_SIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
         "F8_E4M3": 1, "F8_E5M2": 1}
DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64"}


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(x: np.ndarray) -> np.ndarray:
    """Round to nearest even (NaN stays NaN)."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(x), np.uint16(0x7FC0), rounded)


class SafetensorsReader:
    def __init__(self, path: str):
        self.path = path
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise ConversionError(f"{path}: not a safetensors file ({size} bytes)")
            n = struct.unpack("<Q", raw)[0]
            if n > size - 8:
                raise ConversionError(f"{path}: truncated (header of {n} bytes, file has {size})")
            try:
                header = json.loads(f.read(n))
            except ValueError as e:
                raise ConversionError(f"{path}: unreadable safetensors header: {e}") from None
        self.metadata = header.pop("__metadata__", None) or {}
        self.data_start = 8 + n
        self.tensors = header
        for name, info in header.items():
            begin, end = info["data_offsets"]
            if self.data_start + end > size:
                raise ConversionError(f"{path}: truncated: tensor '{name}' needs bytes up to "
                                      f"{self.data_start + end}, the file has {size}")
            want = prod(info["shape"]) * _SIZE.get(info["dtype"], 0)
            if end - begin != want:
                raise ConversionError(f"{path}: tensor '{name}' has {end - begin} bytes, its dtype "
                                      f"{info['dtype']} and shape {info['shape']} need {want}")

    def names(self) -> list[str]:
        return list(self.tensors)

    def shape(self, name: str) -> tuple:
        return tuple(self.tensors[name]["shape"])

    def dtype(self, name: str) -> str:
        return self.tensors[name]["dtype"]

    def read(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows ``[start, stop)`` of tensor ``name`` along dim 0 (BF16 as float32); 0-d tensors whole."""
        info = self.tensors[name]
        dt, shape = info["dtype"], list(info["shape"])
        if dt not in _NUMPY:
            raise ConversionError(f"{self.path}: tensor '{name}' has dtype {dt}, which pangu_ms does not read "
                                  f"(FP8 checkpoints: dequantise to bf16 first)")
        row = prod(shape[1:]) * _SIZE[dt] if shape else _SIZE[dt]
        rows = shape[0] if shape else 1
        stop = rows if stop is None else min(stop, rows)
        with open(self.path, "rb") as f:
            f.seek(self.data_start + info["data_offsets"][0] + start * row)
            count = (stop - start) * row // _SIZE[dt]
            a = np.fromfile(f, dtype=_NUMPY[dt], count=count)
        a = a.reshape([stop - start] + shape[1:] if shape else [])
        return bf16_to_f32(a) if dt == "BF16" else a


class SafetensorsWriter:
    """``SafetensorsWriter(path, [(name, dtype, shape), ...], metadata)``; then ``write(name, array)`` for each
    tensor in the declared order, an array per call (whole tensor or consecutive rows); ``close()`` checks that
    every byte was written and renames ``<path>.tmp-<pid>`` into place."""

    def __init__(self, path: str, specs: list, metadata: dict | None = None):
        self.path, self.tmp = path, f"{path}.tmp-{os.getpid()}"
        header, off = {}, 0
        self.order = []
        for name, dtype, shape in specs:
            n = prod(shape) * _SIZE[dtype]
            header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + n]}
            self.order.append((name, dtype, n))
            off += n
        self.total = off
        if metadata:
            header = {"__metadata__": metadata, **header}
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        self.f = open(self.tmp, "wb")
        self.f.write(struct.pack("<Q", len(raw)) + raw)
        self.i, self.left = 0, self.order[0][2] if self.order else 0

    def write(self, name: str, array: np.ndarray) -> None:
        want, dtype, _ = self.order[self.i]
        if name != want:
            raise ValueError(f"{self.path}: expected tensor '{want}' next, got '{name}'")
        data = f32_to_bf16(array) if dtype == "BF16" else np.ascontiguousarray(array, _NUMPY[dtype])
        if data.nbytes > self.left:
            raise ValueError(f"{self.path}: tensor '{name}': more bytes than its shape")
        self.f.write(data.reshape(-1).view(np.uint8).data)
        self.left -= data.nbytes
        while self.left == 0 and self.i < len(self.order) - 1 and self._advance():
            pass

    def _advance(self) -> bool:
        self.i += 1
        self.left = self.order[self.i][2]
        return self.left == 0          # zero-size tensors need no write

    def close(self) -> None:
        if self.left or self.i < len(self.order) - 1:
            raise ValueError(f"{self.path}: closed before tensor '{self.order[self.i][0]}' was complete")
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        os.replace(self.tmp, self.path)


__all__ = ["DTYPES", "SafetensorsReader", "SafetensorsWriter", "bf16_to_f32", "f32_to_bf16"]
