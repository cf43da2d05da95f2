"""LR schedule values against hand-computed numbers, single and multi-phase."""
import math

import numpy as np

from pangu_ms.config import load_config
from pangu_ms.train.schedule import lr_values


def test_cosine_with_warmup():
    t = load_config(None, ["train.steps=10", "train.warmup_steps=2", "train.lr=1.0", "train.min_lr=0.0"]).train
    lr = lr_values(t)
    assert np.allclose(lr[:2], [0.5, 1.0])
    # after warm-up: 0.5 * (1 + cos(pi * (u - 2) / 7)) for u = 2..9
    assert np.allclose(lr[2:], [0.5 * (1 + math.cos(math.pi * k / 7)) for k in range(8)], atol=1e-7)
    assert lr[-1] == 0.0


def test_wsd_and_phases():
    cfg = load_config(None, ["train.steps=15", "train.phases=[{name: general, steps: 10, lr: 1.0, min_lr: 0.1, "
                             "lr_schedule: wsd, decay_fraction: 0.2, warmup_steps: 2}, {name: anneal, steps: 5, "
                             "lr: 0.1, min_lr: 0.1, lr_schedule: constant}]"])
    lr = lr_values(cfg.train)
    assert len(lr) == 15
    np.testing.assert_allclose(lr[:10], [0.5, 1, 1, 1, 1, 1, 1, 1, 0.55, 0.1], rtol=1e-6)
    np.testing.assert_allclose(lr[10:], 0.1, rtol=1e-6)


def test_optimizer_schedule_cell_matches_the_values():
    import mindspore as ms
    from pangu_ms.train.schedule import lr_schedule_cell
    for sets in (["train.steps=10", "train.warmup_steps=2", "train.lr=1.0", "train.min_lr=0.1"],
                 ["train.steps=15", "train.phases=[{name: g, steps: 10, lr: 1.0, min_lr: 0.1, lr_schedule: wsd, "
                  "decay_fraction: 0.2, warmup_steps: 2}, {name: a, steps: 5, lr: 0.1, min_lr: 0.01, "
                  "lr_schedule: cosine}]"],
                 ["train.steps=6", "train.lr_schedule=constant", "train.warmup_steps=3", "train.lr=0.5"]):
        t = load_config(None, sets).train
        cell = lr_schedule_cell(t)
        got = [float(cell(ms.Tensor([i], ms.int32)).asnumpy()) for i in range(t.steps + 2)]
        want = list(lr_values(t))
        np.testing.assert_allclose(got[:t.steps], want, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(got[t.steps:], want[-1], rtol=1e-6)     # past the end: the last value holds
