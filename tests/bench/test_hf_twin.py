"""The independent numerical oracle: HF transformers' ``DeepseekV3ForCausalLM`` with pangu_ms's weights.

A pre-norm, MTP-free pangu_ms model is the same function as DeepSeek-V3 (pangu_ms/bench/hf.py maps the weights), so
its step-0 loss must equal HF's, and a few AdamW steps with the same learning rates must keep the two in step.
torch and transformers are test dependencies (pyproject.toml ``[test]``); CI installs them, so this never skips there.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is a test dependency: pip install -e '.[test]'")
pytest.importorskip("transformers", reason="transformers is a test dependency: pip install -e '.[test]'")

import mindspore as ms  # noqa: E402

from tests.conftest import tiny_overrides  # noqa: E402

TWIN = tiny_overrides(**{"model.sandwich_norm": "false", "model.mtp_depth": 0, "model.tie_embeddings": "false",
                         "moe.num_shared_experts": 1, "moe.aux_loss_coeff": 0.0, "train.grad_clip": 1.0,
                         "train.lr": 3e-3, "train.warmup_steps": 2, "train.steps": 4, "train.mode": "pynative"})


def _setup():
    from pangu_ms.bench.hf import build_hf_model, check_comparable
    from pangu_ms.config import load_config
    from pangu_ms.model import build_model
    cfg = load_config(None, TWIN)
    assert check_comparable(cfg) == []
    net = build_model(cfg)
    weights = {p.name: p.asnumpy().copy() for p in net.trainable_params()}
    hf = build_hf_model(cfg, weights)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, cfg.model.vocab_size, (2, cfg.train.seq_length + 1)).astype(np.int32)
    return cfg, net, hf, ids


def test_step0_loss_and_logits_equal_hf():
    cfg, net, hf, ids = _setup()
    x, y = ids[:, :-1], ids[:, 1:]
    from pangu_ms.model import CausalLMLoss
    lm = float(CausalLMLoss(net, 0.0)(ms.Tensor(x), ms.Tensor(y))[1].asnumpy())
    with torch.no_grad():
        logits = hf(input_ids=torch.from_numpy(x.astype(np.int64))).logits
        ref = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                torch.from_numpy(y.astype(np.int64)).reshape(-1)).item()
    assert abs(lm - ref) < 1e-5 * max(1.0, abs(ref)), (lm, ref)


def test_training_steps_track_hf():
    from pangu_ms.bench.hf import TorchStep, torch_adamw
    from pangu_ms.train.optim import build_optimizer
    from pangu_ms.train.schedule import lr_values
    from pangu_ms.train.step import TrainStep
    cfg, net, hf, ids = _setup()
    x, y = ids[:, :-1], ids[:, 1:]
    from pangu_ms.model import CausalLMLoss
    step = TrainStep(CausalLMLoss(net, 0.0), build_optimizer(net.trainable_params(), cfg.train), cfg.train.grad_clip)
    ours = [float(step(ms.Tensor(x), ms.Tensor(y))[1].asnumpy()) for _ in range(cfg.train.steps)]
    ts = TorchStep(hf, torch_adamw(hf, cfg.train), cfg.train.grad_clip, [float(v) for v in lr_values(cfg.train)])
    theirs = [ts(torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.int64)))
              for _ in range(cfg.train.steps)]
    assert ours[-1] < ours[0] - 1e-3, ours                      # it trains
    np.testing.assert_allclose(ours, theirs, rtol=2e-4, atol=2e-4)


def test_small_recipe_shape_equals_hf():
    """yaml/small_cpu.yaml's widths (16 experts top-2, MLA ranks, vocab 2048), 2 layers (1 dense + 1 MoE) so it
    stays fast: the HF twin mirrors it and the step-0 loss agrees; both dropless implementations give it."""
    from pangu_ms.bench.hf import build_hf_model, check_comparable
    from pangu_ms.config import load_config
    from pangu_ms.model import CausalLMLoss, build_model
    base = ["model.sandwich_norm=false", "model.mtp_depth=0", "model.num_layers=2", "train.seq_length=32",
            "train.mode=pynative"]
    rng = np.random.default_rng(1)
    losses = {}
    for impl in ("masked_dense", "sorted_block"):
        cfg = load_config("yaml/small_cpu.yaml", base + [f"moe.dropless_impl={impl}"])
        assert check_comparable(cfg) == []
        net = build_model(cfg)
        ids = rng.integers(0, cfg.model.vocab_size, (2, 33)).astype(np.int32) if not losses else ids
        x, y = ids[:, :-1], ids[:, 1:]
        losses[impl] = float(CausalLMLoss(net, 0.0)(ms.Tensor(x), ms.Tensor(y))[1].asnumpy())
    hf = build_hf_model(cfg, {p.name: p.asnumpy().copy() for p in net.trainable_params()})
    with torch.no_grad():
        logits = hf(input_ids=torch.from_numpy(x.astype(np.int64))).logits
        ref = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                torch.from_numpy(y.astype(np.int64)).reshape(-1)).item()
    for impl, lm in losses.items():
        assert abs(lm - ref) < 1e-5 * max(1.0, abs(ref)), (impl, lm, ref)
