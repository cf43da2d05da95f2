"""Rotary position embedding (RoPE), tables built in numpy (``ops.Outer`` has no CPU kernel).

Rotation as one matmul: rope(x) = x * cos + (x @ R) * sin, where R is a constant signed permutation that maps
each rotation pair (a, b) -> (-b, a). ``interleaved=True`` pairs adjacent dims (2i, 2i+1) as DeepSeek / Pangu
do; ``False`` pairs dim i with i + D/2 (NeoX / Llama). Frequencies: theta_i = base^(-2i/D).
"""
from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from ..kernels.ops import rope_primitives
from ..layers.explicit_broadcast import expand_as


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

# ---------------------------------------------------------------------------------------------- scaled RoPE
def ntk_base(base: float, dim: int, factor: float) -> float:
    """NTK-aware scaled base: ``base * factor^(D/(D-2))`` (so the lowest frequency is interpolated by ``factor``
    while the highest is kept)."""
    if factor <= 1.0 or dim <= 2:
        return float(base)
    return float(base) * factor ** (dim / (dim - 2))


def yarn_correction_range(dim: int, base: float, original_max_len: int, beta_fast: float = 32.0,
                          beta_slow: float = 1.0) -> tuple[int, int]:
    """Dims (pair indices) between which YaRN ramps from extrapolation to interpolation: pair i makes
    ``original_max_len * theta_i / (2 pi)`` rotations over the original context; pairs with more than
    ``beta_fast`` rotations are kept, pairs with fewer than ``beta_slow`` are fully interpolated."""
    def dim_for(rot):
        return dim * np.log(original_max_len / (rot * 2 * np.pi)) / (2 * np.log(base))
    low = int(np.floor(dim_for(beta_fast)))
    high = int(np.ceil(dim_for(beta_slow)))
    return max(low, 0), min(high, dim // 2 - 1) if dim // 2 > 1 else 0


def yarn_inv_freq(dim: int, base: float, factor: float, original_max_len: int, beta_fast: float = 32.0,
                  beta_slow: float = 1.0) -> np.ndarray:
    """YaRN ("NTK-by-parts") frequencies: theta_i * (1 - m_i) / factor + theta_i * m_i where m_i = 1 for
    high-frequency pairs (kept) and 0 for low-frequency pairs (interpolated), linear in between."""
    extra = inv_freq(dim, base)
    inter = extra / factor
    low, high = yarn_correction_range(dim, base, original_max_len, beta_fast, beta_slow)
    if high == low:
        high = low + 1e-3
    ramp = np.clip((np.arange(dim // 2, dtype=np.float64) - low) / (high - low), 0.0, 1.0)
    keep = 1.0 - ramp                        # 1: extrapolate (keep theta_i), 0: interpolate (theta_i / s)
    return inter * (1.0 - keep) + extra * keep


def yarn_mscale(factor: float) -> float:
    """YaRN attention temperature: cos/sin are multiplied by ``0.1 ln(s) + 1`` (1 for s <= 1)."""
    return 1.0 if factor <= 1.0 else 0.1 * float(np.log(factor)) + 1.0


def scaled_inv_freq(dim: int, base: float, scaling: str = "none", factor: float = 1.0,
                    original_max_len: int = 0, max_len: int = 0) -> np.ndarray:
    """Frequencies for ``scaling`` in (``none``, ``ntk``, ``yarn``); see ``LongContextStep``."""
    if scaling in ("none", "", None) or factor == 1.0:
        return inv_freq(dim, base)
    if scaling == "ntk":
        return inv_freq(dim, ntk_base(base, dim, factor))
    if scaling == "yarn":
        orig = original_max_len or max(int(round(max_len / factor)), 1)
        return yarn_inv_freq(dim, base, factor, orig)
    raise ValueError(f"rope scaling: unknown '{scaling}' (expected none, ntk or yarn)")


def scaled_rope_tables(dim: int, max_len: int, base: float, interleaved: bool = True, scaling: str = "none",
                       factor: float = 1.0, original_max_len: int = 0):
    """Like :func:`rope_tables` with NTK / YaRN scaling; for ``yarn`` the tables carry the temperature
    ``yarn_mscale(factor)``. ``scaling='none'`` gives exactly ``rope_tables(dim, max_len, base)``."""
    if scaling in ("none", "", None) or factor == 1.0:
        return rope_tables(dim, max_len, base, interleaved)
    freqs = np.outer(np.arange(max_len, dtype=np.float64),
                     scaled_inv_freq(dim, base, scaling, factor, original_max_len, max_len))
    ang = np.repeat(freqs, 2, axis=1) if interleaved else np.concatenate([freqs, freqs], axis=1)
    m = yarn_mscale(factor) if scaling == "yarn" else 1.0
    return np.cos(ang) * m, np.sin(ang) * m


class RotaryEmbedding(nn.Cell):
    """Applies RoPE to [B, S, D] or [B, N, S, D] tensors at positions 0..S-1 (``offset`` added for incremental
    decoding), or at explicit ``positions`` [B, S] int32 (per-document positions of packed rows)."""

    def __init__(self, dim: int, max_len: int, base: float, interleaved: bool = True, dtype=ms.float32,
                 scaling: str = "none", factor: float = 1.0, original_max_len: int = 0, fused_cpu_kernel: bool = False):
        """``scaling``/``factor``/``original_max_len``: optional NTK / YaRN scaling (``scaled_rope_tables``).
        ``fused_cpu_kernel``: the rotation as one C++ kernel forward and one backward (``kernels/cpu/rope.cc``,
        the ``cpu_fused`` backend) instead of the rotate matmul and four elementwise kernels; same values."""
        super().__init__()
        cos, sin = scaled_rope_tables(dim, max_len, base, interleaved, scaling, factor, original_max_len)
        self.cos = Tensor(cos, dtype)
        self.sin = Tensor(sin, dtype)
        self.rot = Tensor(rotation_matrix(dim, interleaved), dtype)
        self.matmul = ops.MatMul()
        self.dim = dim
        self.fused_cpu_kernel = fused_cpu_kernel
        if fused_cpu_kernel:
            self.interleaved_flag = Tensor(np.array([1.0 if interleaved else 0.0]), dtype)
            self.fused_rope, self.fused_rope_backward = rope_primitives()

    def construct(self, x, offset=0, positions=None):
        s = x.shape[-2]
        if positions is None:
            cos = self.cos[offset: offset + s]
            sin = self.sin[offset: offset + s]
        else:
            b = positions.shape[0]
            table_shape = (b, 1, s, self.dim) if len(x.shape) == 4 else (b, s, self.dim)
            cos = ops.gather(self.cos, positions.reshape(-1), 0).reshape(table_shape)
            sin = ops.gather(self.sin, positions.reshape(-1), 0).reshape(table_shape)
        if self.fused_cpu_kernel:
            return self.fused_rope(x, cos, sin, self.interleaved_flag)
        shape = x.shape
        xr = self.matmul(x.reshape(-1, self.dim), self.rot).reshape(shape)
        return x * expand_as(cos, x) + xr * expand_as(sin, x)
