"""train.on_nonfinite: a forced divergence (lr = 1e30: step 1 is finite and blows the weights up, every later
step is NaN) is skipped inside the jitted step (weights, moments and optimizer step unchanged) and counted, or
stops the run with one error line naming the 1-based step; the latest checkpoint is always finite."""
import json
import re
import os
import subprocess
import sys

import numpy as np
import pytest

from pangu_ms.config import ConfigError, load_config
from pangu_ms.model import CausalLMLoss, build_model
from pangu_ms.train import checkpoint as ck
from pangu_ms.train.divergence import DivergenceError, LossSpikeDetector
from pangu_ms.train.loop import Trainer
from tests.conftest import ROOT, tiny_overrides

DIVERGING = {"data.source": "synthetic", "model.num_layers": 2, "model.mtp_depth": 0, "train.steps": 5,
             "train.lr": 1e30, "train.warmup_steps": 0, "train.save_interval": 1, "train.log_interval": 1,
             "train.eval_interval": 100, "train.eval_batches": 1, "train.sample_tokens": 0,
             "train.peak_flops": 1e11}


def _saved(run, step, cfg):
    net = build_model(cfg)
    from pangu_ms.train.optim import build_optimizer
    from pangu_ms.train.step import TrainStep
    cell = TrainStep(CausalLMLoss(net, cfg.model.mtp_loss_weight), build_optimizer(net.trainable_params(), cfg.train))
    ck.load_checkpoint(cell, ck.checkpoint_paths(str(run), step).directory)
    return {p.name: p.asnumpy() for p in cell.get_parameters()}


def test_skip_step_counts_skips_and_stops_after_n_in_a_row(tmp_path):
    """run/train.py in graph mode: step 2 skipped (warning), step 3 the 2nd in a row -> exit 3, one error line."""
    out = tmp_path / "run"
    sets = tiny_overrides(**DIVERGING, **{"train.on_nonfinite": "skip_step", "train.max_skipped_steps": 2,
                                          "train.output_dir": str(out)})
    args = [sys.executable, os.path.join(ROOT, "run/train.py"), "--config", os.path.join(ROOT, "yaml/tiny_cpu.yaml"),
            "--no-progress"] + [a for s in sets for a in ("--set", s)]
    r = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 3, (r.stdout + r.stderr)[-3000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: step 3: 2 non-finite steps in a row (train.max_skipped_steps=2); training stopped. "
                      "No update of these steps was applied"], r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    assert "warning: step 2: loss nan / grad norm nan is not finite; update skipped (1 in a row, 1 in this run" \
        in (out / "train.log").read_text()
    assert [s for s, _ in ck.step_directories(str(out))] == [1, 2]
    assert ck.newest_checkpoint(str(out)).endswith("step_00000002")
    assert ck.read_manifest(ck.checkpoint_paths(str(out), 2).directory)["skipped_steps"] == 1
    cfg = load_config(None, sets)
    after_1, after_2 = _saved(out, 1, cfg), _saved(out, 2, cfg)
    assert max(np.abs(v).max() for v in after_1.values()) > 1e20          # step 1 really blew the weights up
    for name, value in after_1.items():        # the skipped step changed nothing (weights, moments, step count)
        assert np.isfinite(value).all(), name
        np.testing.assert_array_equal(after_2[name], value, err_msg=name)
    rows = {json.loads(line)["step"]: json.loads(line) for line in open(out / "metrics.jsonl")}
    assert rows[1]["train/skipped_steps"] == 0 and rows[2]["train/skipped_steps"] == 1


def test_stop_names_the_step_and_keeps_the_last_finite_checkpoint(tmp_path):
    out = tmp_path / "run"
    cfg = load_config(None, tiny_overrides(**DIVERGING, **{"train.mode": "pynative", "train.output_dir": str(out)}))
    with pytest.raises(DivergenceError, match=r"^step 2: loss nan / grad norm nan is not finite; training stopped "
                                              r"\(train.on_nonfinite=stop\)"):
        Trainer(cfg, progress=False).train()
    assert [s for s, _ in ck.step_directories(str(out))] == [1]          # nothing saved after the divergence
    assert all(np.isfinite(v).all() for v in _saved(out, 1, cfg).values())


@pytest.mark.parametrize("key, value, message", [
    ("train.lr", "nan", "train.lr: must be a finite number, got nan"),
    ("train.grad_clip", "inf", "train.grad_clip: must be a finite number, got inf"),
    ("train.max_skipped_steps", "0", "train.max_skipped_steps: must be a finite number > 0, got 0"),
    ("train.on_nonfinite", "ignore", "train.on_nonfinite"),
    ("train.loss_spike_factor", "0.5", "train.loss_spike_factor: must be 0 (off) or > 1"),
    ("train.loss_spike_window", "0", "train.loss_spike_window: must be a finite number > 0, got 0"),
])
def test_bad_divergence_settings_are_named(key, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, tiny_overrides(**{key: value}))


def test_loss_spike_is_logged_against_the_running_median():
    logged = []
    d = LossSpikeDetector(factor=2.0, window=3, log=logged.append)
    # window not full yet at 9.0; then median(3, 9, 2) = 3 -> 7 > 6 spikes; median(9, 2, 7) = 7 -> 13 is < 14
    seq = [3.0, 9.0, 2.0, 7.0, 13.0, float("nan"), 100.0]
    flags = [d.check(i + 1, x) for i, x in enumerate(seq)]
    assert flags == [False, False, False, True, False, False, True]   # NaN is the non-finite guard's business
    assert d.spikes == 2 and logged[0].startswith("warning: step 4: loss spike, 7.0000 > 2 x the median 3.0000")
    assert not any(LossSpikeDetector(0.0, 3, logged.append).check(i, 1e9) for i in range(10))
