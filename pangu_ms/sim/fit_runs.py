"""Fit a hardware profile's efficiency parameters to measured training runs (``simulate.py calibrate --from-runs``).

Inputs (:func:`read_inputs`), each giving cases = (recipe + layout, cluster size, measured step time):

* a **run directory** of this project: ``config.yaml`` (the resolved recipe training dumped) and ``metrics.jsonl``
  (one JSON object per logged step; ``perf/tokens_per_s`` is the global tokens/s of the logging window). The first
  logged window holds the graph compilation and is dropped; the measured step time is
  ``train.global_batch_size * train.seq_length / median(tokens/s of the other windows)``. Devices:
  ``parallel.dp * tp * pp * cp`` of the dumped config.
* a **CSV** of published or measured step times, one row per run (:data:`CSV_COLUMNS`): ``recipe`` (a recipe
  YAML; relative paths are taken from the current directory, else from the CSV's directory), optional ``name``,
  ``devices``, ``profile``, ``overrides`` (space-separated ``KEY=VALUE``), ``source``, any column whose name has a
  dot (``parallel.tp``, ``train.global_batch_size``, ...) as an override of that key, and one measurement per row:
  ``step_time_s``, ``tokens_per_s`` (whole cluster), ``tokens_per_s_per_device`` or ``mfu`` (against the profile's
  ``mfu_peak_dtype`` peak, with the simulator's FLOP convention, stats.py ``train_flops_per_token``).

Each case's stage split and recompute granularity are pinned to those the simulator chooses on the base profile
(:func:`prepare`): the fit moves efficiencies, not the layout.

Fit (:func:`fit`): a few parameters (:data:`PARAMS`) of the base profile, every other field held fixed, chosen to
minimise ``sum_i (log predicted_i - log measured_i)^2`` (the step time of case i; relative errors weigh alike
whether a step takes 0.01 s or 30 s). Each parameter is searched in log space within its bounds by a damped
Gauss-Newton (Levenberg-Marquardt) iteration with a central-difference Jacobian and box projection (numpy only).
A parameter the cases cannot see (``|d log step / d log value| < IDENTIFIABLE`` for every case, e.g. the link
efficiency for single-device runs) is held at its base value and reported as not identified.

Honest figure (:func:`calibrate_from_cases`): besides the residuals before and after the fit on all cases, the
leave-one-out error: for each case, fit on the others and predict it. Errors follow residuals.py: predicted
throughput / measured - 1 (positive = the simulator is optimistic).
"""
from __future__ import annotations

import csv
import dataclasses
import math
import os
import statistics
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..config.loader import ConfigError, load_config
from ..config.schema import Config
from ..eval.run_metrics import read_metrics
from ..model.stats import compute_stats
from .estimate import run_with_recompute
from .hardware import Curve, HardwareProfile, load_hardware
from .layout import resolve_layout
from .residuals import throughput_error

MEASURES = ("step_time_s", "tokens_per_s", "tokens_per_s_per_device", "mfu")
CSV_COLUMNS = ("name", "recipe", "devices", "profile", "overrides", "source") + MEASURES
METRIC_KEY = "perf/tokens_per_s"        # train/loop.py: global tokens/s of each logging window
IDENTIFIABLE = 1e-3


# ------------------------------------------------------------------ parameters
def _scale_curve(c: Curve, k: float) -> Curve:
    return Curve.from_points([[x, min(1.0, max(1e-6, y * k))] for x, y in zip(c.xs, c.ys)], "fitted curve")


def _clamp(y: float, k: float) -> float:
    return min(1.0, max(1e-6, y * k))


def _apply_compute(hw: HardwareProfile, k: float) -> HardwareProfile:
    return dataclasses.replace(
        hw, gemm_efficiency=_scale_curve(hw.gemm_efficiency, k),
        attention_efficiency=_clamp(hw.attention_efficiency, k),
        elementwise_efficiency=_clamp(hw.elementwise_efficiency, k),
        broadcast_efficiency=_clamp(hw.broadcast_efficiency or hw.elementwise_efficiency, k))


