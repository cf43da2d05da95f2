"""Validation residuals of the simulator and the uncertainty band the search prints.

``tools/validate_sim_published.py --write-residuals`` writes one entry per published throughput it compares with
(tokens/s, MFU or GPU-hours of a run; ablation gains are not throughput and are left out) to
``yaml/sim/validation/residuals.yaml``, the one place the numbers live::

    error = predicted throughput / published throughput - 1      (GPU-hours and step times inverted first)
    band  = mean |error| over the entries                        (mean absolute relative error of the table)

``tools/simulate.py search`` reads the band and marks as ties the candidates whose ranking metric is within the
band of the best one (``value >= best * (1 - band)``): the simulator cannot order them with the accuracy it has
shown on published runs.
"""
from __future__ import annotations

import os

from ..config.loader import ConfigError

RESIDUALS_PATH = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "yaml", "sim", "validation",
                                               "residuals.yaml"))
#: metric -> True when a larger value means more throughput
METRICS = {"tokens_per_s": True, "mfu": True, "step_time_s": False, "gpu_hours": False}


def throughput_error(metric: str, published: float, predicted: float) -> float:
    """Relative error of the predicted throughput (positive = the simulator is optimistic)."""
    if metric not in METRICS:
        raise ValueError(f"unknown residual metric '{metric}' (known: {', '.join(METRICS)})")
    if published <= 0 or predicted <= 0:
        raise ValueError(f"residual {metric}: published {published} and predicted {predicted} must be > 0")
    return predicted / published - 1.0 if METRICS[metric] else published / predicted - 1.0


def residual(case: str, metric: str, published: float, predicted: float, source: str = "") -> dict:
    return {"case": case, "metric": metric, "published": float(published), "predicted": float(predicted),
            "error": round(throughput_error(metric, published, predicted), 4), "source": source}


def write_residuals(rows: list, path: str = RESIDUALS_PATH) -> None:
    import yaml
    os.makedirs(os.path.dirname(path), exist_ok=True)
    band, n = uncertainty_band(rows)
    with open(path, "w", encoding="utf-8") as f:
        f.write("# Written by tools/validate_sim_published.py --write-residuals; read by tools/simulate.py search\n"
                "# (pangu_ms/sim/residuals.py). error = predicted throughput / published - 1.\n")
        yaml.safe_dump({"mean_abs_error": round(band, 4), "cases": n, "residuals": rows}, f, sort_keys=False,
                       width=120)


def load_residuals(path: str = RESIDUALS_PATH) -> list:
    """The stored residual entries; ConfigError naming the file when it is missing or malformed."""
    import yaml
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the validation residuals ({e.strerror}); run "
                          f"python tools/validate_sim_published.py --write-residuals") from None
    rows = data.get("residuals") if isinstance(data, dict) else None
    if not rows or not all(isinstance(r, dict) and "error" in r for r in rows):
        raise ConfigError(f"{path}: expected a 'residuals' list of entries with an 'error' field")
    return rows


def uncertainty_band(rows: list | None = None) -> tuple[float, int]:
    """(mean absolute relative error, number of cases) of ``rows`` (default: the stored residuals)."""
    rows = load_residuals() if rows is None else rows
    if not rows:
        return 0.0, 0
    return sum(abs(float(r["error"])) for r in rows) / len(rows), len(rows)


def mark_ties(rows: list, key: str, band: float) -> list:
    """Set ``tie`` on each row (sorted best first by ``key``, larger = better): within ``band`` of the best."""
    if not rows:
        return rows
    best = max(r[key] for r in rows)
    for r in rows:
        r["tie"] = bool(r[key] >= best * (1.0 - band))
    return rows


def spearman(a, b) -> float:
    """Spearman rank correlation of two equal-length sequences (Pearson correlation of their ranks; tied values
    get the mean of their ranks), with numpy only."""
    import numpy as np
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or x.size < 2:
        raise ValueError(f"spearman: need two 1-D sequences of the same length >= 2, got {x.shape} and {y.shape}")

    def ranks(v):
        order = np.argsort(v, kind="mergesort")
        r = np.empty(v.size)
        r[order] = np.arange(v.size, dtype=float)
        for val in np.unique(v):                       # ties: mean rank
            m = v == val
            r[m] = r[m].mean()
        return r

    rx, ry = ranks(x), ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = float(np.sqrt((rx * rx).sum() * (ry * ry).sum()))
    return float((rx * ry).sum() / den) if den else 0.0


__all__ = ["RESIDUALS_PATH", "throughput_error", "residual", "write_residuals", "load_residuals",
           "uncertainty_band", "mark_ties", "spearman"]
