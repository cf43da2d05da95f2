"""Pretraining, SFT and RL all build the one TrainStep over their own loss Cell; the single-process runtime is
the one Runtime type; the three import cycles (model <-> moe, rl <-> train, parallel -> train) are gone."""
import ast
import json
import os

import numpy as np

from pangu_ms.model import CausalLMLoss
from pangu_ms.parallel.runtime import Runtime
from pangu_ms.rl.loss import GRPOLoss
from pangu_ms.train.step import TrainStep

PKG = os.path.join(os.path.dirname(__file__), "..", "..", "pangu_ms")


def test_pretrain_sft_and_rl_build_the_same_train_step(small_cfg, tmp_path):
    from pangu_ms.rl.tasks import all_problems, train_digit_tokenizer, write_jsonl
    from pangu_ms.train.loop import Trainer
    from pangu_ms.train.rl import RLTrainer
    from pangu_ms.train.sft import SFTTrainer
    common = {"data.source": "synthetic", "train.sample_tokens": 0, "train.peak_flops": 1e10,
              "model.vocab_size": 300, "train.output_dir": str(tmp_path / "run")}
    pre = Trainer(small_cfg(**common), runtime=Runtime.single_process(), progress=False)
    problems = all_problems(20, 5)[:8]
    write_jsonl(str(tmp_path / "p.jsonl"), problems)
    with open(tmp_path / "sft.jsonl", "w") as f:
        for p in problems:
            f.write(json.dumps({"prompt": p["prompt"], "response": str(p["answer"])}) + "\n")
    tok = train_digit_tokenizer([p["prompt"] + str(p["answer"]) for p in problems], 300)
    tok.save(tmp_path / "tok")
    tok_path = str(tmp_path / "tok" / "tokenizer.json")
    sft = SFTTrainer(small_cfg(**common, **{"stage.name": "sft", "sft.data": str(tmp_path / "sft.jsonl"),
                                            "sft.tokenizer": tok_path, "sft.mtp_on_response": False}),
                     runtime=Runtime.single_process(), progress=False)
    rl = RLTrainer(small_cfg(**common, **{"stage.name": "rl", "stage.init_from": str(tmp_path / "none"),
                                          "rl.data": str(tmp_path / "p.jsonl"), "rl.tokenizer": tok_path,
                                          "rl.max_prompt_tokens": 12, "rl.max_new_tokens": 3}), progress=False)
    for trainer, loss_cls in ((pre, CausalLMLoss), (sft, CausalLMLoss), (rl, GRPOLoss)):
        assert type(trainer.step_cell) is TrainStep
        assert type(trainer.step_cell.net) is loss_cls and trainer.step_cell.net.model is trainer.net
    assert pre.step_cell.net.mtp_weight == small_cfg().model.mtp_loss_weight > 0
    assert sft.step_cell.net.mtp_weight == 0.0                    # sft.mtp_on_response: false, set once


def test_single_process_runtime():
    rt = Runtime.single_process()
    assert (rt.rank, rt.world, rt.dp_rank, rt.dp_size, rt.is_distributed, rt.hooks) == (0, 1, 0, 1, False, None)
    assert rt.grad_reducer(None) is None and rt.barrier() is None and rt.describe() == "rank 0/1 (single process)"
    batch = np.arange(12).reshape(4, 3)
    np.testing.assert_array_equal(rt.micro_batch(batch), batch)


def _imports(path):
    """Absolute module names imported by one file of the package (relative imports resolved)."""
    rel = os.path.relpath(path, os.path.dirname(PKG))[:-3].replace(os.sep, ".").split(".")
    here = rel[:-1]                       # the package the file belongs to
    out = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.ImportFrom):
            base = here[:len(here) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            out.add(mod)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def _package_imports(sub):
    root = os.path.join(PKG, sub)
    return {f: _imports(os.path.join(root, f)) for f in os.listdir(root) if f.endswith(".py")}


def test_removed_import_cycles_stay_removed():
    bad = []
    for sub, forbidden in (("moe", "pangu_ms.model"), ("layers", "pangu_ms.model"), ("rl", "pangu_ms.train"),
                           ("parallel", "pangu_ms.train"), ("model", "pangu_ms.train")):
        for f, mods in _package_imports(sub).items():
            bad += [f"pangu_ms/{sub}/{f} imports {m}" for m in mods if m == forbidden or
                    m.startswith(forbidden + ".")]
    assert not bad, bad