def _apply_comm(hw: HardwareProfile, k: float) -> HardwareProfile:
    def link(ln):
        return dataclasses.replace(ln, efficiency=_scale_curve(ln.efficiency, k))
    return dataclasses.replace(hw, intra_node=link(hw.intra_node), inter_node=link(hw.inter_node))


@dataclass(frozen=True)
class Param:
    """One fitted quantity: its base value in a profile, how it is written back, and its search bounds."""

    name: str
    doc: str
    lo: float
    hi: float
    base: Callable[[HardwareProfile], float]
    apply: Callable[[HardwareProfile, float], HardwareProfile]
    floor: float = 0.0      # start value when the profile's own is 0 (searched in log space)

    def start(self, hw: HardwareProfile) -> float:
        return min(self.hi, max(self.lo, self.base(hw) or self.floor))


PARAMS = {
    "compute": Param("compute", "multiplier of every compute efficiency (gemm_efficiency curve, "
                                "attention_efficiency, elementwise_efficiency, broadcast_efficiency), each "
                                "clamped to 1", 0.05, 20.0, lambda hw: 1.0, _apply_compute),
    "comm": Param("comm", "multiplier of the link efficiency curves (intra_node and inter_node), clamped to 1",
                  0.05, 20.0, lambda hw: 1.0, _apply_comm),
    "op_overhead": Param("op_overhead", "seconds per launched kernel", 1e-9, 1e-1, lambda hw: hw.op_overhead,
                         lambda hw, v: dataclasses.replace(hw, op_overhead=v), floor=1e-6),
    "step_overhead": Param("step_overhead", "seconds per training step", 1e-6, 1e2,
                           lambda hw: hw.step_overhead, lambda hw, v: dataclasses.replace(hw, step_overhead=v),
                           floor=1e-3),
    "comm_compute_slowdown": Param("comm_compute_slowdown", "compute slowdown beside a communication kernel",
                                   1e-3, 1.0, lambda hw: hw.comm_compute_slowdown,
                                   lambda hw, v: dataclasses.replace(hw, comm_compute_slowdown=v), floor=0.05),
}
DEFAULT_FIT = ("compute", "comm", "op_overhead")


def apply_params(hw: HardwareProfile, values: dict) -> HardwareProfile:
    for name, v in values.items():
        hw = PARAMS[name].apply(hw, v)
    return hw


def base_values(hw: HardwareProfile, names) -> dict:
    return {n: PARAMS[n].base(hw) for n in names}


# ------------------------------------------------------------------ inputs
@dataclass
class Case:
    """One measured run: the recipe (overrides applied, not yet resolved) and what was measured."""

    name: str
    cfg: Config
    devices: int | None
    profile: str | None         # explicit profile of the input (CSV ``profile`` column), else None
    measure: str                # one of MEASURES
    value: float
    where: str                  # file (and line) it came from, for messages and the profile header
    source: str = ""


def _need_positive(value: str, what: str) -> float:
    try:
        v = float(value)
    except ValueError:
        v = float("nan")
    if not (v > 0 and math.isfinite(v)):
        raise ConfigError(f"{what}: must be a number > 0, got '{value}'")
    return v


def _load_recipe(path: str, overrides: list, where: str) -> Config:
    try:
        return load_config(path, overrides, validate=False)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def read_run_dir(path: str, overrides=()) -> Case:
    """A training run directory (config.yaml + metrics.jsonl) -> Case with its measured step time."""
    cfg_path, met_path = os.path.join(path, "config.yaml"), os.path.join(path, "metrics.jsonl")
    for p in (cfg_path, met_path):
        if not os.path.isfile(p):
            raise ConfigError(f"--from-runs: {p} is missing ({path} is not a pangu_ms run directory: it needs "
                              f"config.yaml and metrics.jsonl)")
    cfg = _load_recipe(cfg_path, list(overrides), cfg_path)
    tps = [float(rec[METRIC_KEY]) for rec in read_metrics(met_path, ConfigError) if METRIC_KEY in rec]
    if len(tps) < 2:
        raise ConfigError(f"{met_path}: needs at least 2 records with '{METRIC_KEY}' (the first logging window "
                          f"holds the compilation and is dropped), found {len(tps)}")
    rate = statistics.median(tps[1:])
    if not rate > 0:
        raise ConfigError(f"{met_path}: '{METRIC_KEY}' median {rate} is not > 0")
    step = cfg.train.global_batch_size * cfg.train.seq_length / rate
    return Case(os.path.basename(os.path.normpath(path)), cfg, None, None, "step_time_s", step, met_path,
                f"median of {len(tps) - 1} logging windows, the first dropped")


