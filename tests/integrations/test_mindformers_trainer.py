"""mindformers.Trainer drives the registered pangu_ms model through a MindFormers-style YAML on CPU: the first
logged loss equals the pangu_ms model's loss on the same first batch, and training lowers the loss."""
import os
import re
import subprocess
import sys

import numpy as np
import yaml
from mindspore import Tensor

from pangu_ms.config import load_config
from pangu_ms.data.preprocess import preprocess
from pangu_ms.data.mindrecord_io import read_rows
from pangu_ms.model import CausalLMLoss, build_model
from tests.conftest import ROOT, tiny_overrides

TEXT = "\n\n".join(f"To be, or not to be, that is question number {i}: whether 'tis nobler in the mind."
                   for i in range(300))


def test_trainer_trains_registered_model(tmp_path):
    (tmp_path / "c.txt").write_text(TEXT, encoding="utf-8")
    overrides = tiny_overrides(**{"train.seq_length": 32, "model.vocab_size": 320})
    data = tmp_path / "data"
    preprocess([(str(tmp_path / "c.txt"), 1.0)], data, 32, vocab_size=320, valid_fraction=0.0, seed=1,
               progress=False, log=lambda *a: None)
    split = next(p for p in (data).rglob("train") if p.is_dir())
    with open(os.path.join(ROOT, "yaml/mindformers/tiny_cpu_trainer.yaml"), encoding="utf-8") as f:
        mf = yaml.safe_load(f)
    steps, bs = 12, 2
    mf["output_dir"] = str(tmp_path / "out")
    mf["runner_config"]["batch_size"] = bs
    mf["train_dataset"]["batch_size"] = bs
    mf["train_dataset"]["data_loader"].update(dataset_dir=str(split), num_samples=steps * bs)
    mf["train_dataset_task"]["dataset_config"] = mf["train_dataset"]
    mf["lr_schedule"].update(learning_rate=1e-2, lr_end=1e-3, warmup_steps=1, total_steps=steps)
    mf["model"]["model_config"].update(recipe=os.path.join(ROOT, "yaml/tiny_cpu.yaml"), overrides=overrides)
    mf["callbacks"] = [{"type": "MFLossMonitor"}]
    recipe = tmp_path / "mf.yaml"
    recipe.write_text(yaml.safe_dump(mf), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, os.path.join(ROOT, "run/train.py"), "--config", str(recipe)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    log = r.stdout + r.stderr
    assert r.returncode == 0, r.stderr[-3000:]
    losses = [float(x) for x in re.findall(r"loss:\[\s*([0-9.]+)/", log)]
    assert len(losses) == steps, log[-2000:]
    # the same model (same recipe + seed) on the first batch, computed here without MindFormers
    first = read_rows(next(p for p in split.iterdir() if p.suffix == ".mindrecord"))[0][:bs]
    cfg = load_config(os.path.join(ROOT, "yaml/tiny_cpu.yaml"), overrides)
    net = CausalLMLoss(build_model(cfg), cfg.model.mtp_loss_weight)
    ref = float(net(Tensor(first[:, :-1]), Tensor(first[:, 1:]))[0].asnumpy())
    assert abs(losses[0] - ref) < 1e-4, (losses[0], ref)
    assert np.mean(losses[-3:]) < losses[0] - 0.5
