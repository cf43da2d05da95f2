"""The fused C++ RoPE (pangu_ms/kernels/cpu/rope.cc) against explicit pair arithmetic (numpy), the reference
rotate-matmul path and finite differences: both pair layouts, [B, N, S, D] and [B, S, D], explicit positions."""
from __future__ import annotations

import numpy as np
import mindspore as ms
import pytest
from mindspore import Tensor, nn

from pangu_ms.model.rope import RotaryEmbedding, apply_rope_numpy, rope_tables

D, L = 8, 32


class _Loss(nn.Cell):
    def __init__(self, rope, c):
        super().__init__()
        self.rope, self.c = rope, Tensor(c)

    def construct(self, x, positions):
        return (self.rope(x, positions=positions) * self.c).sum()


def _grad(rope, x, c, positions):
    return ms.jit(ms.value_and_grad(_Loss(rope, c), grad_position=0))(Tensor(x), positions)[1].asnumpy()


@pytest.mark.parametrize("interleaved", [True, False])
@pytest.mark.parametrize("shape", [(2, 3, 5, D), (2, 5, D)])
@pytest.mark.parametrize("with_positions", [False, True])
def test_fused_rope_matches_pair_rotation_and_the_reference(interleaved, shape, with_positions):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    c = rng.standard_normal(shape)
    s = shape[-2]
    positions = np.stack([np.arange(s), np.array([0, 1, 2, 0, 1])]).astype(np.int32) if with_positions else None
    fused = RotaryEmbedding(D, L, 1e4, interleaved, ms.float64, fused_cpu_kernel=True)
    reference = RotaryEmbedding(D, L, 1e4, interleaved, ms.float64)
    pos = Tensor(positions) if with_positions else None
    got = fused(Tensor(x), positions=pos).asnumpy()
    cos, sin = rope_tables(D, L, 1e4, interleaved)
    if with_positions:                    # row b at positions[b]: numpy per batch row
        want = np.stack([apply_rope_numpy(x[b], cos[positions[b]], sin[positions[b]], interleaved)
                         for b in range(shape[0])])
    else:
        want = apply_rope_numpy(x, cos[:s], sin[:s], interleaved)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(got, reference(Tensor(x), positions=pos).asnumpy(), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(_grad(fused, x, c, pos), _grad(reference, x, c, pos), rtol=1e-12, atol=1e-12)


def test_fused_rope_gradient_matches_finite_differences_and_float32_runs():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 2, 4, D))
    c = rng.standard_normal((1, 2, 4, D))
    rope = RotaryEmbedding(D, L, 1e4, True, ms.float64, fused_cpu_kernel=True)
    dx = _grad(rope, x, c, None)
    h = 1e-6
    for index in [(0, 0, 0, 0), (0, 1, 3, 5), (0, 0, 2, 7)]:
        plus, minus = x.copy(), x.copy()
        plus[index] += h
        minus[index] -= h
        fd = (float((rope(Tensor(plus)).asnumpy() * c).sum()) - float((rope(Tensor(minus)).asnumpy() * c).sum())) / (2 * h)
        assert abs(fd - dx[index]) < 1e-8
    x32 = x.astype(np.float32)
    f32 = RotaryEmbedding(D, L, 1e4, True, ms.float32, fused_cpu_kernel=True)(Tensor(x32)).asnumpy()
    r32 = RotaryEmbedding(D, L, 1e4, True, ms.float32)(Tensor(x32)).asnumpy()
    np.testing.assert_allclose(f32, r32, rtol=1e-6, atol=1e-6)
