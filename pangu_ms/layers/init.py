"""Weight initialisation: TinyInit and the DSSN post-norm gamma.

TinyInit (Pangu Ultra, arXiv 2504.07866 section 2.2): every weight matrix ~ N(0, sqrt(1/(2 d L))), d = hidden
size, L = ``ModelConfig.init_depth`` (decoder layers; MTP layers only if ``init_depth_counts_mtp``). The input
embedding uses its own std (0.5 by default). Norm weights start at 1, except the DSSN post-norms (below).

DSSN (Depth-Scaled Sandwich-Norm): the gamma of the norm applied to the attention output starts at
c_attn / sqrt(L), that of the FFN output at c_mlp / sqrt(L).

All draws come from one numpy Generator seeded by the caller, in construction order, so a model built twice
with the same seed is bit-identical.
"""
from __future__ import annotations

import math

import numpy as np

from ..config.schema import ModelConfig


def tinyinit_std(cfg: ModelConfig) -> float:
    return math.sqrt(1.0 / (2.0 * cfg.hidden_size * cfg.init_depth))


def matrix_std(cfg: ModelConfig) -> float:
    """Std of every weight matrix (TinyInit or the plain normal init)."""
    return tinyinit_std(cfg) if cfg.init_method == "tiny" else cfg.init_std


def dssn_gammas(cfg: ModelConfig) -> tuple[float, float]:
    """Initial (attention-output, FFN-output) post-norm gamma."""
    root = math.sqrt(cfg.init_depth)
    return cfg.dssn_c_attn / root, cfg.dssn_c_mlp / root


class Initializer:
    """Seeded source of initial weights for one model."""

    def __init__(self, cfg: ModelConfig, seed: int):
        self.cfg = cfg
        self.rng = np.random.default_rng(seed)
        self.std = matrix_std(cfg)

    def normal(self, shape, std: float | None = None) -> np.ndarray:
        s = self.std if std is None else std
        return (self.rng.standard_normal(shape) * s).astype(np.float32)

    def embedding(self, shape) -> np.ndarray:
        return self.normal(shape, self.cfg.embedding_init_std)
