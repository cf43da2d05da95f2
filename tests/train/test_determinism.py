"""``train.deterministic: true``: the same command gives bit-identical losses run to run (compared as float32
bits), and an interrupted (--stop-after) + resumed run reproduces them too. Subprocesses, because MindSpore's
thread settings must be applied before the first kernel runs; the first three run at the same time. The model is
tiny_cpu cut to 2 layers: its flat gradient buffer (~0.4M values) is long enough for MindSpore's multi-threaded
all-element reduction."""
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


def start(out, *extra):
    """run/train.py on ``out`` as a subprocess (started, not waited for)."""
    cmd = [sys.executable, os.path.join(ROOT, "run/train.py"), "--config", os.path.join(ROOT, "yaml/tiny_cpu.yaml"),
           "--no-progress"] + [a for s in SETS + [f"train.output_dir={out}"] for a in ("--set", s)] + list(extra)
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc):
    try:
        stdout, stderr = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, stderr[-3000:]
    return stdout


def train(out, *extra):
    return finish(start(out, *extra))


def losses(out):
    """{step: float32 bits of the total loss} from metrics.jsonl."""
    with open(os.path.join(out, "metrics.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if "loss/total" in line]
    return {r["step"]: struct.pack(">f", r["loss/total"]).hex() for r in rows}


def test_two_runs_and_a_resumed_run_are_bit_identical(tmp_path):
    a, b, c = (str(tmp_path / n) for n in ("a", "b", "c"))
    # the two full runs and the interrupted one side by side (each is single-threaded: train.deterministic)
    for proc in [start(a), start(b), start(c, "--stop-after", "12")]:
        finish(proc)
    assert sorted(losses(c)) == list(range(1, 13))
    log = train(c)
    assert "resumed from" in log and "(next step 13)" in log, log[-2000:]
    la, lb, lc = losses(a), losses(b), losses(c)
    assert sorted(la) == list(range(1, 31))
    assert la == lb, [(s, la[s], lb.get(s)) for s in la if la[s] != lb.get(s)][:5]
    assert la == lc, [(s, la[s], lc.get(s)) for s in la if la[s] != lc.get(s)][:5]
