"""The sorted-block dispatcher with its fused C++ permute (the embedding kernel's row gather) and combine
(pangu_ms/kernels/cpu/weighted_scatter.cc) against its Gather / UnsortedSegmentSum path, float64."""
from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn

from pangu_ms.backend import get_backend
from pangu_ms.config.schema import ModelConfig
from pangu_ms.layers.init import Initializer
from pangu_ms.moe.dispatcher import SortedBlockDispatcher
from pangu_ms.moe.experts import RoutedExperts


def test_fused_sorted_block_dispatch_matches_the_reference():
    """The sorted-block dispatcher with its C++ permute / combine (cpu_fused) against the Gather /
    UnsortedSegmentSum path: output and the gradients of x, the combine weights and the expert weights."""
    class _Dispatch(nn.Cell):
        def __init__(self, dispatcher, experts, c):
            super().__init__()
            self.dispatcher, self.experts, self.c = dispatcher, experts, Tensor(c)

        def construct(self, x, idx, w):
            return (self.dispatcher(x, idx, w, self.experts)[0] * self.c).sum()

    rng = np.random.default_rng(3)
    t, e, k, h, f = 12, 4, 2, 8, 6
    x = rng.standard_normal((t, h))
    idx = np.stack([rng.choice(e, k, replace=False) for _ in range(t)]).astype(np.int32)
    w = rng.random((t, k))
    c = rng.standard_normal((t, h))
    got = []
    for fused in (True, False):
        experts = RoutedExperts(e, h, f, Initializer(ModelConfig(hidden_size=h), 0), get_backend("cpu"), ms.float64)
        net = _Dispatch(SortedBlockDispatcher(e, k, 4, fused_cpu_kernels=fused), experts, c)
        grad = ms.jit(ms.value_and_grad(net, grad_position=(0, 2), weights=experts.trainable_params()))
        value, (inputs, weights) = grad(Tensor(x), Tensor(idx), Tensor(w))
        got.append([float(value)] + [g.asnumpy() for g in inputs] + [g.asnumpy() for g in weights])
    for a, b in zip(*got):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
