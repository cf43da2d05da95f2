"""Whole-model behaviour: output shapes, gradients against finite differences (fp64), DSSN / TinyInit
statistics, GRAPH == PyNative, and overfitting a fixed batch."""
import math

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from pangu_ms.config import load_config
from pangu_ms.model import CausalLMLoss, build_model
from pangu_ms.layers.init import dssn_gammas, tinyinit_std
from tests.conftest import tiny_overrides


def lm_loss(cfg):
    """The pretraining loss Cell over a freshly built model of ``cfg``."""
    return CausalLMLoss(build_model(cfg), cfg.model.mtp_loss_weight)


def loss_grad_fn(net, params):
    """value_and_grad of the total loss (a named function: lambdas inside ms.jit must sit on their own line)."""
    def loss_fn(a, b):
        return net(a, b)[0]
    return ms.value_and_grad(loss_fn, None, params)


def batch(cfg, b=2, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, cfg.model.vocab_size, (b, cfg.train.seq_length + 1)).astype(np.int32)
    return Tensor(ids[:, :-1]), Tensor(ids[:, 1:])


def test_output_shapes_and_loss_composition(small_cfg):
    cfg = small_cfg()
    net = lm_loss(cfg)
    x, y = batch(cfg)
    loss, lm, mtp, aux, load, drop = net(x, y)
    n_moe = cfg.model.num_layers - cfg.model.num_dense_layers
    assert load.shape == (n_moe, cfg.moe.num_experts)
    np.testing.assert_allclose(load.asnumpy().sum(1), 2 * 16 * cfg.moe.top_k)   # every token counted k times
    np.testing.assert_allclose(float(loss.asnumpy()),
                               float(lm.asnumpy()) + cfg.model.mtp_loss_weight * float(mtp.asnumpy())
                               + float(aux.asnumpy()), rtol=1e-6)
    # TinyInit: near-zero logits at start, so the LM loss starts near ln(V)
    assert abs(float(lm.asnumpy()) - math.log(cfg.model.vocab_size)) < 0.3
    assert float(drop.asnumpy()) == 0.0


def test_hidden_states_shape(small_cfg):
    cfg = small_cfg()
    net = build_model(cfg)
    x, _ = batch(cfg, b=3)
    h, _, loads, _ = net.hidden_states(x)
    assert h.shape == (3 * cfg.train.seq_length, cfg.model.hidden_size)
    assert len(loads) == cfg.model.num_layers - cfg.model.num_dense_layers


@pytest.mark.parametrize("extra", [{}, {"moe.dispatcher": "drop_and_pad", "moe.capacity_factor": 1.0},
                                   {"model.sandwich_norm": "false", "moe.dropless_impl": "sorted_block",
                                    "moe.sorted_block_size": 4}])
def test_gradients_match_finite_differences(extra):
    # PyNative: in graph mode MindSpore 2.9 (CPU) may route float64 Parameters through a float32 TensorMove
    # (Load -> Cast F32 -> TensorMove -> Cast F64 in the compiled graph), which rounds the 1e-6 perturbations
    # below and puts float32-sized errors (~1e-3 relative) into the central differences
    ms.set_context(mode=ms.PYNATIVE_MODE)
    cfg = load_config(None, tiny_overrides(**{"model.compute_dtype": "float64", "model.init_method": "normal",
                                              "model.init_std": 0.2, **extra}))
    net = lm_loss(cfg)
    x, y = batch(cfg, seed=1)
    params = net.trainable_params()
    grad_fn = loss_grad_fn(net, params)
    loss0, grads = grad_fn(x, y)
    base = [p.asnumpy().copy() for p in params]
    rng = np.random.default_rng(2)
    eps = 1e-6
    for _ in range(3):
        dirs = [rng.standard_normal(b.shape) for b in base]
        analytic = sum(float((g.asnumpy() * d).sum()) for g, d in zip(grads, dirs))
        vals = []
        for sign in (1, -1):
            for p, b0, d in zip(params, base, dirs):
                p.set_data(Tensor(b0 + sign * eps * d, ms.float64))
            vals.append(float(net(x, y)[0].asnumpy()))
        numeric = (vals[0] - vals[1]) / (2 * eps)
        assert abs(numeric - analytic) <= 1e-5 * max(1.0, abs(analytic)), (numeric, analytic)
    for p, b0 in zip(params, base):
        p.set_data(Tensor(b0, ms.float64))


def test_tinyinit_and_dssn_statistics():
    cfg = load_config("yaml/tiny_cpu.yaml", ["model.hidden_size=256", "model.dense_ffn_hidden=512"])
    net = build_model(cfg)
    std = math.sqrt(1.0 / (2 * 256 * cfg.model.num_layers))
    assert math.isclose(tinyinit_std(cfg.model), std)
    g_attn, g_mlp = dssn_gammas(cfg.model)
    assert math.isclose(g_attn, 0.283 / math.sqrt(4)) and math.isclose(g_mlp, 0.432 / math.sqrt(4))
    mats = {p.name: p.asnumpy() for p in net.get_parameters() if p.ndim >= 2}
    emb = mats.pop("embedding.weight")
    assert abs(emb.std() / 0.5 - 1) < 0.02
    allw = np.concatenate([w.ravel() for w in mats.values()])
    assert abs(allw.std() / std - 1) < 0.02 and abs(allw.mean()) < 1e-4
    for name, w in mats.items():
        if w.size > 4000:
            assert abs(w.std() / std - 1) < 0.1, name
    for p in net.get_parameters():
        if p.name.endswith("post_attn_norm.weight"):
            np.testing.assert_allclose(p.asnumpy(), g_attn, rtol=1e-6)
        elif p.name.endswith("post_mlp_norm.weight"):
            np.testing.assert_allclose(p.asnumpy(), g_mlp, rtol=1e-6)
        elif p.name.endswith("norm.weight"):
            np.testing.assert_allclose(p.asnumpy(), 1.0)
    plain = build_model(load_config("yaml/tiny_cpu.yaml", ["model.sandwich_norm=false"]))
    assert not any("post_attn_norm" in p.name for p in plain.get_parameters())


def test_same_seed_same_weights(small_cfg):
    a, b = build_model(small_cfg()), build_model(small_cfg())
    for p, q in zip(a.get_parameters(), b.get_parameters()):
        np.testing.assert_array_equal(p.asnumpy(), q.asnumpy())


def test_graph_and_pynative_give_the_same_loss_and_grads(small_cfg):
    cfg = small_cfg()
    net = lm_loss(cfg)
    x, y = batch(cfg, seed=3)
    params = net.trainable_params()
    grad_fn = loss_grad_fn(net, params)
    l_py, g_py = grad_fn(x, y)
    l_gr, g_gr = ms.jit(grad_fn)(x, y)
    np.testing.assert_allclose(l_gr.asnumpy(), l_py.asnumpy(), rtol=1e-6)
    for a, b in zip(g_py, g_gr):
        np.testing.assert_allclose(b.asnumpy(), a.asnumpy(), rtol=1e-4, atol=1e-7)
