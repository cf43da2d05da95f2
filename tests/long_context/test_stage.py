"""The long_context stage: derived sub-stage configs, weights carried over from pretraining, a short run with
an interruption and resume, skip of finished sub-stages (synthetic data, tiny model)."""
import os

import mindspore as ms
import numpy as np
import pytest

from pangu_ms.config import ConfigError, load_config
from pangu_ms.parallel.runtime import Runtime
from pangu_ms.train import long_context as lcm
from tests.conftest import tiny_overrides

RT = Runtime.single_process()


def _schedule_yaml(tmp_path, pre_dir, out_dir):
    p = tmp_path / "lc.yaml"
    p.write_text(f"""
stage: {{name: long_context, init_from: {pre_dir}}}
train: {{output_dir: {out_dir}}}
long_context:
  attention_chunk: 16
  schedule:
    - {{name: a, seq_length: 32, rope_theta: 40000.0, steps: 2, global_batch_size: 2, lr: 1.0e-3}}
    - {{name: b, seq_length: 48, rope_theta: 90000.0, rope_scaling: yarn, rope_scaling_factor: 1.5, steps: 2,
       lr: 5.0e-4, warmup_steps: 1}}
""")
    return str(p)


def _common():
    return tiny_overrides(**{"data.source": "synthetic", "train.mode": "pynative", "train.peak_flops": 1e11,
                             "train.sample_tokens": 0, "train.log_interval": 1, "train.eval_batches": 1,
                             "train.eval_interval": 1000, "train.save_interval": 1000, "train.steps": 2})


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    from pangu_ms.train.loop import Trainer
    d = tmp_path_factory.mktemp("pre")
    cfg = load_config(None, _common() + [f"train.output_dir={d}"])
    Trainer(cfg, runtime=RT, progress=False).train()
    return str(d)


def test_sub_stage_config(tmp_path, pretrained):
    cfg = load_config(_schedule_yaml(tmp_path, pretrained, tmp_path / "lc"), _common())
    a, b = lcm.sub_stage_config(cfg, 0), lcm.sub_stage_config(cfg, 1)
    assert (a.train.seq_length, a.model.rope_theta, a.model.max_position_embeddings) == (32, 40000.0, 32)
    assert a.train.lr == 1e-3 and a.train.steps == 2 and a.long_context.rope_scaling == "none"
    assert a.stage.init_from == pretrained and a.train.output_dir.endswith("0_a")
    assert b.long_context.rope_scaling == "yarn" and b.long_context.rope_original_max_position == 32
    assert b.stage.init_from.endswith(os.path.join("0_a", "checkpoints"))
    assert b.train.global_batch_size == cfg.train.global_batch_size
    assert cfg.model.rope_theta == 10000.0            # the recipe itself is untouched


def test_schedule_validation(tmp_path, pretrained):
    cfg = load_config(_schedule_yaml(tmp_path, pretrained, tmp_path / "lc"), _common())
    bad = cfg.long_context.schedule[1]
    bad.seq_length = 8
    with pytest.raises(ConfigError, match=r"schedule\[1\].seq_length"):
        lcm.validate_schedule(cfg)
    with pytest.raises(ConfigError, match="init_from"):
        lcm.resolve_checkpoint(str(tmp_path / "nothing"))


def test_new_length_keeps_every_weight(tmp_path, pretrained):
    """Weights loaded from the pretraining checkpoint into the longer-context model are identical."""
    from pangu_ms.train.checkpoint import latest_checkpoint
    from pangu_ms.train.loop import Trainer
    cfg = load_config(_schedule_yaml(tmp_path, pretrained, tmp_path / "lc"), _common())
    sub = lcm.sub_stage_config(cfg, 1)                       # the longer one, with YaRN scaling
    import dataclasses
    sub = dataclasses.replace(sub, stage=dataclasses.replace(sub.stage, init_from=lcm.resolve_checkpoint(pretrained)))
    tr = Trainer(sub, runtime=RT, progress=False)
    tr.train(stop_after=0)                                     # initialise (loads init_from), no step
    saved = ms.load_checkpoint(os.path.join(latest_checkpoint(os.path.join(pretrained, "checkpoints")),
                                            "model.safetensors"), format="safetensors")
    params = list(tr.net.get_parameters())
    assert len(params) > 20
    for p in params:
        assert p.name in saved, p.name
        np.testing.assert_array_equal(p.asnumpy(), saved[p.name].asnumpy(), err_msg=p.name)


def test_stage_runs_interrupts_and_resumes(tmp_path, pretrained):
    out = tmp_path / "lc"
    cfg = load_config(_schedule_yaml(tmp_path, pretrained, out), _common())
    s1 = lcm.run_long_context(cfg, progress=False, stop_after=3)     # sub-stage a (2 steps) + 1 step of b
    assert not s1["finished"]
    assert [len(s["losses"]) for s in s1["sub_stages"]] == [2, 1]
    assert os.path.isfile(out / "0_a" / lcm.DONE_FILE) and not os.path.isfile(out / "1_b" / lcm.DONE_FILE)
    s2 = lcm.run_long_context(cfg, progress=False)
    assert s2["finished"] and s2["sub_stages"][0]["skipped"]
    assert list(s2["sub_stages"][1]["losses"]) == [1]                 # resumed at step 1 of sub-stage b
    assert np.isfinite(s2["valid_loss"])
    # run/train.py dispatch reaches the stage (everything finished: only skips)
    from pangu_ms.train.stages import run_stage
    s3 = run_stage(cfg, progress=False)
    assert all(s.get("skipped") for s in s3["sub_stages"])
