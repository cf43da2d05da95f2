"""The rl stage end to end on a tiny config: KV-cache rollouts, rewards, jitted GRPO steps, eval, resume."""
import json
import os

import numpy as np

from pangu_ms.data.chat import render_prompt
from pangu_ms.rl.tasks import all_problems, split_problems, train_digit_tokenizer, write_jsonl


def test_rl_stage_runs_and_resumes(small_cfg, tmp_path):
    from pangu_ms.model import build_model
    from pangu_ms.train.checkpoint import save_checkpoint
    from pangu_ms.train.rl import run_rl
    train, held = split_problems(all_problems(20, 5), 0.1, seed=0)
    write_jsonl(str(tmp_path / "train.jsonl"), train)
    write_jsonl(str(tmp_path / "held.jsonl"), held[:6])
    tok = train_digit_tokenizer([render_prompt(p["prompt"]) + str(p["answer"]) for p in train], 300)
    tok.save(tmp_path / "tok")
    over = {"model.vocab_size": 300, "stage.name": "rl", "stage.init_from": str(tmp_path / "init"),
            "train.steps": 4, "train.output_dir": str(tmp_path / "run"), "train.save_interval": 2,
            "train.log_interval": 2, "train.lr": 1e-3, "rl.data": str(tmp_path / "train.jsonl"),
            "rl.eval_data": str(tmp_path / "held.jsonl"), "rl.tokenizer": str(tmp_path / "tok" / "tokenizer.json"),
            "rl.group_size": 3, "rl.prompts_per_step": 2, "rl.max_prompt_tokens": 12, "rl.max_new_tokens": 3,
            "rl.kl_coef": 0.1, "rl.eval_samples": 2, "rl.dynamic_sampling": False}
    cfg = small_cfg(**over)
    net = build_model(cfg, seed=7)
    save_checkpoint(net, str(tmp_path / "init"), 0)
    first = run_rl(cfg, progress=False, stop_after=2)
    assert "eval_before" in first and "eval_after" not in first and len(first["curve"]) == 1
    out = run_rl(cfg, progress=False)
    assert out["curve"][-1]["step"] == 4 and "eval_after" in out
    ev = out["eval_after"]
    assert ev["problems"] == 6 and 0 <= ev["reward"] <= 1.2 and "cap/add/correct" in ev
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    keys = set().union(*rows)
    for k in ("rl/kl", "rl/entropy", "rl/clip_frac", "rl/response_length", "reward/correct", "reward/format",
              "reward/add", "perf/rollout_tokens_per_s", "loss/aux", "eval/reward"):
        assert k in keys, k
    assert all(np.isfinite(r["rl/loss"]) for r in rows if "rl/loss" in r)
    assert os.path.isfile(tmp_path / "run" / "rl_summary.json")
    ck = sorted(os.listdir(tmp_path / "run" / "checkpoints"))
    assert ck and os.path.isfile(tmp_path / "run" / "checkpoints" / ck[-1] / "rl_state.json")
    # the policy moved away from the reference (all-zero rewards here: the MoE aux loss moves it)
    assert any(r["rl/kl"] > 0 for r in rows if "rl/kl" in r)
