"""Both long-context recipes load, their derived sub-stage configs validate, and the 718B sub-stages' Ascend
plans shard the sequence dim over context parallelism."""
import os

from pangu_ms.config import load_config
from pangu_ms.train.long_context import sub_stage_config, validate_schedule

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_718b_published_schedule_and_cp_plan():
    from pangu_ms.parallel.plan import build_plan, validate_plan
    cfg = load_config(os.path.join(ROOT, "yaml/pangu_ultra_moe_718b_long_context.yaml"))
    validate_schedule(cfg)
    got = []
    for i in range(len(cfg.long_context.schedule)):
        s = sub_stage_config(cfg, i)
        got.append((s.train.seq_length, s.model.rope_theta, s.train.global_batch_size, s.train.lr))
        assert s.parallel.world_size == 6144 and s.model.max_position_embeddings == s.train.seq_length
        plan = validate_plan(build_plan(s))
        assert plan.context["semi_auto"]["dataset_strategy"][0] == (s.parallel.dp, s.parallel.cp)
        core = [o for o in plan.ops if o.name == "attention.core"][0]
        assert core.inputs[0].dims[2] == ("cp",)                     # q [B, N, S, D]: S over cp
    assert got == [(32768, 1.6e6, 384, 7.5e-6), (131072, 2.56e7, 96, 7.5e-6)]
    assert sub_stage_config(cfg, 1).model.max_position_embeddings == 131072


def test_tiny_recipe():
    cfg = load_config(os.path.join(ROOT, "yaml/tiny_cpu_long_context.yaml"))
    validate_schedule(cfg)
    lens = [cfg.train.seq_length] + [s.seq_length for s in cfg.long_context.schedule]
    assert lens[-1] == 4 * lens[0] and cfg.stage.name == "long_context"
    last = sub_stage_config(cfg, len(lens) - 2)
    assert last.model.rope_theta > cfg.model.rope_theta and last.data.path.endswith(f"_s{lens[-1]}")
    assert last.data.tokenizer.endswith("tokenizer.json") or not os.path.isdir(cfg.data.path)
