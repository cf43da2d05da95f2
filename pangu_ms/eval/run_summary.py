"""One training run directory -> the figures that compare MoE runs (short runs differing in one setting).

:func:`summarize_run` reads ``config.yaml`` (the run's recipe as training dumped it), ``metrics.jsonl`` and
``expert_load.jsonl`` and returns, over the *second half* of the logged steps (early routing is still settling):
the mean training loss, the last validation loss, the mean expert-load CV and per-EP-rank load CV (under the
placement each step ran with; the static placement onto ``ep_width`` ranks for a one-process run), the mean drop
rate the run logged, and the number of gradient-norm and loss spikes over the whole run (a value above
``spike_factor`` x the median of the previous ``spike_window`` logged values, the rule of
``train.loss_spike_factor``).
"""
from __future__ import annotations

import json
import os
from collections import deque
from statistics import median

import numpy as np

from ..moe.load_stats import cv, device_load


def read_jsonl(path: str) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
    return rows


def count_spikes(values, factor: float = 3.0, window: int = 20) -> int:
    """Values above ``factor`` x the median of the previous ``window`` finite values (window full)."""
    recent, spikes = deque(maxlen=window), 0
    for v in values:
        if not np.isfinite(v):
            continue
        if len(recent) == window and v > factor * median(recent):
            spikes += 1
        recent.append(v)
    return spikes


def run_setting(run_dir: str) -> dict:
    """The MoE settings a comparison varies, from ``<run>/config.yaml``."""
    import yaml
    path = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--run: no config.yaml in {run_dir} (a pangu_ms run directory)")
    with open(path, encoding="utf-8") as f:
        cfg = yaml.safe_load(f) or {}
    moe, par = cfg.get("moe", {}), cfg.get("parallel", {})
    return {"aux_loss_scope": moe.get("aux_loss_scope"), "aux_loss_coeff": moe.get("aux_loss_coeff"),
            "dispatcher": moe.get("dispatcher"), "capacity_factor": moe.get("capacity_factor"),
            "expert_placement": bool(moe.get("expert_placement", False)), "dp": par.get("dp", 1),
            "ep": par.get("ep", 1)}


def summarize_run(run_dir: str, ep_width: int = 2, spike_factor: float = 3.0, spike_window: int = 20) -> dict:
    metrics = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(metrics):
        raise FileNotFoundError(f"--run: no metrics.jsonl in {run_dir}")
    rows = read_jsonl(metrics)
    train = sorted({r["step"]: r for r in rows if "loss/total" in r}.values(), key=lambda r: r["step"])
    if not train:
        raise ValueError(f"--run: {metrics} holds no training step")
    valid = [r for r in rows if "valid/loss" in r]
    half = train[len(train) // 2:]
    out = {"run": os.path.basename(os.path.abspath(run_dir)), **run_setting(run_dir), "steps": train[-1]["step"],
           "loss": float(np.mean([r["loss/total"] for r in half])),
           "lm_loss": float(np.mean([r["loss/lm"] for r in half])),
           "valid_loss": float(valid[-1]["valid/loss"]) if valid else float("nan"),
           "drop_rate": float(np.mean([r.get("moe/drop_rate", 0.0) for r in half])),
           "grad_norm_spikes": count_spikes([r["grad_norm"] for r in train], spike_factor, spike_window),
           "loss_spikes": count_spikes([r["loss/total"] for r in train], spike_factor, spike_window)}
    loads = os.path.join(run_dir, "expert_load.jsonl")
    if os.path.isfile(loads):
        recs = sorted({r["step"]: r for r in read_jsonl(loads)}.values(), key=lambda r: r["step"])
        recs = recs[len(recs) // 2:]
        load_cv, dev_cv = [], []
        for r in recs:
            w = int(r.get("ep_width", ep_width))
            for i, row in enumerate(np.asarray(r["load"], np.float64)):
                load_cv.append(cv(row))
                table = r["tables"][i] if "tables" in r else np.arange(row.size)
                dev_cv.append(cv(device_load(row, table, w)))
        out["load_cv"], out["device_cv"] = float(np.mean(load_cv)), float(np.mean(dev_cv))
    return out


__all__ = ["read_jsonl", "count_spikes", "run_setting", "summarize_run"]
