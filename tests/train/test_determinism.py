"""``train.deterministic: true``: the same command gives bit-identical losses run to run (compared as float32
bits), and an interrupted (--stop-after) + resumed run reproduces them too. Subprocesses, because MindSpore's
thread settings must be applied before the first kernel runs. The model is tiny_cpu cut to 2 layers: its flat
gradient buffer (~0.4M values) is long enough for MindSpore's multi-threaded all-element reduction."""
import json
import os
import struct

import pytest
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SETS = ["model.num_layers=2", "model.mtp_depth=0", "data.source=synthetic", "train.seq_length=16",
        "train.global_batch_size=2", "parallel.micro_batch_size=2", "train.steps=30", "train.warmup_steps=5",
        "train.log_interval=1", "train.eval_interval=1000", "train.save_interval=1000", "train.sample_tokens=0",
        "train.peak_flops=1e10", "train.deterministic=true"]


def train(out, *extra):
    cmd = [sys.executable, os.path.join(ROOT, "run/train.py"), "--config", os.path.join(ROOT, "yaml/tiny_cpu.yaml"),
           "--no-progress"] + [a for s in SETS + [f"train.output_dir={out}"] for a in ("--set", s)] + list(extra)
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def losses(out):
    """{step: float32 bits of the total loss} from metrics.jsonl."""
    with open(os.path.join(out, "metrics.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if "loss/total" in line]
    return {r["step"]: struct.pack(">f", r["loss/total"]).hex() for r in rows}


def test_two_runs_and_a_resumed_run_are_bit_identical(tmp_path):
    a, b, c = (str(tmp_path / n) for n in ("a", "b", "c"))
    train(a)
    train(b)
    train(c, "--stop-after", "12")
    assert sorted(losses(c)) == list(range(1, 13))
    log = train(c)
    assert "resumed from" in log and "(next step 13)" in log, log[-2000:]
    la, lb, lc = losses(a), losses(b), losses(c)
    assert sorted(la) == list(range(1, 31))
    assert la == lb, [(s, la[s], lb.get(s)) for s in la if la[s] != lb.get(s)][:5]
    assert la == lc, [(s, la[s], lc.get(s)) for s in la if la[s] != lc.get(s)][:5]
