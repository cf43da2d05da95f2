"""``train.recompute: auto``: the cheapest recompute granularity whose predicted peak fits
``train.memory_budget_gb``, and the measured peak beside the prediction.

Candidates, cheapest (least re-run compute) first: ``AUTO_ORDER`` of ``pangu_ms/config/recompute.py``. The
prediction is the simulator's memory model (``pangu_ms/sim/memory.py``) of this recipe and layout on the
reference path the training runs here (``sim.moe_impl: training_cpu``, explicit attention, the CPU dispatchers,
the ``cpu_local`` profile), in the compute dtype: model states (weights, gradients, Adam moments) + stored
activations + the largest transient of one device. The budget covers those; the framework's own footprint (MindSpore's runtime, the
compiled graphs, the data pipeline) is not part of it.

The trainer logs the choice and, after the first step, the measured peak beside the prediction
(``pangu_ms/train/recompute_auto.py``).
"""
from __future__ import annotations

import dataclasses

from ..config import ConfigError
from ..config.recompute import AUTO_ORDER
from ..config.schema import Config
from .estimate import estimate

GB = 1e9


def format_gb(n_bytes: float) -> str:
    return f"{n_bytes / GB:.3g} GB"


_PRECISION = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


def predicted_peak(cfg: Config, recompute: str, devices: int) -> dict:
    """Predicted bytes of one device for ``recompute``: {'states', 'step' (gradients + activations + transient),
    'total'} from the simulator's memory model of ``cfg`` on ``devices`` devices."""
    precision = _PRECISION.get(cfg.model.compute_dtype)
    if precision is None:
        raise ConfigError(f"train.recompute: 'auto' has no memory model for model.compute_dtype="
                          f"{cfg.model.compute_dtype!r} (float32, float16 or bfloat16)")
    sim = dataclasses.replace(cfg.sim, recompute=recompute, moe_impl="training_cpu", hardware="cpu_local",
                              precision="fp32" if precision == "fp32" else "bf16")
    est = estimate(dataclasses.replace(cfg, sim=sim), devices=devices)
    m = est.memory_gb
    states = (m["weights"] + m["optimizer"]) * GB
    step = (m["gradients"] + m["activations"] + m["transient"]) * GB
    return {"states": states, "step": step, "total": states + step}


def choose_recompute(cfg: Config, devices: int) -> tuple[str, list]:
    """(the first granularity of AUTO_ORDER whose predicted total fits ``train.memory_budget_gb``, the
    predictions [(granularity, bytes)] tried). One ConfigError naming the key and the smallest predicted peak
    when none fits; nothing is compiled before."""
    budget = cfg.train.memory_budget_gb * GB
    tried = []
    for rc in AUTO_ORDER:
        total = predicted_peak(cfg, rc, devices)["total"]
        tried.append((rc, total))
        if total <= budget:
            return rc, tried
    smallest = min(tried, key=lambda x: x[1])
    listed = ", ".join(f"{rc} {format_gb(b)}" for rc, b in tried)
    raise ConfigError(f"train.memory_budget_gb: {cfg.train.memory_budget_gb:.3g} GB is below the smallest predicted "
                      f"peak, {format_gb(smallest[1])} with train.recompute={smallest[0]} (predicted: {listed}); "
                      f"raise the budget or lower parallel.micro_batch_size / train.seq_length")


def describe_choice(cfg: Config, choice: str, tried: list) -> str:
    listed = ", ".join(f"{rc} {format_gb(b)}" for rc, b in tried)
    return (f"recompute auto: {choice} (predicted peak {format_gb(tried[-1][1])} <= budget "
            f"{cfg.train.memory_budget_gb:.3g} GB; tried {listed})")
