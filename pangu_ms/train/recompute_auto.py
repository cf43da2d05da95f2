"""``train.recompute: auto`` in the trainer: the choice (``pangu_ms/sim/recompute_choice.py``) and, after the
first step, the measured peak beside the prediction.

The measured figure is the same sum the prediction makes, taken from the process: the bytes of every Parameter
of the training step (weights and optimizer moments, allocated before the step) plus the peak-RSS growth of the
first step (``/proc/self/status`` VmHWM after the step minus VmRSS before it, with the peak reset; it holds the
gradients, the stored activations and the transients). ``mindspore.runtime.max_memory_allocated()`` is 0 on CPU,
hence RSS.
"""
from __future__ import annotations

import dataclasses

from ..config.recompute import AUTO
from ..config.schema import Config
from ..sim.recompute_choice import choose_recompute, describe_choice, format_gb, predicted_peak


def resolve_auto(cfg: Config, devices: int):
    """``cfg`` with ``train.recompute: auto`` -> (cfg with the chosen granularity, log line, predicted peak
    dict); any other recipe -> (cfg, None, None)."""
    if cfg.train.recompute != AUTO:
        return cfg, None, None
    choice, tried = choose_recompute(cfg, devices)
    chosen = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, recompute=choice))
    return chosen, describe_choice(cfg, choice, tried), predicted_peak(cfg, choice, devices)


def _status_kb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


class PeakMeter:
    """Peak-RSS growth of one step of this process (Linux ``/proc``; ``None`` readings elsewhere)."""

    def __init__(self):
        self.before_kb = None

    def start(self) -> None:
        try:
            with open("/proc/self/clear_refs", "w") as f:      # peak RSS := current RSS
                f.write("5")
        except OSError:
            return
        self.before_kb = _status_kb("VmRSS")

    def growth_bytes(self) -> float | None:
        peak = _status_kb("VmHWM")
        if self.before_kb is None or peak is None:
            return None
        return (peak - self.before_kb) * 1024.0


def parameter_bytes(cell) -> float:
    """Bytes of every Parameter of ``cell`` (the training step: weights and optimizer moments)."""
    return float(sum(p.size * p.itemsize for p in cell.get_parameters()))


def describe_measured(predicted: dict, states_bytes: float, growth: float | None) -> str:
    if growth is None:
        return "recompute auto: the measured peak needs /proc (Linux); not measured"
    measured = states_bytes + growth
    return (f"recompute auto: measured peak {format_gb(measured)} (parameters and moments "
            f"{format_gb(states_bytes)} + first-step growth {format_gb(growth)}), predicted "
            f"{format_gb(predicted['total'])} ({100.0 * (predicted['total'] / measured - 1.0):+.0f}%)")