def _resolve_recipe(recipe: str, csv_path: str) -> str:
    if os.path.isabs(recipe) or os.path.isfile(recipe):
        return recipe
    return os.path.join(os.path.dirname(os.path.abspath(csv_path)), recipe)


def read_csv(path: str, overrides=()) -> list:
    """A CSV of measured runs (columns: module docstring) -> Cases."""
    try:
        f = open(path, encoding="utf-8", newline="")
    except OSError as e:
        raise ConfigError(f"--from-runs: cannot read {path} ({e.strerror})") from None
    with f:
        rows = list(csv.DictReader(line for line in f if not line.lstrip().startswith("#")))
        f.seek(0)
        header = next(csv.reader(line for line in f if not line.lstrip().startswith("#")), [])
    header = [h.strip() for h in header]
    unknown = [h for h in header if h not in CSV_COLUMNS and "." not in h]
    if unknown:
        raise ConfigError(f"{path}: unknown column '{unknown[0]}' (known: {', '.join(CSV_COLUMNS)}; a column "
                          f"named KEY.PATH, e.g. parallel.tp, is a config override)")
    if "recipe" not in header:
        raise ConfigError(f"{path}: missing column 'recipe' (the recipe YAML of each run)")
    if not any(m in header for m in MEASURES):
        raise ConfigError(f"{path}: missing a measurement column (one of {', '.join(MEASURES)})")
    if not rows:
        raise ConfigError(f"{path}: no rows")
    cases = []
    for i, raw in enumerate(rows, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        where = f"{path}:{i}"
        if not row.get("recipe"):
            raise ConfigError(f"{where}: empty 'recipe'")
        recipe = _resolve_recipe(row["recipe"], path)
        if not os.path.isfile(recipe):
            raise ConfigError(f"{where}: recipe '{row['recipe']}' not found")
        ov = list(overrides) + row.get("overrides", "").split()
        ov += [f"{k}={v}" for k, v in row.items() if "." in k and v != ""]
        measure = next((m for m in MEASURES if row.get(m)), None)
        if measure is None:
            present = ", ".join(m for m in MEASURES if m in header)
            raise ConfigError(f"{where}: no measured value (fill one of {present})")
        value = _need_positive(row[measure], f"{where}: {measure}")
        devices = int(_need_positive(row["devices"], f"{where}: devices")) if row.get("devices") else None
        cases.append(Case(row.get("name") or f"{os.path.basename(path)} row {i}", _load_recipe(recipe, ov, where),
                          devices, row.get("profile") or None, measure, value, where, row.get("source", "")))
    return cases


def read_inputs(paths, overrides=()) -> list:
    """Run directories and CSV files -> Cases, in order."""
    if not paths:
        raise ConfigError("--from-runs: give at least one run directory or CSV file")
    cases = []
    for p in paths:
        if os.path.isdir(p):
            cases.append(read_run_dir(p, overrides))
        elif os.path.isfile(p) and p.lower().endswith(".csv"):
            cases.extend(read_csv(p, overrides))
        elif os.path.exists(p):
            raise ConfigError(f"--from-runs: {p} is neither a run directory nor a .csv file")
        else:
            raise ConfigError(f"--from-runs: {p}: no such file or directory")
    return cases


def fitted_profile_name(cases, hardware: str | None) -> str:
    """The profile the cases are fitted against: ``hardware`` if given (every explicit profile must match it),
    else the one profile all cases name (CSV ``profile`` or the recipe's ``sim.hardware``)."""
    if hardware:
        for c in cases:
            if c.profile and c.profile != hardware:
                raise ConfigError(f"{c.where}: profile '{c.profile}' differs from --hardware '{hardware}' (one "
                                  f"profile is fitted at a time)")
        return hardware
    names = {c.profile or c.cfg.sim.hardware for c in cases}
    if len(names) != 1:
        raise ConfigError(f"--from-runs: the runs name several profiles ({', '.join(sorted(names))}); choose the "
                          f"one to fit with --hardware")
    return names.pop()


# ------------------------------------------------------------------ prepared cases
@dataclass
class Prepared:
    """A case resolved on the base profile: its layout and measured step time in seconds."""

    case: Case
    cfg: Config
    layout: object
    measured_step: float

    def predict(self, hw: HardwareProfile) -> float:
        return run_with_recompute(self.cfg, self.layout, hw).step_time_s


def pin_split(cfg: Config, est) -> Config:
    """``cfg`` with the stage split and recompute granularity of estimate ``est`` made explicit."""
    return dataclasses.replace(
        cfg, parallel=dataclasses.replace(cfg.parallel, pipeline_split="explicit",
                                          layers_per_virtual_stage=list(est.details["layers_per_virtual_stage"])),
        sim=dataclasses.replace(cfg.sim, recompute=est.layout["recompute"]))


def prepare(case: Case, hw: HardwareProfile) -> Prepared:
    """Resolve the case's layout on ``hw`` and pin its stage split and recompute granularity to those the
    simulator chooses on the base profile: a measured run had one split, and the time-balanced / memory-aware
    split search would otherwise re-split as the efficiencies move (step-time jumps of several % for a 0.1 %
    change of an efficiency), which no least-squares fit can follow."""
    try:
        cfg, layout = resolve_layout(case.cfg, case.devices, hw.devices_per_node)
        cfg, layout = resolve_layout(pin_split(cfg, run_with_recompute(cfg, layout, hw)), layout.world,
                                     hw.devices_per_node)
    except ConfigError as e:
        raise ConfigError(f"{case.where}: {e}") from None
    tokens = layout.global_batch_size * layout.seq_length
    if case.measure == "step_time_s":
        step = case.value
    elif case.measure == "tokens_per_s":
        step = tokens / case.value
    elif case.measure == "tokens_per_s_per_device":
        step = tokens / (case.value * layout.world)
    else:                                   # mfu
        fpt = compute_stats(cfg, layout.seq_length).train_flops_per_token
        step = fpt * tokens / (case.value * layout.world * hw.mfu_peak)
    return Prepared(case, cfg, layout, step)


# ------------------------------------------------------------------ fit
def _residuals(prep, hw, names, z) -> np.ndarray:
    h = apply_params(hw, dict(zip(names, np.exp(z))))
    return np.array([math.log(p.predict(h)) - math.log(p.measured_step) for p in prep])


def _jacobian(prep, hw, names, z, lo, hi, eps=1e-4) -> np.ndarray:
    cols = []
    for j in range(len(z)):
        a, b = z.copy(), z.copy()
        a[j], b[j] = max(lo[j], z[j] - eps), min(hi[j], z[j] + eps)
        cols.append((_residuals(prep, hw, names, b) - _residuals(prep, hw, names, a)) / max(b[j] - a[j], 1e-12))
    return np.stack(cols, axis=1) if cols else np.zeros((len(prep), 0))


def sensitivities(prep, hw, names) -> dict:
    """d log(step) / d log(value) of every case at the base profile, per parameter."""
    z = np.log([PARAMS[n].start(hw) for n in names])
    lo, hi = np.log([PARAMS[n].lo for n in names]), np.log([PARAMS[n].hi for n in names])
    J = _jacobian(prep, hw, names, z, lo, hi)
    return {n: J[:, j].tolist() for j, n in enumerate(names)}


@dataclass
class Fit:
    values: dict                    # fitted parameter -> value
    profile: HardwareProfile
    rms_log: float                  # root-mean-square of log(pred / measured) at the fit
    iterations: int
    details: dict = field(default_factory=dict)


def fit(prep, hw: HardwareProfile, names, max_iter: int = 60) -> Fit:
    """Least squares on log step time over ``names`` (PARAMS keys), started from ``hw``'s own values."""
    names = list(names)
    if not names:
        r = _residuals(prep, hw, names, np.zeros(0))
        return Fit({}, hw, float(np.sqrt(np.mean(r * r))), 0)
    if len(prep) < len(names):
        raise ConfigError(f"calibrate: {len(prep)} run(s) cannot fit {len(names)} parameters "
                          f"({', '.join(names)}); give more runs or fewer --fit parameters")
    lo, hi = np.log([PARAMS[n].lo for n in names]), np.log([PARAMS[n].hi for n in names])
    z = np.log([PARAMS[n].start(hw) for n in names])
    r = _residuals(prep, hw, names, z)
    cost, lam, it = float(r @ r), 1e-3, 0
    for it in range(1, max_iter + 1):
        J = _jacobian(prep, hw, names, z, lo, hi)
        A, g = J.T @ J, J.T @ r
        improved = False
        while lam < 1e10:
            step = np.linalg.solve(A + lam * (np.diag(np.diag(A)) + 1e-12 * np.eye(len(z))), -g)
            z_new = np.clip(z + step, lo, hi)
            r_new = _residuals(prep, hw, names, z_new)
            c_new = float(r_new @ r_new)
            if c_new < cost:
                moved = float(np.max(np.abs(z_new - z)))
                z, r, gain, cost = z_new, r_new, cost - c_new, c_new
                lam = max(lam / 3.0, 1e-9)
                improved = True
                break
            lam *= 4.0
        if not improved or moved < 1e-9 or gain < 1e-14 * max(cost, 1e-30) or cost < 1e-24:
            break
    values = dict(zip(names, (float(v) for v in np.exp(z))))
    return Fit(values, apply_params(hw, values), float(np.sqrt(cost / len(prep))), it,
               {"at_bound": [n for n, v, a, b in zip(names, z, lo, hi) if v <= a + 1e-9 or v >= b - 1e-9]})


def calibrate_from_cases(cases, hw: HardwareProfile, names=DEFAULT_FIT, loo: bool = True) -> dict:
    """Fit ``names`` on all cases; residuals before / after and the leave-one-out prediction of each case."""
    for n in names:
        if n not in PARAMS:
            raise ConfigError(f"--fit: unknown parameter '{n}' (known: {', '.join(PARAMS)})")
    prep = [prepare(c, hw) for c in cases]
    sens = sensitivities(prep, hw, list(names))
    fitted = [n for n in names if max(abs(s) for s in sens[n]) >= IDENTIFIABLE]
    held = [n for n in names if n not in fitted]
    full = fit(prep, hw, fitted)
    rows = []
    for i, p in enumerate(prep):
        before, after = p.predict(hw), p.predict(full.profile)
        row = {"name": p.case.name, "where": p.case.where, "source": p.case.source, "devices": p.layout.world,
               "measured_step_s": p.measured_step, "before_step_s": before, "after_step_s": after,
               "error_before": throughput_error("step_time_s", p.measured_step, before),
               "error_after": throughput_error("step_time_s", p.measured_step, after),
               "loo_step_s": None, "error_loo": None, "loo_values": None}
        rows.append(row)
    loo_ok = loo and len(prep) - 1 >= max(1, len(fitted))
    if loo_ok:
        for i, p in enumerate(prep):
            f = fit(prep[:i] + prep[i + 1:], hw, fitted)
            pred = p.predict(f.profile)
            rows[i].update(loo_step_s=pred, error_loo=throughput_error("step_time_s", p.measured_step, pred),
                           loo_values=f.values)

    def mae(key):
        vals = [abs(r[key]) for r in rows if r[key] is not None]
        return sum(vals) / len(vals) if vals else None

    return {"profile": hw.name, "runs": len(rows), "fit": list(names), "fitted": full.values,
            "base": base_values(hw, fitted), "not_identified": held,
            "at_bound": full.details.get("at_bound", []),
            "sensitivity_max": {n: max(abs(s) for s in sens[n]) for n in names},
            "rms_log_after": full.rms_log, "iterations": full.iterations,
            "mean_abs_error": {"before": mae("error_before"), "after": mae("error_after"),
                               "leave_one_out": mae("error_loo") if loo_ok else None},
            "leave_one_out": ("done" if loo_ok else f"not available: {len(prep)} run(s) for {len(fitted)} fitted "
                                                    f"parameter(s) (needs runs - 1 >= parameters)"),
            "cases": rows, "_profile": full.profile}


def profile_header(res: dict, base: HardwareProfile) -> str:
    """The comment header of the fitted profile YAML: what it was fitted on and how well."""
    m = res["mean_abs_error"]

    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f}%"

    lines = [f"Fitted by `tools/simulate.py calibrate --from-runs` from profile '{base.name}' on {res['runs']} runs "
             f"(pangu_ms/sim/fit_runs.py).",
             "fitted: " + (", ".join(f"{k} = {v:.4g} (base {res['base'][k]:.4g})" for k, v in res["fitted"].items())
                           or "nothing") + ("; compute / comm are multipliers of the base efficiencies"
                                            if {"compute", "comm"} & set(res["fitted"]) else ""),
             f"not identified by these runs (held at base): {', '.join(res['not_identified']) or 'none'}; every "
             f"other field is the base profile's.",
             f"mean |error| of step time: before {pct(m['before'])}, after {pct(m['after'])}, leave-one-out "
             f"{pct(m['leave_one_out'])}.",
             "runs:"]
    for r in res["cases"]:
        lines.append(f"  {r['name']} ({r['where']}{'; ' + r['source'] if r['source'] else ''}): measured "
                     f"{r['measured_step_s']:.4g} s, error before {pct(r['error_before'])}, after "
                     f"{pct(r['error_after'])}, leave-one-out {pct(r['error_loo'])}")
    return "\n".join(lines)


