"""Validation residuals (sim/residuals.py): error convention, the stored band, ties, staleness of the file."""
from __future__ import annotations

import os

import pytest

from pangu_ms.config import ConfigError, load_config
from pangu_ms.sim import residuals as R
from pangu_ms.sim.estimate import estimate

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def test_throughput_error_convention():
    assert R.throughput_error("tokens_per_s", 100.0, 110.0) == pytest.approx(0.10)      # optimistic = positive
    assert R.throughput_error("mfu", 0.40, 0.30) == pytest.approx(-0.25)
    assert R.throughput_error("gpu_hours", 180e3, 200e3) == pytest.approx(180 / 200 - 1)   # more hours = slower
    assert R.throughput_error("step_time_s", 2.0, 1.0) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown residual metric"):
        R.throughput_error("loss", 1.0, 1.0)


def test_band_is_the_mean_absolute_error_and_ties_use_it(tmp_path):
    rows = [R.residual("a", "tokens_per_s", 100, 110), R.residual("b", "tokens_per_s", 100, 80),
            R.residual("c", "mfu", 0.5, 0.5)]
    band, n = R.uncertainty_band(rows)
    assert n == 3 and band == pytest.approx((0.10 + 0.20 + 0.0) / 3)
    path = str(tmp_path / "r.yaml")
    R.write_residuals(rows, path)
    assert R.uncertainty_band(R.load_residuals(path)) == pytest.approx((band, 3))
    cands = [{"mfu": 0.40}, {"mfu": 0.37}, {"mfu": 0.361}, {"mfu": 0.359}]
    R.mark_ties(cands, "mfu", 0.10)                                   # within 10 % of 0.40: >= 0.36
    assert [c["tie"] for c in cands] == [True, True, True, False]
    with pytest.raises(ConfigError, match="cannot read the validation residuals"):
        R.load_residuals(str(tmp_path / "missing.yaml"))


def test_stored_residuals_are_current():
    """The stored file is what tools/validate_sim_published.py computes now (checked on the Qwen3 folding case;
    regenerate with --write-residuals after a model change)."""
    rows = R.load_residuals()
    band, n = R.uncertainty_band(rows)
    assert n >= 8 and 0.0 < band < 0.5
    row = next(r for r in rows if r["case"].startswith("Qwen3-235B-A22B"))
    e = estimate(load_config(os.path.join(ROOT, "yaml", "sim", "qwen3_235b_a22b.yaml"), [], validate=False))
    assert row["predicted"] == pytest.approx(e.tokens_per_s_per_device, rel=1e-3)
    assert row["error"] == pytest.approx(R.throughput_error("tokens_per_s", 1575.0, e.tokens_per_s_per_device),
                                         abs=1e-4)


def test_spearman_by_hand():
    assert R.spearman([1, 2, 3], [10, 30, 20]) == pytest.approx(1 - 6 * 2 / (3 * 8))     # 1 - 6 sum d^2 / n(n^2-1)
    assert R.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert R.spearman([0.1, 5.0, 2.0, 9.0], [1, 3, 2, 40]) == pytest.approx(1.0)          # ranks, not values
    assert R.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833)              # tie: mean ranks
    with pytest.raises(ValueError, match="same length"):
        R.spearman([1, 2], [1, 2, 3])
