"""Recompute (``train.recompute``) leaves the math unchanged: loss and every gradient of the compiled (graph mode)
loss are bit-identical to no recompute, for every module and ``full``; it composes with gradient accumulation,
MTP (every model here has an MTP module, which the modules cover too) and query-chunked attention. Bad values
are one ConfigError before anything compiles.

Compiles are the cost (~5-10 s each), so the modules are checked in groups (every module is in a compiled group, so a
module that changed the math would change its group's result): the masked-dense dispatcher (shared expert
folded into the experts), the sorted-block one (shared expert separate), and with query-chunked attention; plus
``full`` and gradient accumulation: 8 graphs in all.
"""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from pangu_ms.config import ConfigError, load_config
from pangu_ms.config.recompute import RECOMPUTE_MODULES
from pangu_ms.model import CausalLMLoss, build_model
from pangu_ms.model.recompute import apply_recompute
from tests.conftest import tiny_overrides

# 1 dense + 1 MoE layer + MTP (an MoE layer): every module has something to act on
BASE = {"model.num_layers": 2, "model.mtp_depth": 1, "model.mtp_loss_weight": 0.3}
MASKED = {"moe.dropless_impl": "masked_dense"}             # shared expert folded into the expert matmuls
SORTED = {"moe.dropless_impl": "sorted_block", "moe.sorted_block_size": 4}   # shared expert separate
GROUP_MASKED = ["norm", "core_attn", "experts", "mtp", "mlp_act"]
GROUP_SORTED = ["mla_up_proj", "moe_act", "mlp"]
# shared_expert: its input also feeds the router / dispatcher, and with the shared expert recomputed MindSpore
# sums that input's two gradient contributions in the other order: gradients differ in the last bit (<= 3e-8
# here), so it is checked to 1e-6, with chunked attention
GROUP_CHUNKED = ["core_attn", "shared_expert", "norm"]


def _cfg(**extra):
    return load_config(None, tiny_overrides(**{**BASE, **extra}))


def _batch(n=2, seed=0):
    ids = np.random.default_rng(seed).integers(0, 64, (n, 17)).astype(np.int32)
    return Tensor(ids[:, :-1]), Tensor(ids[:, 1:])


def _compiled(cfg, recompute):
    """Compiled value_and_grad of the loss with ``recompute``: batch -> [loss, grads...] as numpy."""
    net = build_model(cfg, recompute=recompute)
    gf = ms.value_and_grad(CausalLMLoss(net, cfg.model.mtp_loss_weight), None, net.trainable_params(),
                           has_aux=True)

    def step(x, y):
        return gf(x, y)
    fn = ms.jit(step)

    def run(batch):
        outs, grads = fn(*batch)
        return [outs[0].asnumpy()] + [g.asnumpy() for g in grads]
    return run


def _assert_identical(got, ref, what):
    assert len(got) == len(ref)
    for i, (a, b) in enumerate(zip(got, ref)):
        assert np.array_equal(a, b), f"{what}: output {i} differs by {np.abs(a - b).max()}"


@pytest.fixture(scope="module")
def refs():
    """No-recompute references of both dispatchers (one graph each)."""
    fns = {"masked": _compiled(_cfg(**MASKED), "none"), "sorted": _compiled(_cfg(**SORTED), "none")}
    return {"fn": fns, "masked": fns["masked"](_batch()), "sorted": fns["sorted"](_batch())}


def test_groups_cover_every_module():
    assert set(GROUP_MASKED + GROUP_SORTED + GROUP_CHUNKED) == set(RECOMPUTE_MODULES)


@pytest.mark.parametrize("recompute", [GROUP_MASKED, "full"])
def test_recompute_is_bit_identical(refs, recompute):
    _assert_identical(_compiled(_cfg(**MASKED), recompute)(_batch()), refs["masked"], f"recompute={recompute}")


def test_bit_identical_under_gradient_accumulation(refs):
    """TrainStep(accumulate=True).micro with GROUP_SORTED: after one micro-batch the buffers hold exactly the
    reference gradients, after a second one exactly their sum."""
    from pangu_ms.train.optim import build_optimizer
    from pangu_ms.train.step import TrainStep
    cfg = _cfg(**SORTED)
    b1, b2 = _batch(seed=0), _batch(seed=1)
    net = build_model(cfg, recompute=GROUP_SORTED)
    names = [p.name for p in net.trainable_params()]           # the reference's gradient order
    step = TrainStep(CausalLMLoss(net, cfg.model.mtp_loss_weight), build_optimizer(net.trainable_params(),
                                                                                   cfg.train), accumulate=True)
    micro = ms.jit(step.micro)
    l1 = micro(*b1)[0].asnumpy()
    acc = {w.name: a for w, a in zip(step.weights, step.acc)}
    r1 = refs["sorted"]
    _assert_identical([l1] + [acc[n].asnumpy() for n in names], r1, f"recompute={GROUP_SORTED}")
    micro(*b2)
    r2 = refs["fn"]["sorted"](b2)
    for n, g1, g2 in zip(names, r1[1:], r2[1:]):
        assert np.array_equal(acc[n].asnumpy(), g1 + g2), n


