"""Run logging: plain log lines (stdout + ``train.log``), tensorboardX scalars, ``metrics.jsonl`` (one JSON
object per logged step, read by ``tools/plot_run.py``), and a tqdm progress bar with ETA on rank 0."""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np


class RunLogger:
    def __init__(self, run_dir: str, rank: int = 0, total_steps: int = 0, start_step: int = 0,
                 progress: bool = True):
        self.rank = rank
        self.main = rank == 0
        self.run_dir = run_dir
        self.records = {}
        os.makedirs(run_dir, exist_ok=True)
        self.log_file = open(os.path.join(run_dir, "train.log" if self.main else f"train_rank{rank}.log"), "a",
                             encoding="utf-8")
        self.tb = None
        self.jsonl = None
        self.bar = None
        if self.main:
            from tensorboardX import SummaryWriter
            self.tb = SummaryWriter(os.path.join(run_dir, "tb"))
            self.jsonl = open(os.path.join(run_dir, "metrics.jsonl"), "a", encoding="utf-8")
            if progress and total_steps > start_step:
                from tqdm import tqdm
                self.bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step",
                                dynamic_ncols=True, file=sys.stderr, leave=True)

    def info(self, msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        self.log_file.write(line + "\n")
        self.log_file.flush()
        if self.main:
            if self.bar is not None:
                self.bar.write(line)
            else:
                print(line, flush=True)

    def scalars(self, step: int, values: dict) -> None:
        if not self.main:
            return
        clean = {k: float(v) for k, v in values.items() if v is not None and np.isfinite(float(v))}
        for k, v in clean.items():
            self.tb.add_scalar(k, v, step)
        self.jsonl.write(json.dumps({"step": step, **clean}) + "\n")
        self.jsonl.flush()

    def tb_scalars(self, step: int, values: dict) -> None:
        """Tensorboard only (e.g. one curve per expert, too many for metrics.jsonl)."""
        if self.main:
            for k, v in values.items():
                self.tb.add_scalar(k, float(v), step)

    def record(self, name: str, step: int, obj: dict) -> None:
        """One JSON line ``{"step": step, **obj}`` in ``<run>/<name>.jsonl`` (rank 0)."""
        if not self.main:
            return
        if name not in self.records:
            self.records[name] = open(os.path.join(self.run_dir, f"{name}.jsonl"), "a", encoding="utf-8")
        self.records[name].write(json.dumps({"step": step, **obj}) + "\n")
        self.records[name].flush()

    def advance(self, n: int = 1, postfix: dict | None = None) -> None:
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()
        if self.jsonl is not None:
            self.jsonl.close()
        for f in self.records.values():
            f.close()
        self.log_file.close()


def truncate_metrics(run_dir: str, step: int, name: str = "metrics.jsonl") -> None:
    """Keep only the metrics.jsonl (or ``name``) records with ``"step" <= step``: a run resumed after ``step``
    optimizer steps logs the later steps again, so the file never holds a step twice. ``step`` 0 (a start from
    scratch) keeps nothing."""
    path = os.path.join(run_dir, name)
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as f:
        kept = [line for line in f if step > 0 and line.strip() and json.loads(line).get("step", 0) <= step]
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(kept)
    os.replace(tmp, path)


def expert_load_stats(load: np.ndarray, tables=None, ep_width: int = 1) -> dict:
    """Per MoE layer: routed pairs, max / min of the load over the mean, its CV, and with expert parallelism the
    per-EP-rank load CV and max/mean (``pangu_ms.moe.load_stats.load_summary``)."""
    from ..moe.load_stats import load_summary
    return load_summary(load, tables, ep_width)
