"""Group-normalised advantages (GRPO) and the dynamic-sampling filter (DAPO), numpy on the host.

For a group of G completions of one prompt with rewards r_1..r_G:
    A_i = (r_i - mean(r)) / (std(r) + eps)     (std with ddof=0; ``scale_by_std=False``: A_i = r_i - mean(r))
Every token of completion i gets A_i (outcome reward, no value model).
"""
from __future__ import annotations

import numpy as np


def group_advantages(rewards, eps: float = 1e-6, scale_by_std: bool = True) -> np.ndarray:
    """rewards [n_groups, G] -> advantages [n_groups, G] (float64)."""
    r = np.asarray(rewards, np.float64)
    if r.ndim != 2:
        raise ValueError(f"rewards must be [n_groups, G], got shape {r.shape}")
    centred = r - r.mean(axis=1, keepdims=True)
    if not scale_by_std:
        return centred
    return centred / (r.std(axis=1, keepdims=True) + eps)


def informative_groups(rewards, tol: float = 1e-9) -> np.ndarray:
    """[n_groups] bool: groups whose rewards are not all equal (all-equal groups have zero advantage)."""
    r = np.asarray(rewards, np.float64)
    return (r.max(axis=1) - r.min(axis=1)) > tol
