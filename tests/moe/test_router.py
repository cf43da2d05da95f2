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


def test_group_limited_routing_matches_numpy():
    """8 experts in 4 groups of 2, top-3 inside the best 2 groups (ranked by the sum of their two best scores,
    with a negative expert bias so that a masked 0.0 would not be enough): numpy chooses independently."""
    router, _ = make_router(router_num_groups=4, router_group_topk=2, expert_bias=True)
    free, _ = make_router(expert_bias=True)
    wg = np.random.default_rng(4).standard_normal((8, 16)).astype(np.float32)
    bias = np.full(8, -2.0, np.float32)
    for r in (router, free):
        r.weight.set_data(Tensor(wg))
        r.expert_bias.set_data(Tensor(bias))
    x = np.random.default_rng(5).standard_normal((60, 16)).astype(np.float32)
    idx = router(Tensor(x))[0].asnumpy()
    s = 1.0 / (1.0 + np.exp(-(x.astype(np.float64) @ wg.T.astype(np.float64)))) + bias
    group_score = np.sort(s.reshape(60, 4, 2), -1)[..., -2:].sum(-1)              # [T, 4]
    best_groups = np.argsort(-group_score, 1)[:, :2]
    allowed = np.zeros((60, 8), bool)
    for t in range(60):
        for g in best_groups[t]:
            allowed[t, 2 * g: 2 * g + 2] = True
    ref = np.argsort(-np.where(allowed, s, -np.inf), 1)[:, :3]
    np.testing.assert_array_equal(np.sort(idx, 1), np.sort(ref, 1))
    assert all(allowed[t, idx[t]].all() for t in range(60))
    unlimited = free(Tensor(x))[0].asnumpy()                                    # the limit binds somewhere
    assert (np.sort(unlimited, 1) != np.sort(idx, 1)).any(axis=1).sum() >= 5


def test_router_group_keys_are_validated():
    from pangu_ms.config import load_config
    from pangu_ms.config.errors import ConfigError
    from tests.conftest import tiny_overrides
    for sets, key in [({"moe.router_num_groups": 3}, "moe.router_num_groups"),
                      ({"moe.router_num_groups": 2, "moe.router_group_topk": 3}, "moe.router_group_topk"),
                      ({"moe.router_num_groups": 4, "moe.router_group_topk": 1, "moe.top_k": 2},
                       "moe.router_group_topk")]:
        with pytest.raises(ConfigError, match=key):
            load_config(None, tiny_overrides(**sets))


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


# ---------------------------------------------------------------- aux-loss-free bias update (moe.bias_update)
def _bias_net(small_cfg, **extra):
    from pangu_ms.model import build_model
    cfg = small_cfg(**{"moe.expert_bias": "true", "moe.expert_bias_update_rate": 0.01, "moe.aux_loss_coeff": 0.0,
                       "model.mtp_depth": 0, "data.source": "synthetic", **extra})
    return cfg, build_model(cfg)


def test_bias_update_matches_numpy_for_a_hand_made_load(small_cfg):
    from pangu_ms.moe.bias_update import build_expert_bias_update, expert_bias_step
    _, net = _bias_net(small_cfg)
    update = build_expert_bias_update(net)
    assert len(update.biases) == len(net.moe_layer_ids) == 2
    load = np.array([[10, 2, 4, 0], [4, 4, 4, 4]], np.float32)       # mean 4: above / below / equal; balanced
    before = [b.asnumpy().copy() for b in update.biases]
    for _ in range(3):
        update(Tensor(load))
    for b, b0, row in zip(update.biases, before, load):
        ref = b0
        for _ in range(3):
            ref = expert_bias_step(ref, row, 0.01)
        np.testing.assert_allclose(b.asnumpy(), ref, rtol=0, atol=1e-7)
    np.testing.assert_allclose(update.biases[0].asnumpy(), [-0.03, 0.03, 0.0, 0.03], atol=1e-7)
    np.testing.assert_array_equal(update.biases[1].asnumpy(), 0.0)


def test_train_step_updates_bias_from_the_step_load_and_checkpoints_it(small_cfg, tmp_path):
    from pangu_ms.moe.bias_update import expert_bias_step
    from pangu_ms.train.checkpoint import load_checkpoint, save_checkpoint
    from pangu_ms.train.optim import build_optimizer
    from pangu_ms.train.step import TrainStep, compile_step
    cfg, net = _bias_net(small_cfg)
    from pangu_ms.model import CausalLMLoss
    cell = TrainStep(CausalLMLoss(net, cfg.model.mtp_loss_weight), build_optimizer(net.trainable_params(), cfg.train),
                     1.0)
    step = compile_step(cell, "graph")
    routers = [net.layers[i].moe.router for i in net.moe_layer_ids]
    ref = [np.zeros(4) for _ in routers]
    for s in range(4):
        ids = np.random.default_rng(s).integers(0, cfg.model.vocab_size, (2, 17)).astype(np.int32)
        load = step(Tensor(ids[:, :-1]), Tensor(ids[:, 1:]))[4].asnumpy()
        ref = [expert_bias_step(b, row, 0.01) for b, row in zip(ref, load)]
    for r, b in zip(routers, ref):
        assert not r.expert_bias.requires_grad
        np.testing.assert_allclose(r.expert_bias.asnumpy(), b, atol=1e-6)
    assert any(np.abs(b).max() > 0 for b in ref)
    # the bias is a Parameter of the train step: saved and restored with the checkpoint
    path = save_checkpoint(cell, str(tmp_path), 3, {}, "safetensors", 2)
    saved = [r.expert_bias.asnumpy().copy() for r in routers]
    for r in routers:
        r.expert_bias.set_data(Tensor(np.zeros(4, np.float32)))
    load_checkpoint(cell, path)
    for r, b in zip(routers, saved):
        np.testing.assert_array_equal(r.expert_bias.asnumpy(), b)


def test_bias_update_lowers_the_load_cv_of_a_skewed_router(small_cfg):
    """Router rows 0 and 1 scaled x20 (tools/expert_bias_demo.py): with the bias update the load coefficient of
    variation on a held batch drops (measured 0.36 -> 0.25), without it it grows (0.36 -> 0.54)."""
    import importlib.util
    import os
    path = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "expert_bias_demo.py")
    spec = importlib.util.spec_from_file_location("expert_bias_demo", path)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)

    def make(**fixed):
        return small_cfg(**{"data.source": "synthetic", "model.mtp_depth": 0, **fixed})
    cv_off = demo.skewed_router_cv(make, rate=0.0, steps=60)
    cv_on = demo.skewed_router_cv(make, rate=0.01, steps=60)
    assert cv_off[0] == cv_on[0] and cv_off[0] > 0.3, (cv_off, cv_on)      # same skewed start
    assert cv_on[1] < 0.75 * cv_on[0] and cv_on[1] < 0.6 * cv_off[1], (cv_off, cv_on)
