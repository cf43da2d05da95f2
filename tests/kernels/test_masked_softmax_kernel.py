"""The fused C++ masked softmax (pangu_ms/kernels/cpu/masked_softmax.cc) inside the attention core, against a
numpy attention and the reference core, with a causal and a per-document mask."""
from __future__ import annotations

import numpy as np
import mindspore as ms
import pytest
from mindspore import Tensor, nn

from pangu_ms.backend import CausalAttention, FusedCpuCausalAttention

B, N, S, DN, DR, DV = 2, 3, 7, 5, 4, 6
SCALE = 1.0 / np.sqrt(DN + DR)


def _masks():
    causal = np.triu(np.full((S, S), -1e9), 1)
    document = np.broadcast_to(causal, (B, 1, S, S)).copy()
    document[1, 0, 4:, :4] = -1e9                      # row 1 packs two documents: [0, 4) and [4, 7)
    return {"causal": causal, "document": document}


def _numpy_attention(q_nope, q_rope, k_nope, k_rope, v, mask):
    scores = (q_nope @ k_nope.swapaxes(-1, -2) + q_rope @ k_rope[:, None].swapaxes(-1, -2)) * SCALE + mask
    e = np.exp(scores - scores.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)) @ v


class _Loss(nn.Cell):
    def __init__(self, core, c):
        super().__init__()
        self.core, self.c = core, Tensor(c)

    def construct(self, q_nope, q_rope, k_nope, k_rope, v, mask):
        return (self.core(q_nope, q_rope, k_nope, k_rope, v, mask) * self.c).sum()


def _run(core, inputs, mask, c):
    grad = ms.jit(ms.value_and_grad(_Loss(core, c), grad_position=(0, 1, 2, 3, 4)))
    value, grads = grad(*(Tensor(a) for a in inputs), Tensor(mask))
    return float(value), [g.asnumpy() for g in grads], core(*(Tensor(a) for a in inputs), Tensor(mask)).asnumpy()


@pytest.mark.parametrize("mask_name", ["causal", "document"])
@pytest.mark.parametrize("dtype,np_dtype,tol", [(ms.float32, np.float32, 2e-6), (ms.float64, np.float64, 1e-12)])
def test_fused_core_matches_numpy_and_the_reference(mask_name, dtype, np_dtype, tol):
    rng = np.random.default_rng(0)
    shapes = [(B, N, S, DN), (B, N, S, DR), (B, N, S, DN), (B, S, DR), (B, N, S, DV)]
    inputs = [(rng.standard_normal(sh) * 2).astype(np_dtype) for sh in shapes]
    mask = _masks()[mask_name].astype(np_dtype)
    c = rng.standard_normal((B, N, S, DV)).astype(np_dtype)
    fused = _run(FusedCpuCausalAttention(SCALE, dtype), inputs, mask, c)
    reference = _run(CausalAttention(SCALE), inputs, mask, c)
    np.testing.assert_allclose(fused[2], _numpy_attention(*(a.astype(np.float64) for a in inputs), mask),
                               rtol=tol * 5, atol=tol * 5)
    near = max(tol, 1e-6)                   # the reference core multiplies by its scale as a float32 scalar
    np.testing.assert_allclose(fused[2], reference[2], rtol=near * 5, atol=near * 5)
    for got, want in zip(fused[1], reference[1]):
        np.testing.assert_allclose(got, want, rtol=near * 50, atol=near * 50)
    if np_dtype == np.float64:                          # finite differences of the fused core on q_nope and k_rope
        core = FusedCpuCausalAttention(SCALE, dtype)
        h = 1e-6
        for arg, index in ((0, (1, 2, 5, 3)), (3, (0, 6, 1))):
            plus, minus = [a.copy() for a in inputs], [a.copy() for a in inputs]
            plus[arg][index] += h
            minus[arg][index] -= h
            f = [float((core(*(Tensor(a) for a in p), Tensor(mask)).asnumpy() * c).sum()) for p in (plus, minus)]
            assert abs((f[0] - f[1]) / (2 * h) - fused[1][arg][index]) < 1e-7


def test_a_bad_mask_shape_is_refused():
    rng = np.random.default_rng(1)
    inputs = [Tensor(rng.standard_normal(sh).astype(np.float32))
              for sh in [(B, N, S, DN), (B, N, S, DR), (B, N, S, DN), (B, S, DR), (B, N, S, DV)]]
    with pytest.raises(RuntimeError):
        FusedCpuCausalAttention(SCALE)(*inputs, Tensor(np.zeros((1, 1, S, S), np.float32))).asnumpy()
