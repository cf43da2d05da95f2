"""The real entry under msrun: ``bash run/msrun.sh 2 <recipe>`` trains with DP=2, EP=2, logs the same losses as
the single-process run of the same global batch, and an interrupted 2-rank run -- stopped with --stop-after, then
resumed and killed with ``kill -9`` of rank 1 mid-run, then resumed again -- reproduces the uninterrupted 2-rank
run's losses exactly; each checkpoint holds one expert part per rank. Resharding: the EP=2 checkpoint resumes in
one process (EP 1) and the one-process checkpoint resumes under msrun with EP=2, continuing with the same losses.
Three launches: one of train_worker.py running the uninterrupted run, the --stop-after run and the EP 1 -> 2
resume in sequence on one compiled Trainer (the one run/train.py runs, with run/msrun.sh's defaults dp=2 ep=2
micro-batch 2 spelled out; put back to its initial state between runs), then the kill -9 run and the final resume
through run/msrun.sh itself. The one-process reference and the EP 2 -> 1 resume share one Trainer the same way."""
import json
import os
import shutil
import subprocess
import threading
import time

import pytest

from pangu_ms.config import load_config
from pangu_ms.train import checkpoint as ck
from pangu_ms.train.loop import Trainer
from tests.conftest import ROOT
from tests.distributed.launch import launch
from tests.reuse import fresh_run, snapshot

STEPS = 12
SETS = ["data.source=synthetic", "model.num_layers=2", "train.seq_length=16", "train.global_batch_size=4",
        f"train.steps={STEPS}", "train.save_interval=2", "train.log_interval=1", "train.eval_interval=100",
        "train.eval_batches=1", "train.sample_tokens=0", "train.peak_flops=1e11", "train.warmup_steps=1",
        "train.keep_last=2"]


def msrun(out, *extra, ok=True):
    cmd = ["timeout", "600", "bash", os.path.join(ROOT, "run/msrun.sh"), "2", "yaml/tiny_cpu.yaml", *SETS,
           f"train.output_dir={out}", "--no-progress", *extra]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, PANGU_MS_NO_ENV="1"))
    assert (r.returncode == 0) == ok, (r.stdout + r.stderr)[-4000:]
    return r


def worker_runs(tmp_path, dirs):
    """One msrun launch of train_worker.py: runs of SETS into ``dirs`` = [(output_dir, stop_after[, extra sets])],
    in sequence, with the layout run/msrun.sh 2 chooses for tiny_cpu.yaml (dp=2, ep=2, micro-batch 4 / 2)."""
    spec = {"recipe": "yaml/tiny_cpu.yaml",
            "sets": SETS + ["parallel.dp=2", "parallel.ep=2", "parallel.micro_batch_size=2"],
            "runs": [{"output_dir": str(d[0]), "stop_after": d[1], "sets": list(d[2]) if len(d) > 2 else []}
                     for d in dirs]}
    res, wall, rc = launch(2, "train_worker.py", [json.dumps(spec)], tmp_path, timeout=600)
    assert rc == 0
    assert [r["world"] for r in res.values()] == [2, 2]


def losses(out):
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    steps = [r["step"] for r in rows if "loss/total" in r]
    assert len(steps) == len(set(steps)), steps                      # no step logged twice
    return {r["step"]: r["loss/total"] for r in rows if "loss/total" in r}


