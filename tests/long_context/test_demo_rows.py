"""tools/long_context_demo.py's comparison rows: the NTK / YaRN configs really change the model's RoPE tables
(same weights, scaled positions), and the report table prints one row per comparison."""
import importlib.util
import os

import numpy as np

from pangu_ms.config import load_config
from pangu_ms.model import build_model
from tests.conftest import ROOT, tiny_overrides


def _demo():
    spec = importlib.util.spec_from_file_location("long_context_demo", os.path.join(ROOT, "tools",
                                                                                    "long_context_demo.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _rope_tables(cfg):
    rope = build_model(cfg).layers[0].attention.rope
    return [rope.cos.asnumpy(), rope.sin.asnumpy()]


def test_scaled_configs_change_the_rope_tables_and_the_table_has_their_rows():
    demo = _demo()
    cfg = load_config(None, tiny_overrides(**{"model.max_position_embeddings": 64}))
    plain = _rope_tables(cfg)
    for name in ("ntk", "yarn"):
        scaled = demo.scaled_config(cfg, name, 4.0, 16)
        assert (scaled.long_context.rope_scaling, scaled.long_context.rope_scaling_factor,
                scaled.long_context.rope_original_max_position) == (name, 4.0, 16)
        tables = _rope_tables(scaled)
        assert any(not np.allclose(a, b) for a, b in zip(tables, plain)), name
    pk = {"lengths": [16, 64], "mean_accuracy": {"16": 1.0, "64": 0.25}, "accuracy": [[1.0] * 5, [0.25] * 5],
          "logprob": [[-0.1] * 5, [-5.0] * 5]}
    res = {"passkey_before": pk, "passkey_after": pk, "long_length": 64, "timings_s": {
        "pretrain_s": 1, "extend_s": 1, "eval_before_s": 1, "eval_after_s": 1, "eval_scaling_s": 2},
        "schedule": "16 -> 64", "total_s": 60, "trials": 2, "heldout_loss_before": 3.0, "heldout_loss_after": 2.5,
        "sub_stages": [{"seq_length": 64}],
        "scaling_rows": {"NTK": {"passkey": pk, "heldout_loss": 2.9}, "YaRN": {"passkey": pk, "heldout_loss": 2.8}}}
    table = demo.render_table(res)
    assert "| pretrained + NTK x4, no training | 1.00 | 0.25 |" in table
    assert "| pretrained + YaRN x4, no training | 1.00 | 0.25 |" in table and "evaluations 4 s" in table


def test_scaling_extension_schedule_keeps_the_base_and_scales_each_sub_stage():
    from pangu_ms.train.long_context import sub_stage_config
    demo = _demo()
    cfg = load_config(os.path.join(ROOT, "yaml/tiny_cpu_long_context.yaml"))
    short = cfg.train.seq_length
    for name in ("ntk", "yarn"):
        var = demo.scaled_schedule(cfg, name, short)
        assert var.train.output_dir == cfg.train.output_dir + "_" + name
        for i, step in enumerate(cfg.long_context.schedule):
            sub, raised = sub_stage_config(var, i), sub_stage_config(cfg, i)
            assert raised.model.rope_theta == step.rope_theta != cfg.model.rope_theta    # the recipe raises it
            assert sub.model.rope_theta == cfg.model.rope_theta                           # the variant keeps it
            assert (sub.long_context.rope_scaling, sub.long_context.rope_scaling_factor,
                    sub.long_context.rope_original_max_position) == (name, step.seq_length / short, short)
            assert (sub.train.seq_length, sub.train.steps, sub.train.lr) == \
                (raised.train.seq_length, raised.train.steps, raised.train.lr)
    pk = {"lengths": [16, 64], "mean_accuracy": {"16": 1.0, "64": 0.75}, "accuracy": [[1.0] * 5, [0.75] * 5],
          "logprob": [[-0.1] * 5, [-1.0] * 5]}
    res = {"passkey_before": pk, "passkey_after": pk, "long_length": 64, "timings_s": {
        "pretrain_s": 1, "extend_s": 1, "eval_before_s": 1, "eval_after_s": 1, "scaling_extension_s": 5},
        "schedule": "16 -> 64", "total_s": 60, "trials": 2, "heldout_loss_before": 3.0, "heldout_loss_after": 2.5,
        "sub_stages": [{"seq_length": 64}], "pretrain_rope_theta": "10000",
        "scaling_extension_rows": {"NTK": {"passkey": pk, "heldout_loss": 2.9}}}
    table = demo.render_table(res)
    assert "| extended with NTK instead (base 10000, same steps) | 1.00 | 0.75 |" in table
    assert "NTK / YaRN extensions 5 s" in table
