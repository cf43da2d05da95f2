"""An interrupted and resumed run reproduces the uninterrupted run's losses exactly (single process), and
gradient accumulation equals the large-batch step."""
import mindspore as ms
import numpy as np
from mindspore import Tensor

from pangu_ms.model import CausalLMLoss, build_model
from pangu_ms.train.loop import Trainer
from pangu_ms.train.optim import build_optimizer
from pangu_ms.train.step import TrainStep, compile_step
from tests.conftest import tiny_overrides
from pangu_ms.config import load_config


def run_cfg(out, **extra):
    return load_config(None, tiny_overrides(**{
        "data.source": "synthetic", "model.num_layers": 2, "model.mtp_depth": 0, "train.steps": 6, "train.save_interval": 3, "train.log_interval": 2,
        "train.eval_interval": 100, "train.eval_batches": 1, "train.sample_tokens": 0, "train.peak_flops": 1e11,
        "train.output_dir": str(out), "parallel.micro_batch_size": 2, **extra}))


def test_resume_reproduces_uninterrupted_losses(tmp_path):
    full = Trainer(run_cfg(tmp_path / "full"), progress=False).train()["losses"]
    first = Trainer(run_cfg(tmp_path / "cut"), progress=False).train(stop_after=3)["losses"]
    assert sorted(first) == [0, 1, 2]
    resumed = Trainer(run_cfg(tmp_path / "cut"), progress=False)
    second = resumed.train()["losses"]
    assert resumed.start_step == 3 and sorted(second) == [3, 4, 5]
    for step in range(6):
        got = first[step] if step < 3 else second[step]
        assert got == full[step], (step, got, full[step])      # bit-exact
    assert full[5] < full[0]


def test_gradient_accumulation_equals_large_batch(small_cfg):
    cfg = small_cfg(**{"moe.aux_loss_scope": "sequence", "train.steps": 2, "train.global_batch_size": 4})
    ids = np.random.default_rng(0).integers(0, cfg.model.vocab_size, (2, 4, 17)).astype(np.int32)
    w = cfg.model.mtp_loss_weight
    big = build_model(cfg)
    step = compile_step(TrainStep(CausalLMLoss(big, w), build_optimizer(big.trainable_params(), cfg.train), 1.0),
                        "graph")
    acc_net = build_model(cfg)
    acc = TrainStep(CausalLMLoss(acc_net, w), build_optimizer(acc_net.trainable_params(), cfg.train), 1.0,
                    accumulate=True)
    micro, apply = ms.jit(acc.micro), ms.jit(acc.apply)
    for s in range(2):
        out = step(Tensor(ids[s, :, :-1]), Tensor(ids[s, :, 1:]))
        losses = [micro(Tensor(ids[s, h:h + 2, :-1]), Tensor(ids[s, h:h + 2, 1:]))[0] for h in (0, 2)]
        norm = apply(Tensor(2.0, ms.float32))
        np.testing.assert_allclose(np.mean([float(v.asnumpy()) for v in losses]), float(out[0].asnumpy()),
                                   rtol=1e-6)
        np.testing.assert_allclose(float(norm.asnumpy()), float(out[-1].asnumpy()), rtol=1e-5)
    for p, q in zip(big.trainable_params(), acc_net.trainable_params()):
        np.testing.assert_allclose(q.asnumpy(), p.asnumpy(), rtol=1e-5, atol=1e-6)
