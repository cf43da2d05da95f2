"""An interrupted and resumed run reproduces the uninterrupted run's losses exactly (single process), also when
its newest checkpoint is truncated, and gradient accumulation equals the large-batch step."""
import json

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from pangu_ms.model import CausalLMLoss, build_model
from pangu_ms.train import checkpoint as ck
from pangu_ms.train.checkpoint import checkpoint_paths
from pangu_ms.train.loop import Trainer
from pangu_ms.train.optim import build_optimizer
from pangu_ms.train.step import TrainStep, compile_step
from tests.conftest import tiny_overrides
from tests.reuse import fresh_run, snapshot
from pangu_ms.config import load_config


def run_cfg(out, **extra):
    return load_config(None, tiny_overrides(**{
        "data.source": "synthetic", "model.num_layers": 2, "model.mtp_depth": 0, "train.steps": 6,
        "train.save_interval": 2, "train.log_interval": 2, "train.eval_interval": 100, "train.eval_batches": 1,
        "train.sample_tokens": 0, "train.peak_flops": 1e11, "train.output_dir": str(out),
        "parallel.micro_batch_size": 2, **extra}))


def test_resume_skips_a_truncated_newest_checkpoint_and_reproduces_losses(tmp_path):
    """Interrupted after 4 of 6 steps (checkpoints step_2, step_4), the newest checkpoint truncated: the rerun
    names it in a warning, resumes from step_2 (next step 3), reproduces the uninterrupted losses bit for bit,
    and metrics.jsonl holds every logged step once."""
    tr = Trainer(run_cfg(tmp_path / "full"), progress=False)
    initial = snapshot(tr)
    full = tr.train()["losses"]
    cut = tmp_path / "cut"
    fresh_run(tr, initial, str(cut))                  # the interrupted run: the same compiled Trainer, reset
    first = tr.train(stop_after=4)["losses"]
    assert sorted(first) == [0, 1, 2, 3]
    newest = checkpoint_paths(str(cut), 4)
    with open(newest.shared, "r+b") as f:
        f.truncate(100)
    resumed = Trainer(run_cfg(cut), progress=False)
    second = resumed.train()["losses"]
    assert resumed.start_step == 2 and sorted(second) == [2, 3, 4, 5]
    log = (cut / "train.log").read_text()
    assert f"warning: skipping checkpoint {newest.directory}: part model.safetensors has 100 bytes" in log
    assert f"resumed from {checkpoint_paths(str(cut), 2).directory} (next step 3)" in log
    for step in range(6):
        got = first[step] if step < 2 else second[step]
        assert got == full[step], (step, got, full[step])      # bit-exact
    assert full[5] < full[0]
    rows = [json.loads(line) for line in open(cut / "metrics.jsonl")]
    train_rows = [r for r in rows if "loss/total" in r]
    assert [r["step"] for r in train_rows] == [2, 4, 6]       # no step twice after the resume
    assert [r["loss/total"] for r in train_rows] == pytest.approx([full[1], full[3], full[5]], rel=1e-6)
    assert [r["step"] for r in rows if "valid/loss" in r] == [6]
    assert ck.checkpoint_problem(newest.directory) is None     # the resumed run rewrote step_4


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
