"""Dispatchers against a token-loop numpy reference: dropless implementations agree and drop nothing;
drop-and-pad keeps the first C pairs per expert and reports the reference drop rate."""
import numpy as np
import pytest
from mindspore import Tensor

from pangu_ms.backend import get_backend
from pangu_ms.config import ModelConfig
from pangu_ms.layers.init import Initializer
from pangu_ms.moe.dispatcher import (CapacityDispatcher, MaskedDenseDispatcher, SortedBlockDispatcher,
                                     capacity)
from pangu_ms.moe.experts import RoutedExperts
from tests.moe.reference import moe_reference

T, H, F, E, K = 48, 12, 10, 6, 2


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    experts = RoutedExperts(E, H, F, Initializer(ModelConfig(hidden_size=H), 0), get_backend())
    experts.w_gate_up.set_data(Tensor(rng.standard_normal((E, H, 2 * F)).astype(np.float32) * 0.3))
    experts.w_down.set_data(Tensor(rng.standard_normal((E, F, H)).astype(np.float32) * 0.3))
    x = rng.standard_normal((T, H)).astype(np.float32)
    # skewed routing: expert 0 is popular, so capacity limits bite
    idx = np.stack([np.where(rng.random(T) < 0.6, 0, rng.integers(1, E, T)),
                    rng.integers(1, E, T)], 1)
    idx[:, 1] = np.where(idx[:, 1] == idx[:, 0], (idx[:, 0] + 1) % E, idx[:, 1])
    w = rng.random((T, K)).astype(np.float32)
    return experts, x, idx.astype(np.int32), w


def _ref(experts, x, idx, w, cap=None):
    return moe_reference(x.astype(np.float64), idx, w.astype(np.float64),
                         experts.w_gate_up.asnumpy().astype(np.float64),
                         experts.w_down.asnumpy().astype(np.float64), cap)


@pytest.mark.parametrize("disp", [MaskedDenseDispatcher(E, K), SortedBlockDispatcher(E, K, 8),
                                  SortedBlockDispatcher(E, K, 5)])
def test_dropless_matches_reference(setup, disp):
    experts, x, idx, w = setup
    y, drop = disp(Tensor(x), Tensor(idx), Tensor(w), experts)
    ref, ref_drop = _ref(experts, x, idx, w)
    assert ref_drop == 0 and float(drop.asnumpy()) == 0
    np.testing.assert_allclose(y.asnumpy(), ref, rtol=2e-4, atol=2e-5)


def test_every_token_reaches_exactly_its_k_experts(setup):
    """Probe the dispatcher with one-hot weights: token t's output for choice c is FFN_{idx[t,c]}(x_t) alone."""
    experts, x, idx, _ = setup
    for c in range(K):
        w = np.zeros((T, K), np.float32)
        w[:, c] = 1.0
        y, _ = SortedBlockDispatcher(E, K, 8)(Tensor(x), Tensor(idx), Tensor(w), experts)
        for t in (0, 7, 31):
            e = idx[t, c]
            one = experts.per_group(Tensor(x[t:t + 1][None]), Tensor(np.array([e], np.int32))).asnumpy()[0, 0]
            np.testing.assert_allclose(y.asnumpy()[t], one, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("cf", [0.5, 1.0, 1.5, 4.0])
def test_drop_and_pad_matches_reference(setup, cf):
    experts, x, idx, w = setup
    y, drop = CapacityDispatcher(E, K, cf)(Tensor(x), Tensor(idx), Tensor(w), experts)
    cap = capacity(T, E, K, cf)
    assert cap == int(np.ceil(cf * T * K / E))
    ref, ref_drop = _ref(experts, x, idx, w, cap)
    assert abs(float(drop.asnumpy()) - ref_drop) < 1e-6
    if cf < 1.5:
        assert ref_drop > 0                      # the skewed routing really overflows expert 0
    np.testing.assert_allclose(y.asnumpy(), ref, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("block", [8, 5])
def test_sorted_block_gradients_equal_masked_dense(setup, block):
    """d(sum y * g)/d(x, w, expert weights): sorted-block (gather in, scatter-add out) == masked-dense."""
    import mindspore as ms
    experts, x, idx, w = setup
    g = np.random.default_rng(3).standard_normal((T, H)).astype(np.float32)

    def grads(disp):
        def f(xx, ww):
            return (disp(xx, Tensor(idx), ww, experts)[0] * Tensor(g)).sum()
        out = ms.value_and_grad(f, (0, 1), experts.trainable_params())(Tensor(x), Tensor(w))
        (dx, dw), dp = out[1]
        return [dx.asnumpy(), dw.asnumpy()] + [p.asnumpy() for p in dp]

    for a, b in zip(grads(SortedBlockDispatcher(E, K, block)), grads(MaskedDenseDispatcher(E, K))):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("experts_k, impl", [((8, 2), "masked_dense"), ((16, 4), "masked_dense"),
                                            ((16, 2), "sorted_block"), ((32, 4), "sorted_block"),
                                            ((256, 8), "sorted_block")])
def test_auto_rule_picks_by_experts_per_choice(experts_k, impl):
    from pangu_ms.config import MoEConfig
    from pangu_ms.moe.dispatcher import build_dispatcher
    e, k = experts_k
    cfg = MoEConfig(num_experts=e, top_k=k)
    assert cfg.resolved_dropless_impl() == impl
    kind = {"masked_dense": MaskedDenseDispatcher, "sorted_block": SortedBlockDispatcher}
    assert isinstance(build_dispatcher(cfg), kind[impl])
    other = "sorted_block" if impl == "masked_dense" else "masked_dense"
    forced = MoEConfig(num_experts=e, top_k=k, dropless_impl=other)      # an explicit choice is kept
    assert isinstance(build_dispatcher(forced), kind[other])


@pytest.mark.parametrize("override, key", [("moe.dropless_impl=grouped", "moe.dropless_impl"),
                                           ("moe.sorted_block_size=0", "moe.sorted_block_size")])
def test_bad_dropless_settings_name_their_key(override, key):
    from pangu_ms.config import ConfigError, load_config
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config("yaml/small_cpu.yaml", [override])