def test_composes_with_chunked_attention():
    cfg = _cfg(**SORTED, **{"long_context.attention_chunk": 4})
    ref = _compiled(cfg, "none")(_batch())
    got = _compiled(cfg, GROUP_CHUNKED)(_batch())
    for i, (a, b) in enumerate(zip(got, ref)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6, err_msg=f"output {i}")


@pytest.mark.parametrize("module,count", [("norm", 4 * 3), ("mla_up_proj", 8 * 3), ("core_attn", 3),
                                          ("moe_act", 3 * 2), ("mlp_act", 1), ("experts", 2), ("shared_expert", 2), ("mlp", 1),
                                          ("mtp", 3 + 8)])
def test_each_module_marks_its_cells(module, count):
    """Per module, the Cells marked (3 decoder layers incl. MTP's; 2 MoE; sandwich norm: 4 norms a layer)."""
    net = build_model(_cfg(**SORTED))
    marked = apply_recompute(net, [module])
    assert marked == [module] * count
    net = build_model(_cfg(**SORTED))
    full = apply_recompute(net, "full")
    # per layer: input / post-attention / pre-MLP / post-MLP norms, attention, and the MLP (dense) or the
    # dispatcher, experts and shared expert (MoE); the router is not recomputed (model/recompute.py says why)
    assert full == ["full"] * (6 + 8 + 8)
    moe_layers = [net.layers[1], net.mtp[0].layer]
    assert all(ly.moe.experts._has_config_recompute and not ly.moe.router._has_config_recompute for ly in moe_layers)


def test_layers_per_stage_recompute_the_first_layers_whole():
    """train.recompute_layers_per_stage=[1] (one stage): decoder layer 0 is recomputed whole, layer 1 gets the
    modules of train.recompute, the MTP layer is not counted; the math stays bit-identical (masked-dense)."""
    cfg = _cfg(**SORTED, **{"train.recompute_layers_per_stage": "[1]", "train.recompute": "[core_attn]"})
    net = build_model(cfg)
    first, second = net.layers[0], net.layers[1]
    assert first.attention._has_config_recompute and first.input_norm._has_config_recompute
    assert not second.attention._has_config_recompute and second.attention.core._has_config_recompute
    mtp_layer = net.mtp[0].layer
    assert not mtp_layer.attention._has_config_recompute and mtp_layer.attention.core._has_config_recompute
    assert apply_recompute(build_model(_cfg(**SORTED)), frozenset(), whole_layers={1}) == ["full"] * 8


def test_layers_per_stage_is_bit_identical(refs):
    cfg = _cfg(**MASKED, **{"train.recompute_layers_per_stage": "[2]"})
    _assert_identical(_compiled(cfg, "none")(_batch()), refs["masked"], "recompute_layers_per_stage=[2]")


@pytest.mark.parametrize("value,match", [
    ("nrom", "unknown recompute module 'nrom'"),
    (["norm", "attention"], "unknown recompute module 'attention'"),
    (["full"], "not list items"),
    (3, "train.recompute: expected one of"),
])
def test_bad_names_are_one_config_error(value, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, tiny_overrides(**BASE) + [f"train.recompute={value!r}" if not isinstance(value, list)
                                                    else "train.recompute=[" + ",".join(value) + "]"])


@pytest.mark.parametrize("extra,module,why", [
    ({"model.mtp_depth": 0}, "mtp", "model.mtp_depth is 0"),
    ({"model.num_dense_layers": 0}, "mlp", "no dense FFN layers"),
    ({"moe.num_shared_experts": 0}, "shared_expert", "num_shared_experts is 0"),
    ({**MASKED}, "shared_expert", "masked-dense dispatcher"),
    ({"model.attention_type": "gqa", "model.num_kv_heads": 1, "model.head_dim": 8}, "mla_up_proj",
     "not mla"),
])
def test_module_with_nothing_to_act_on(extra, module, why):
    with pytest.raises(ConfigError, match=why):
        load_config(None, tiny_overrides(**{**BASE, **extra, "train.recompute": module}))


def test_auto_needs_a_budget():
    with pytest.raises(ConfigError, match="train.memory_budget_gb"):
        load_config(None, tiny_overrides(**BASE, **{"train.recompute": "auto"}))