def markdown_report(res: dict) -> str:
    def pct(x):
        return "-" if x is None else f"{100 * x:+.1f}%"

    out = [f"Profile {res['profile']}, {res['runs']} runs; fitted: "
           + (", ".join(f"{k} {v:.4g} (base {res['base'][k]:.4g})" for k, v in res["fitted"].items()) or "nothing")
           + (f"; not identified (held): {', '.join(res['not_identified'])}" if res["not_identified"] else "")
           + (f"; at a bound: {', '.join(res['at_bound'])}" if res["at_bound"] else ""),
           "", "| run | devices | measured step s | before s | error before | after s | error after | "
               "leave-one-out s | error LOO |", "|---|---|---|---|---|---|---|---|---|"]
    for r in res["cases"]:
        loo = "-" if r["loo_step_s"] is None else f"{r['loo_step_s']:.4g}"
        out.append(f"| {r['name']} | {r['devices']} | {r['measured_step_s']:.4g} | {r['before_step_s']:.4g} | "
                   f"{pct(r['error_before'])} | {r['after_step_s']:.4g} | {pct(r['error_after'])} | {loo} | "
                   f"{pct(r['error_loo'])} |")
    m = res["mean_abs_error"]
    fmt = (lambda x: "-" if x is None else f"{100 * x:.1f}%")  # noqa: E731
    out += ["", f"mean |error|: before {fmt(m['before'])}, after {fmt(m['after'])}, leave-one-out "
                f"{fmt(m['leave_one_out'])} ({res['leave_one_out']})"]
    return "\n".join(out)


def calibrate_from_runs(paths, out: str, hardware: str | None = None, names=DEFAULT_FIT, overrides=(),
                        profile_name: str | None = None) -> dict:
    """Read the runs, fit, write the fitted profile YAML to ``out``; returns the result of calibrate_from_cases."""
    from .hardware import save_hardware
    cases = read_inputs(paths, overrides)
    base = load_hardware(fitted_profile_name(cases, hardware))
    res = calibrate_from_cases(cases, base, names)
    prof = dataclasses.replace(res.pop("_profile"), name=profile_name or f"{base.name}_fitted",
                               description=f"{base.description} -- efficiencies fitted to {res['runs']} runs")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    save_hardware(prof, out, header=profile_header(res, base))
    res["written"] = out
    return res


__all__ = ["MEASURES", "CSV_COLUMNS", "PARAMS", "DEFAULT_FIT", "Case", "read_inputs", "read_csv", "read_run_dir",
           "prepare", "fit", "calibrate_from_cases", "calibrate_from_runs", "apply_params", "markdown_report"]
