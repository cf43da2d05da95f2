"""Router against numpy: sigmoid scores, top-k, renormalisation, scaling, expert bias."""
import numpy as np
import pytest
from mindspore import Tensor

from pangu_ms.config import MoEConfig
from pangu_ms.layers.init import Initializer
from pangu_ms.config import ModelConfig
from pangu_ms.moe.router import TopKRouter
from tests.moe.reference import route


def make_router(**kw):
    cfg = MoEConfig(num_experts=8, top_k=3, routed_scaling_factor=2.5, **kw)
    return TopKRouter(16, cfg, Initializer(ModelConfig(hidden_size=16), 0)), cfg


@pytest.mark.parametrize("sigmoid", [True, False])
def test_router_matches_numpy(sigmoid):
    router, cfg = make_router(router_score="sigmoid" if sigmoid else "softmax")
    router.weight.set_data(Tensor(np.random.default_rng(1).standard_normal((8, 16)).astype(np.float32)))
    x = np.random.default_rng(2).standard_normal((40, 16)).astype(np.float32)
    idx, w, mask, probs = (o.asnumpy() for o in router(Tensor(x)))
    r_idx, r_w, s = route(x.astype(np.float64), router.weight.asnumpy().astype(np.float64), 3, 2.5, sigmoid)
    np.testing.assert_array_equal(np.sort(idx, 1), np.sort(r_idx, 1))
    order = np.argsort(idx, 1)
    np.testing.assert_allclose(np.take_along_axis(w, order, 1),
                               np.take_along_axis(r_w, np.argsort(r_idx, 1), 1), rtol=1e-5)
    np.testing.assert_allclose(w.sum(1), 2.5, rtol=1e-5)            # combine weights sum to the scale
    np.testing.assert_array_equal(mask.sum(1), 3)                    # every token picks exactly k experts
    np.testing.assert_allclose(probs, s / s.sum(1, keepdims=True), rtol=1e-5)


def test_expert_bias_changes_selection_not_gate_values():
    router, _ = make_router(expert_bias=True)
    x = Tensor(np.random.default_rng(3).standard_normal((64, 16)).astype(np.float32))
    idx0, w0, _, _ = router(x)
    bias = np.zeros(8, np.float32)
    bias[5] = 10.0                                                   # force expert 5 into every token's top-k
    router.expert_bias.set_data(Tensor(bias))
    idx1, w1, _, probs = router(x)
    assert (idx1.asnumpy() == 5).any(1).all()
    assert not (idx0.asnumpy() == 5).any(1).all()
    # gates are the unbiased scores of the chosen experts, renormalised: recompute from the raw scores
    logits = x.asnumpy() @ router.weight.asnumpy().T
    s = 1 / (1 + np.exp(-logits))
    chosen = np.take_along_axis(s, idx1.asnumpy(), 1)
    np.testing.assert_allclose(w1.asnumpy(), 2.5 * chosen / chosen.sum(1, keepdims=True), rtol=1e-5)
