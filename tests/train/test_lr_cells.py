"""The learning rate the optimizer really applies at each step equals the reference schedule ``lr_values``
(numpy formula: linear warm-up from lr/w, then cosine / WSD / constant), for single- and multi-phase recipes; the
benchmark's torch twin is driven by the same ``lr_values``."""
import math

import numpy as np
import pytest

from pangu_ms.config import load_config
from pangu_ms.train.optim import build_optimizer, current_lr
from pangu_ms.train.schedule import lr_values
from tests.conftest import tiny_overrides


def reference(kind, n, w, lr, min_lr, decay_fraction=0.2):
    """Hand-written schedule, independent of pangu_ms.train.schedule."""
    out = []
    for u in range(n):
        if u < w:
            out.append(lr * (u + 1) / w)
        elif kind == "cosine":
            out.append(min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * (u - w) / max(n - w - 1, 1))))
        elif kind == "wsd":
            d = max(1, round(decay_fraction * n))
            out.append(lr + (min_lr - lr) * min(max((u - (n - d) + 1) / d, 0.0), 1.0))
        else:
            out.append(lr)
    return np.array(out)


@pytest.mark.parametrize("kind", ["cosine", "wsd", "constant"])
def test_optimizer_lr_equals_reference(kind):
    cfg = load_config(None, tiny_overrides(**{"train.lr_schedule": kind, "train.steps": 12, "train.warmup_steps": 3,
                                              "train.lr": 1e-3, "train.min_lr": 1e-4}))
    from pangu_ms.model import build_model
    opt = build_optimizer(build_model(cfg).trainable_params(), cfg.train)
    applied = np.array([current_lr(opt, s) for s in range(cfg.train.steps)])
    ref = reference(kind, 12, 3, 1e-3, 1e-4, cfg.train.decay_fraction)
    np.testing.assert_allclose(applied, ref, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(lr_values(cfg.train), ref, rtol=1e-6)
    assert applied[0] > 0                        # warm-up never applies a step with lr 0
