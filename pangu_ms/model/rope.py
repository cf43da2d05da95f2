"""Rotary position embedding (RoPE), tables built in numpy (``ops.Outer`` has no CPU kernel).

Rotation as one matmul: rope(x) = x * cos + (x @ R) * sin, where R is a constant signed permutation that maps
each rotation pair (a, b) -> (-b, a). ``interleaved=True`` pairs adjacent dims (2i, 2i+1) as DeepSeek / Pangu
do; ``False`` pairs dim i with i + D/2 (NeoX / Llama). Frequencies: theta_i = base^(-2i/D).
"""
from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops


def inv_freq(dim: int, base: float) -> np.ndarray:
    return 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float64) / dim))


def rope_tables(dim: int, max_len: int, base: float, interleaved: bool = True):
    """cos, sin of shape [max_len, dim] laid out to match ``rotation_matrix(dim, interleaved)``."""
    freqs = np.outer(np.arange(max_len, dtype=np.float64), inv_freq(dim, base))   # [L, D/2]
    if interleaved:
        ang = np.repeat(freqs, 2, axis=1)                                          # a0 a0 a1 a1 ...
    else:
        ang = np.concatenate([freqs, freqs], axis=1)                                # a0 a1 .. a0 a1 ..
    return np.cos(ang), np.sin(ang)


def rotation_matrix(dim: int, interleaved: bool = True) -> np.ndarray:
    """R with (x @ R) = the 'rotate by 90 degrees' partner of x in each pair."""
    r = np.zeros((dim, dim))
    half = dim // 2
    for i in range(half):
        a, b = (2 * i, 2 * i + 1) if interleaved else (i, i + half)
        r[b, a] = -1.0      # out[a] = -x[b]
        r[a, b] = 1.0       # out[b] = x[a]
    return r


def apply_rope_numpy(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, interleaved: bool = True) -> np.ndarray:
    """Reference: x [..., S, D] rotated pairwise with explicit pair arithmetic (used by tests)."""
    out = np.empty_like(x)
    d = x.shape[-1]
    half = d // 2
    for i in range(half):
        a, b = (2 * i, 2 * i + 1) if interleaved else (i, i + half)
        c, s = cos[:, a], sin[:, a]
        out[..., a] = x[..., a] * c - x[..., b] * s
        out[..., b] = x[..., a] * s + x[..., b] * c
    return out


class RotaryEmbedding(nn.Cell):
    """Applies RoPE to [..., S, D] tensors; positions 0..S-1 (offset for incremental decoding)."""

    def __init__(self, dim: int, max_len: int, base: float, interleaved: bool = True, dtype=ms.float32):
        super().__init__()
        cos, sin = rope_tables(dim, max_len, base, interleaved)
        self.cos = Tensor(cos, dtype)
        self.sin = Tensor(sin, dtype)
        self.rot = Tensor(rotation_matrix(dim, interleaved), dtype)
        self.matmul = ops.MatMul()
        self.dim = dim

    def construct(self, x, offset=0):
        s = x.shape[-2]
        cos = self.cos[offset: offset + s]
        sin = self.sin[offset: offset + s]
        shape = x.shape
        xr = self.matmul(x.reshape(-1, self.dim), self.rot).reshape(shape)
        return x * cos + xr * sin
