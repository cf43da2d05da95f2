"""The long-context stage on the MindFormers route: mindformers.Trainer builds the model of a long_context
sub-stage (its length and RoPE base) from the pangu_ms recipe and starts from a pangu_ms checkpoint. Its first
loss equals pangu_ms's loss Cell for that sub-stage on the same batch with the checkpoint loaded (independently
derived here), and differs from the seeded init and from the pretraining RoPE base (both really applied)."""
import dataclasses
import os
import re
import subprocess
import sys

import pytest
import yaml
from mindspore import Tensor

from pangu_ms.config import ConfigError, load_config
from pangu_ms.data.mindrecord_io import read_rows
from pangu_ms.data.preprocess import preprocess
from pangu_ms.model import CausalLMLoss, build_model
from pangu_ms.train.checkpoint import load_checkpoint, save_checkpoint
from tests.conftest import ROOT, tiny_overrides

TEXT = "\n\n".join(f"The pass key is #{1000 + 37 * i}. Remember it. The grass is green, the sky is blue {i}."
                   for i in range(300))
SHORT, LONG = 16, 32


def _recipe(tmp_path) -> str:
    """A tiny long_context recipe: pretraining at 16 tokens (base 1e4), one sub-stage s32 (32 tokens, base 4e4)."""
    data = {}
    for item in tiny_overrides(**{"model.vocab_size": 320, "train.seq_length": SHORT, "model.mtp_depth": 1}):
        key, value = item.split("=", 1)
        section, name = key.split(".")
        data.setdefault(section, {})[name] = yaml.safe_load(value)
    data["stage"] = {"name": "long_context", "init_from": str(tmp_path / "pretrain")}
    data["data"] = {"source": "mindrecord", "path": str(tmp_path / "data")}
    data["long_context"] = {"schedule": [{"name": "s32", "seq_length": LONG, "rope_theta": 40000.0, "steps": 2,
                                          "lr": 1e-3, "min_lr": 1e-4, "warmup_steps": 1}]}
    path = tmp_path / "lc.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return str(path)


def test_trainer_continues_a_pangu_checkpoint_in_a_long_context_sub_stage(tmp_path):
    recipe = _recipe(tmp_path)
    (tmp_path / "c.txt").write_text(TEXT, encoding="utf-8")
    preprocess([(str(tmp_path / "c.txt"), 1.0)], tmp_path / "data_s32", LONG, vocab_size=320, valid_fraction=0.0,
               seed=1, progress=False, log=lambda *a: None)
    split = next(p for p in (tmp_path / "data_s32").rglob("train") if p.is_dir())
    pretrain = load_config(recipe)
    checkpoint = save_checkpoint(build_model(pretrain, seed=99), str(tmp_path / "pretrain"), 5)   # "pretrained"

    with open(os.path.join(ROOT, "yaml/mindformers/tiny_cpu_long_context_trainer.yaml"), encoding="utf-8") as f:
        mf = yaml.safe_load(f)
    bs = 2
    mf["output_dir"] = str(tmp_path / "out")
    mf["runner_config"]["batch_size"] = mf["train_dataset"]["batch_size"] = bs
    mf["train_dataset"]["data_loader"].update(dataset_dir=str(split), num_samples=2 * bs)
    mf["train_dataset_task"]["dataset_config"] = mf["train_dataset"]
    mf["lr_schedule"].update(warmup_steps=1, total_steps=2)
    mf["model"]["model_config"].update(recipe=recipe, long_context_stage="s32", init_from="")
    mf["callbacks"] = [{"type": "MFLossMonitor"}]
    path = tmp_path / "mf.yaml"
    path.write_text(yaml.safe_dump(mf), encoding="utf-8")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "run/train.py"), "--config", str(path)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=600, env=dict(os.environ, PYTHONPATH=ROOT))
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-3000:]
    assert f"initialised weights from {checkpoint}" in log
    first_loss = float(re.findall(r"loss:\[\s*([0-9.]+)/", log)[0])

    batch = read_rows(next(p for p in split.iterdir() if p.suffix == ".mindrecord"))[0][:bs]
    x, y = Tensor(batch[:, :-1]), Tensor(batch[:, 1:])
    sub = dataclasses.replace(pretrain, model=dataclasses.replace(pretrain.model, rope_theta=40000.0,
                                                                  max_position_embeddings=LONG))

    def loss(cfg, loaded=True):
        net = build_model(cfg)
        if loaded:
            load_checkpoint(net, checkpoint)
        return float(CausalLMLoss(net, cfg.model.mtp_loss_weight)(x, y)[0].asnumpy())
    want = loss(sub)
    assert abs(first_loss - want) < 2e-5, (first_loss, want)         # printed with 6 decimals
    assert abs(loss(sub, loaded=False) - want) > 1e-3           # the checkpoint was loaded
    long_base_1e4 = dataclasses.replace(sub, model=dataclasses.replace(sub.model, rope_theta=1e4))
    assert abs(loss(long_base_1e4) - want) > 5e-5    # the sub-stage's RoPE base was used (measured: 1.7e-4 apart)


def test_unknown_sub_stage_is_one_error(tmp_path):
    from pangu_ms.integrations.mindformers import PanguMoEConfig
    with pytest.raises(ConfigError, match=r"long_context_stage: 's64' is not a sub-stage .*\['s32'\]"):
        PanguMoEConfig(recipe=_recipe(tmp_path), long_context_stage="s64").to_pangu()
