"""The real entry under msrun: ``bash run/msrun.sh 2 <recipe>`` trains with DP=2, EP=2, logs the same losses as
the single-process run of the same global batch, and an interrupted + resumed 2-rank run reproduces the
uninterrupted 2-rank run's losses exactly (checkpoints per EP rank)."""
import json
import os
import subprocess

import pytest

from pangu_ms.config import load_config
from pangu_ms.train.loop import Trainer
from tests.conftest import ROOT

SETS = ["data.source=synthetic", "model.num_layers=2", "train.seq_length=16", "train.global_batch_size=4",
        "train.steps=4", "train.save_interval=2", "train.log_interval=1", "train.eval_interval=100",
        "train.eval_batches=1", "train.sample_tokens=0", "train.peak_flops=1e11", "train.warmup_steps=1"]


def msrun(out, *extra):
    cmd = ["timeout", "600", "bash", os.path.join(ROOT, "run/msrun.sh"), "2", "yaml/tiny_cpu.yaml", *SETS,
           f"train.output_dir={out}", "--no-progress", *extra]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, PANGU_MS_NO_ENV="1"))
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    return r


def losses(out):
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    return {r["step"]: r["loss/total"] for r in rows if "loss/total" in r}


def test_msrun_trains_like_single_process_and_resumes_exactly(tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    msrun(full)
    msrun(cut, "--stop-after=2")
    assert sorted(losses(cut)) == [1, 2]
    assert os.path.isdir(cut / "checkpoints" / "rank_1")           # every EP rank keeps its own experts
    msrun(cut)
    a, b = losses(full), losses(cut)
    assert sorted(a) == [1, 2, 3, 4] and sorted(b) == [1, 2, 3, 4]
    for step in a:
        assert a[step] == b[step], (step, a[step], b[step])        # bit-exact resume under msrun
    single = load_config("yaml/tiny_cpu.yaml", SETS + [f"train.output_dir={tmp_path / 'single'}",
                                                       "parallel.micro_batch_size=4"])
    ref = Trainer(single, progress=False).train()["losses"]
    for step, loss in ref.items():
        assert a[step + 1] == pytest.approx(loss, rel=1e-5), (step, a[step + 1], loss)
