"""The jitted train step: the tiny model overfits a fixed batch, and AdamW's decay groups are right."""
import numpy as np
from mindspore import Tensor

from pangu_ms.model import CausalLMLoss, build_model
from pangu_ms.train.optim import decay_groups
from pangu_ms.train.step import TrainStep, compile_step
from pangu_ms.train.optim import build_optimizer


def test_tiny_model_overfits_a_fixed_batch(small_cfg):
    cfg = small_cfg(**{"train.lr": 1e-2, "train.min_lr": 1e-3, "train.warmup_steps": 2, "train.steps": 40})
    net = build_model(cfg)
    step = compile_step(TrainStep(CausalLMLoss(net, cfg.model.mtp_loss_weight),
                                  build_optimizer(net.trainable_params(), cfg.train), 1.0), "graph")
    ids = np.random.default_rng(0).integers(0, cfg.model.vocab_size, (2, 17)).astype(np.int32)
    x, y = Tensor(ids[:, :-1]), Tensor(ids[:, 1:])
    losses = [float(step(x, y)[1].asnumpy()) for _ in range(40)]         # LM loss
    assert losses[-1] < 0.1 * losses[0], losses
    assert all(np.isfinite(losses))


def test_weight_decay_skips_norms_and_embedding(small_cfg):
    net = build_model(small_cfg())
    decay, rest = decay_groups(net.trainable_params(), 0.1)
    assert all(p.ndim >= 2 for p in decay["params"])
    names = {p.name for p in rest["params"]}
    assert "embedding.weight" in names and "final_norm.weight" in names
    assert rest["weight_decay"] == 0.0 and decay["weight_decay"] == 0.1
