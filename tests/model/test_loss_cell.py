"""The model computes no loss: its outputs are logits and MoE side outputs; the loss Cell (CE + weighted MTP +
aux) equals numpy over those logits, and wrapping the model in a loss Cell keeps every parameter name."""
import mindspore as ms
import numpy as np
from mindspore import Tensor

from pangu_ms.model import CausalLMLoss, CrossEntropy, build_model
from pangu_ms.rl.loss import GRPOLoss, TokenLogProbs


def np_ce(logits, targets, mask=None):
    logits = logits.astype(np.float64)
    top = logits.max(-1, keepdims=True)
    lse = np.log(np.exp(logits - top).sum(-1)) + top[:, 0]
    per = lse - logits[np.arange(len(targets)), targets]
    if mask is None:
        return per.mean()
    return (per * mask).sum() / max(mask.sum(), 1.0)


def test_model_returns_logits_and_side_outputs_not_a_loss(small_cfg):
    cfg = small_cfg(**{"model.mtp_depth": 2})
    net = build_model(cfg, seed=3)
    assert not any(isinstance(c, CrossEntropy) for _, c in net.cells_and_names())
    assert not hasattr(net, "mtp_weight")
    b, s, v = 2, cfg.train.seq_length, cfg.model.vocab_size
    ids = np.random.default_rng(0).integers(0, v, (b, s + 1)).astype(np.int32)
    logits, mtp_logits, aux, load, drop = net(Tensor(ids[:, :-1]), Tensor(ids[:, 1:]))
    assert logits.shape == (b * s, v)
    assert [t.shape for t in mtp_logits] == [(b * (s - 1), v), (b * (s - 2), v)]
    assert aux.shape == () and float(aux.asnumpy()) > 0
    assert load.shape == (cfg.model.num_layers - cfg.model.num_dense_layers, cfg.moe.num_experts)
    # without the next tokens there is no MTP output; the main logits do not depend on them
    plain = net(Tensor(ids[:, :-1]))
    assert len(plain[1]) == 0
    np.testing.assert_array_equal(plain[0].asnumpy(), logits.asnumpy())


def test_loss_cell_equals_numpy_ce_mtp_and_aux(small_cfg):
    cfg = small_cfg(**{"model.mtp_depth": 2, "model.mtp_loss_weight": 0.3})
    model = build_model(cfg, seed=3)
    b, s, v = 2, cfg.train.seq_length, cfg.model.vocab_size
    rng = np.random.default_rng(1)
    ids = rng.integers(0, v, (b, s + 1)).astype(np.int32)
    mask = (rng.random((b, s)) < 0.6).astype(np.float32)
    x, y = Tensor(ids[:, :-1]), Tensor(ids[:, 1:])
    logits, mtp_logits, aux, _, _ = model(x, y)
    labels = ids[:, 1:]
    for m in (None, mask):
        lm = np_ce(logits.asnumpy(), labels.reshape(-1), None if m is None else m.reshape(-1))
        mtp = np.mean([np_ce(t.asnumpy(), labels[:, j + 1:].reshape(-1),
                             None if m is None else m[:, j + 1:].reshape(-1)) for j, t in enumerate(mtp_logits)])
        args = (x, y) if m is None else (x, y, Tensor(m))
        loss, lm_ms, mtp_ms, aux_ms, _, _ = CausalLMLoss(model, 0.3)(*args)
        np.testing.assert_allclose(float(lm_ms.asnumpy()), lm, rtol=1e-5)
        np.testing.assert_allclose(float(mtp_ms.asnumpy()), mtp, rtol=1e-5)
        np.testing.assert_allclose(float(aux_ms.asnumpy()), float(aux.asnumpy()), rtol=1e-6)
        np.testing.assert_allclose(float(loss.asnumpy()), lm + 0.3 * mtp + float(aux.asnumpy()), rtol=1e-5)
    # mtp weight 0 (SFT without MTP on responses): reported, not added
    loss0, lm0, mtp0, aux0, _, _ = CausalLMLoss(model, 0.0)(x, y)
    np.testing.assert_allclose(float(loss0.asnumpy()), float(lm0.asnumpy()) + float(aux0.asnumpy()), rtol=1e-6)
    assert float(mtp0.asnumpy()) > 0


def test_loss_cells_keep_the_model_parameter_names(small_cfg):
    from pangu_ms.train.optim import build_optimizer
    from pangu_ms.train.step import TrainStep
    mode = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        _check_parameter_names(small_cfg, build_optimizer, TrainStep)
    finally:
        ms.set_context(mode=mode)          # later tests run in the suite's mode


def _check_parameter_names(small_cfg, build_optimizer, TrainStep):
    model = build_model(small_cfg())
    names = [p.name for p in model.get_parameters()]
    assert "embedding.weight" in names and any(n.startswith("layers.1.moe.") for n in names)
    for cell in (CausalLMLoss(model, 0.3), GRPOLoss(model), TokenLogProbs(model)):
        assert [p.name for p in cell.get_parameters()] == names, type(cell).__name__
    assert CausalLMLoss(model, 0.3).cross_entropy is not None      # the Ascend plan's loss op lives here
    step = TrainStep(CausalLMLoss(model, 0.3), build_optimizer(model.trainable_params(), small_cfg().train))
    step_names = {p.name for p in step.get_parameters()}
    assert set(names) <= step_names
    assert not any(n.startswith(("net.", "model.", "loss_cell.")) for n in step_names)
