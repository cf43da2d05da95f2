"""Global-norm clipping: the flat-buffer norm (small models) and the per-tensor norm (above
``FLAT_NORM_MAX_ELEMENTS``) agree with numpy, and so does ``sum_of_squares`` on long tensors of every shape path."""
import numpy as np
import pytest
from mindspore import Tensor

import pangu_ms.train.step as step
from pangu_ms.layers.reduce import sum_of_squares

SHAPES = [(600, 400), (4, 300, 250), (250_001,), (7, 3)]


@pytest.mark.parametrize("shape", SHAPES)
def test_sum_of_squares_matches_numpy(shape):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    ref = float((x.astype(np.float64) ** 2).sum())
    assert abs(float(sum_of_squares(Tensor(x)).asnumpy()) - ref) < 1e-5 * ref


@pytest.mark.parametrize("flat_limit", [1 << 40, 0])
def test_clip_global_norm_paths_match_numpy(monkeypatch, flat_limit):
    monkeypatch.setattr(step, "FLAT_NORM_MAX_ELEMENTS", flat_limit)
    rng = np.random.default_rng(1)
    grads = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    ref = np.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads))
    clipped, norm = step.clip_global_norm(tuple(Tensor(g) for g in grads), 1.0)
    assert abs(float(norm.asnumpy()) - ref) < 1e-5 * ref
    for c, g in zip(clipped, grads):
        np.testing.assert_allclose(c.asnumpy(), g / (ref + 1e-6), rtol=1e-5, atol=1e-8)
