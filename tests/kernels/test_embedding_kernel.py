"""The fused C++ embedding lookup (pangu_ms/kernels/cpu/embedding.cc) against numpy and the Gather path:
values, the weight gradient with repeated ids, and an out-of-range id."""
from __future__ import annotations

import numpy as np
import mindspore as ms
import pytest
from mindspore import Tensor

from pangu_ms.config.schema import ModelConfig
from pangu_ms.layers.init import Initializer
from pangu_ms.model.transformer import Embedding
from tests.kernels.weighted_sum import WeightedSum

V, D = 11, 6


def _embedding(fused, dtype):
    return Embedding(V, D, Initializer(ModelConfig(hidden_size=D, vocab_size=V), 0), dtype, fused_cpu_kernel=fused)


@pytest.mark.parametrize("dtype,np_dtype", [(ms.float32, np.float32), (ms.float64, np.float64)])
def test_fused_embedding_matches_numpy_and_gather(dtype, np_dtype):
    ids = np.array([[3, 0, 3, 10], [7, 3, 1, 0]], np.int32)            # repeated ids: their gradients add up
    c = np.random.default_rng(0).standard_normal((8, D)).astype(np_dtype)
    results = []
    for fused in (True, False):
        emb = _embedding(fused, dtype)
        weight = emb.weight.asnumpy()
        rows = emb(Tensor(ids)).asnumpy()
        grad = ms.jit(ms.value_and_grad(WeightedSum(emb, c), None, weights=[emb.weight]))(Tensor(ids))[1][0].asnumpy()
        want_grad = np.zeros((V, D))
        np.add.at(want_grad, ids.reshape(-1), c.astype(np.float64))
        np.testing.assert_array_equal(rows, weight[ids.reshape(-1)])
        np.testing.assert_allclose(grad, want_grad, rtol=1e-6, atol=1e-6)
        results.append(grad)
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6, atol=1e-7)


def test_an_out_of_range_id_is_an_error():
    with pytest.raises(RuntimeError):
        _embedding(True, ms.float32)(Tensor(np.array([[1, V]], np.int32))).asnumpy()

