"""Learning-rate schedule as one value per optimizer step (a dynamic-LR array for the MindSpore optimizer).

Each phase (or the single implicit phase built from ``TrainConfig``) has its own curve over its ``n`` steps,
with ``u`` = step within the phase:
    warm-up      u < w:          lr * (u + 1) / w                       (linear from lr/w; never exactly 0)
    cosine       u >= w:         min + (lr - min) * 0.5 * (1 + cos(pi * (u - w) / max(n - w - 1, 1)))
    wsd          stable until n - d (d = round(decay_fraction * n)), then linear to min_lr at the last step
    constant     lr after warm-up
Phases are concatenated; the array's index is the global step. (MindFormers' LR Cells compute single-phase
curves from the optimizer step on the device; a multi-phase recipe needs the concatenation, so the values are
precomputed here and handed to the optimizer as a Tensor.)
"""
from __future__ import annotations

import math

import numpy as np

from ..config.schema import PhaseConfig, TrainConfig


def implicit_phase(t: TrainConfig) -> PhaseConfig:
    return PhaseConfig(name="main", steps=t.steps, lr=t.lr, min_lr=t.min_lr, warmup_steps=t.warmup_steps,
                       lr_schedule=t.lr_schedule, decay_fraction=t.decay_fraction)


def phases_of(t: TrainConfig) -> list[PhaseConfig]:
    return list(t.phases) if t.phases else [implicit_phase(t)]


def phase_curve(ph: PhaseConfig) -> np.ndarray:
    n, w = ph.steps, min(ph.warmup_steps, ph.steps)
    out = np.empty(n, np.float64)
    for u in range(n):
        if u < w:
            out[u] = ph.lr * (u + 1) / w
        elif ph.lr_schedule == "cosine":
            frac = (u - w) / max(n - w - 1, 1)
            out[u] = ph.min_lr + (ph.lr - ph.min_lr) * 0.5 * (1 + math.cos(math.pi * frac))
        elif ph.lr_schedule == "wsd":
            d = max(1, int(round(ph.decay_fraction * n)))
            start = n - d
            if u < start:
                out[u] = ph.lr
            else:
                out[u] = ph.lr + (ph.min_lr - ph.lr) * (u - start + 1) / d
        else:
            out[u] = ph.lr
    return out


def lr_values(t: TrainConfig) -> np.ndarray:
    """float32 array of length ``t.steps``."""
    return np.concatenate([phase_curve(p) for p in phases_of(t)]).astype(np.float32)


def phase_starts(t: TrainConfig) -> list[tuple[int, PhaseConfig]]:
    out, s = [], 0
    for p in phases_of(t):
        out.append((s, p))
        s += p.steps
    return out


def lr_schedule_cell(t: TrainConfig):
    """The same curve as :func:`lr_values`, computed arithmetically from the optimizer step in a
    ``LearningRateSchedule`` Cell. (Handing the optimizer a per-step value table -- MindSpore's dynamic-LR array, or
    a Cell gathering from one -- made the CPU train step bimodal and ~3x slower on the tiny recipe: median 140 ms
    vs 38-49 ms measured.)"""
    import mindspore as ms
    from mindspore import nn, ops

    starts = phase_starts(t)

    class PhasedLR(nn.learning_rate_schedule.LearningRateSchedule):
        def construct(self, global_step):
            s = global_step.reshape(()).astype(ms.float32)
            lr = ops.zeros((), ms.float32)
            for k, (start, ph) in enumerate(starts):
                n, w = ph.steps, min(ph.warmup_steps, ph.steps)
                u = s - start
                warm = ph.lr * (u + 1.0) / max(w, 1)
                if ph.lr_schedule == "cosine":
                    frac = ops.clamp((u - w) / max(n - w - 1, 1), 0.0, 1.0)
                    body = ph.min_lr + (ph.lr - ph.min_lr) * 0.5 * (1.0 + ops.cos(math.pi * frac))
                elif ph.lr_schedule == "wsd":
                    d = max(1, int(round(ph.decay_fraction * n)))
                    decay = ops.clamp((u - (n - d) + 1.0) / d, 0.0, 1.0)
                    body = ph.lr + (ph.min_lr - ph.lr) * decay
                else:
                    body = ph.lr + 0.0 * u
                val = ops.select(u < w, warm, body)
                last = k == len(starts) - 1
                inside = (u >= 0.0) if last else ops.logical_and(u >= 0.0, u < n)
                lr = lr + ops.select(inside, val, ops.zeros((), ms.float32))
            return lr

    return PhasedLR()
