"""The fused C++ SwiGLU (pangu_ms/kernels/cpu/swiglu.cc) against numpy, finite differences and the reference."""
from __future__ import annotations

import numpy as np
import mindspore as ms
import pytest
from mindspore import Tensor

from pangu_ms.backend import FusedCpuSwiGLU, SwiGLU
from tests.kernels.weighted_sum import WeightedSum

F = 6


def _numpy(h, c):
    g, u = h[..., :F], h[..., F:]
    s = 1.0 / (1.0 + np.exp(-g))
    dg = c * u * s * (1 + g * (1 - s))
    return g * s * u, np.concatenate([dg, c * g * s], -1)


@pytest.mark.parametrize("dtype,tol", [(np.float32, 2e-6), (np.float64, 1e-13)])
def test_fused_swiglu_matches_numpy_and_the_reference(dtype, tol):
    rng = np.random.default_rng(0)
    h = (rng.standard_normal((3, 4, 2 * F)) * 3).astype(dtype)
    c = rng.standard_normal((3, 4, F)).astype(dtype)
    want_a, want_dh = _numpy(h.astype(np.float64), c.astype(np.float64))
    for act in (FusedCpuSwiGLU(F), SwiGLU(F)):
        a = act(Tensor(h)).asnumpy()
        _, dh = ms.jit(ms.value_and_grad(WeightedSum(act, c), grad_position=0))(Tensor(h))
        np.testing.assert_allclose(a, want_a, rtol=tol, atol=tol)
        np.testing.assert_allclose(dh.asnumpy(), want_dh, rtol=tol * 10, atol=tol * 10)


def test_fused_swiglu_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    h = rng.standard_normal((5, 2 * F))
    c = rng.standard_normal((5, F))
    act = FusedCpuSwiGLU(F)
    _, dh = ms.jit(ms.value_and_grad(WeightedSum(act, c), grad_position=0))(Tensor(h))
    step = 1e-6
    for index in [(0, 0), (2, F - 1), (4, F), (3, 2 * F - 1)]:
        plus, minus = h.copy(), h.copy()
        plus[index] += step
        minus[index] -= step
        fd = (float((act(Tensor(plus)).asnumpy() * c).sum()) - float((act(Tensor(minus)).asnumpy() * c).sum())) / (2 * step)
        assert abs(fd - dh.asnumpy()[index]) < 1e-7