def worker_pid(out, rank):
    """The pid of msrun's worker ``rank`` of the run writing to ``out``."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
            cmd = open(f"/proc/{pid}/cmdline", "rb").read()
        except OSError:
            continue
        if b"run/train.py" in cmd and f"train.output_dir={out}".encode() in cmd and \
                b"MS_ROLE=MS_WORKER" in env and f"RANK_ID={rank}".encode() in env:
            return int(pid)
    return None


def kill_when_saved(out, step, rank, killed):
    manifest = ck.checkpoint_paths(str(out), step).manifest
    deadline = time.time() + 500
    while time.time() < deadline and not os.path.isfile(manifest):
        time.sleep(0.01)
    pid = worker_pid(out, rank)
    if pid is not None and os.path.isfile(manifest):
        os.kill(pid, 9)
        killed.append(pid)


def resumed_line(out):
    lines = [line for line in open(os.path.join(out, "train.log")) if "resumed from" in line]
    return lines[-1].split("] ", 1)[1].strip() if lines else None


def test_msrun_trains_like_single_process_and_resumes_after_stop_and_kill(tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    single = load_config("yaml/tiny_cpu.yaml", SETS + [f"train.output_dir={tmp_path / 'single'}",
                                                       "parallel.micro_batch_size=4"])
    one = Trainer(single, progress=False)
    initial = snapshot(one)
    ref = one.train()["losses"]
    # launch 1: the uninterrupted run, the --stop-after=2 run, and (4. below) EP 1 -> 2: the one-process
    # checkpoint step_10 resumed by 2 ranks
    step10 = os.path.join("checkpoints", f"step_{STEPS - 2:08d}")
    shutil.copytree(tmp_path / "single" / step10, tmp_path / "grow" / step10)
    # ... and (5. below) full recompute under DP=2 / EP=2: its own Trainer, 3 steps
    worker_runs(tmp_path, [(full, None), (cut, 2), (tmp_path / "grow", None),
                           (tmp_path / "recompute", 3, ["train.recompute=full"])])
    a = losses(full)
    assert sorted(a) == list(range(1, STEPS + 1))
    # 5. recompute composes with DP / EP under msrun: the same losses as without (both ranks' logs)
    rc = losses(tmp_path / "recompute")
    assert sorted(rc) == [1, 2, 3] and all(rc[s] == a[s] for s in rc), (rc, a)
    assert "recompute: full" in open(tmp_path / "recompute" / "config.yaml").read()
    # 1. --stop-after: one expert part per rank, a manifest naming both
    assert sorted(losses(cut)) == [1, 2]
    manifest = ck.read_manifest(ck.checkpoint_paths(str(cut), 2).directory)
    assert manifest["world"] == 2 and sorted(manifest["parts"]) == \
        ["experts_rank0.safetensors", "experts_rank1.safetensors", "model.safetensors"]
    # 2. resume, then kill -9 rank 1 right after checkpoint step_4 is complete
    killed = []
    killer = threading.Thread(target=kill_when_saved, args=(cut, 4, 1, killed))
    killer.start()
    r = msrun(cut, ok=False)
    killer.join()
    assert killed, "rank 1 was not found / the run ended before step_4 was saved"
    assert resumed_line(cut) == f"resumed from {ck.checkpoint_paths(str(cut), 2).directory} (next step 3)"
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("[msrun.sh] rank 1 died") and str(cut / "msrun_logs" / "worker_1.log") in last, \
        r.stderr[-3000:]
    # 3. resume after the kill: the newest complete checkpoint (>= step_4), every rank from the same step
    msrun(cut)
    line = resumed_line(cut)
    step = int(line.split("(next step ")[1].rstrip(")")) - 1
    assert step >= 4 and line == f"resumed from {ck.checkpoint_paths(str(cut), step).directory} " \
                                 f"(next step {step + 1})"
    rank1 = open(cut / "train_rank1.log").read()
    assert f"resumed from {ck.checkpoint_paths(str(cut), step).directory} (next step {step + 1})" in rank1
    b = losses(cut)
    assert sorted(b) == list(range(1, STEPS + 1))
    for s in a:
        assert a[s] == b[s], (s, a[s], b[s])                           # bit-exact resume under msrun
    assert sorted(os.listdir(cut / "checkpoints")) == [f"step_{STEPS - 2:08d}", f"step_{STEPS:08d}"]
    manifest = ck.read_manifest(ck.checkpoint_paths(str(cut), STEPS).directory)    # written under run/msrun.sh
    assert manifest["world"] == 2 and sorted(manifest["parts"]) == \
        ["experts_rank0.safetensors", "experts_rank1.safetensors", "model.safetensors"]
    for s, loss in ref.items():
        assert a[s + 1] == pytest.approx(loss, rel=1e-5), (s, a[s + 1], loss)

    # 4. resharding, weights and AdamW moments: EP 2 -> 1 (the 2-rank checkpoint step_10 resumed in one process)
    #    and EP 1 -> 2 (the one-process checkpoint step_10 resumed by 2 ranks, in launch 1); steps 11-12 as
    #    uninterrupted
    shutil.copytree(full / step10, tmp_path / "shrink" / step10)
    fresh_run(one, initial, str(tmp_path / "shrink"))         # the one-process Trainer, as if built anew
    got = one.train()["losses"]
    assert sorted(got) == [STEPS - 2, STEPS - 1]
    assert resumed_line(tmp_path / "shrink") == f"resumed from {tmp_path / 'shrink' / step10} (next step {STEPS - 1})"
    assert resumed_line(tmp_path / "grow") == f"resumed from {tmp_path / 'grow' / step10} (next step {STEPS - 1})"
    grown = losses(tmp_path / "grow")
    assert sorted(grown) == [STEPS - 1, STEPS]
    for s in (STEPS - 1, STEPS):
        assert got[s - 1] == pytest.approx(a[s], rel=1e-5), (s, got[s - 1], a[s])
        assert grown[s] == pytest.approx(ref[s - 1], rel=1e-5), (s, grown[s], ref[s - 1])
