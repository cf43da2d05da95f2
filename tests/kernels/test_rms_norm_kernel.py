"""The fused C++ RMSNorm (pangu_ms/kernels/cpu/rms_norm.cc) against numpy, finite differences and the reference
composite norm; the build's errors."""
from __future__ import annotations

import numpy as np
import mindspore as ms
import pytest
from mindspore import Tensor, ops

from pangu_ms.backend import get_backend
from pangu_ms.config import ConfigError
from pangu_ms.kernels import build
from tests.kernels.weighted_sum import WeightedSum


def _numpy_norm_and_grads(x, w, c, eps):
    """y, dL/dx, dL/dw of L = sum(y * c), y = x / rms(x) * w, in float64 (hand-derived)."""
    x, w, c = (a.astype(np.float64) for a in (x, w, c))
    inv = 1.0 / np.sqrt((x * x).mean(-1, keepdims=True) + eps)
    y = x * inv * w
    g = c * w
    dx = inv * (g - x * inv ** 2 * (g * x).mean(-1, keepdims=True))
    dw = (c * x * inv).reshape(-1, x.shape[-1]).sum(0)
    return y, dx, dw


def _run(backend, dtype, x, w, c, eps):
    norm = get_backend(backend).rms_norm(x.shape[-1], eps, dtype=dtype)
    norm.weight.set_data(Tensor(w))
    loss = WeightedSum(norm, c)
    grad = ms.jit(ms.value_and_grad(loss, grad_position=0, weights=[norm.weight]))
    value, (dx, (dw,)) = grad(Tensor(x))
    return float(value), dx.asnumpy(), dw.asnumpy(), norm(Tensor(x)).asnumpy()


@pytest.mark.parametrize("dtype,np_dtype,tol", [(ms.float32, np.float32, 2e-6), (ms.float64, np.float64, 1e-13)])
def test_fused_norm_matches_numpy_and_the_reference(dtype, np_dtype, tol):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 48)).astype(np_dtype) * 3.0
    w = (rng.random(48) + 0.5).astype(np_dtype)
    c = rng.standard_normal((2, 5, 48)).astype(np_dtype)
    y_np, dx_np, dw_np = _numpy_norm_and_grads(x, w, c, 1e-6)
    fused = _run("cpu_fused", dtype, x, w, c, 1e-6)
    reference = _run("cpu", dtype, x, w, c, 1e-6)
    for got in (fused, reference):
        _, dx, dw, y = got
        np.testing.assert_allclose(y, y_np, rtol=tol, atol=tol)
        np.testing.assert_allclose(dx, dx_np, rtol=tol * 10, atol=tol * 10)
        np.testing.assert_allclose(dw, dw_np, rtol=tol * 10, atol=tol * 10)
    assert abs(fused[0] - reference[0]) <= 1e-5 * abs(reference[0]) + tol


def test_fused_norm_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 16))
    w = rng.random(16) + 0.5
    c = rng.standard_normal((3, 16))
    value, dx, dw, _ = _run("cpu_fused", ms.float64, x, w, c, 1e-6)
    h = 1e-6
    norm = get_backend("cpu_fused").rms_norm(16, 1e-6, dtype=ms.float64)
    norm.weight.set_data(Tensor(w))

    def loss(x_):
        return float((norm(Tensor(x_)).asnumpy() * c).sum())

    for i, j in [(0, 0), (1, 7), (2, 15)]:
        e = np.zeros_like(x)
        e[i, j] = h
        fd = (loss(x + e) - loss(x - e)) / (2 * h)
        assert abs(fd - dx[i, j]) < 1e-7, (i, j, fd, dx[i, j])


def test_missing_compiler_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-xyz")
    with pytest.raises(build.KernelBuildError, match="no-such-compiler-xyz"):
        build.compiler()
    with pytest.raises(ConfigError, match="model.backend=cpu_fused.*no-such-compiler-xyz"):
        get_backend("cpu_fused")


def test_library_is_cached_by_source_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("PANGU_MS_KERNEL_CACHE", str(tmp_path))
    build.library.cache_clear()
    try:
        first = build.library("rms_norm")
        assert first.startswith(str(tmp_path)) and first.endswith(".so")
        build.library.cache_clear()
        assert build.library("rms_norm") == first                  # same source: the cached file, not rebuilt
        with pytest.raises(build.KernelBuildError, match="no kernel source"):
            build.library("no_such_kernel")
    finally:
        build.library.cache_clear()
