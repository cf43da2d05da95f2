"""What a run does after a step with a non-finite loss or gradient norm (``train.on_nonfinite``).

The jitted step (:mod:`pangu_ms.train.step`) already skipped that step's optimizer update (weights, AdamW
moments and the optimizer's step counter are unchanged); this guard decides on the host, from the same loss and
norm, whether training goes on:

* ``stop``: raise :class:`DivergenceError` naming the 1-based step; no checkpoint is written after it, so the
  latest checkpoint holds the weights from before the divergence.
* ``skip_step``: log a warning, count the step (``train/skipped_steps`` in metrics.jsonl and the checkpoint
  manifest) and go on; ``train.max_skipped_steps`` non-finite steps in a row raise :class:`DivergenceError`.

A loss spike (``train.loss_spike_factor`` > 0: a finite loss above that factor times the median of the last
``train.loss_spike_window`` finite losses) is logged as a warning and counted (``train/loss_spikes``); the step's
update is kept (the usual remedy, rewinding to a checkpoint and skipping the data, is the user's decision).
"""
from __future__ import annotations

import math
from collections import deque
from statistics import median
from typing import Callable


class DivergenceError(RuntimeError):
    pass


class NonFiniteGuard:
    def __init__(self, policy: str, max_in_a_row: int, log: Callable[[str], None], skipped: int = 0):
        self.policy, self.max_in_a_row, self.log = policy, max_in_a_row, log
        self.skipped = skipped          # non-finite steps skipped in this run (kept across resumes)
        self.in_a_row = 0

    def check(self, step: int, loss: float, grad_norm: float) -> bool:
        """``step`` is 1-based. True when the step's update was applied; raises DivergenceError to stop."""
        if math.isfinite(loss) and math.isfinite(grad_norm):
            self.in_a_row = 0
            return True
        what = f"loss {loss} / grad norm {grad_norm}"
        if self.policy == "stop":
            raise DivergenceError(f"step {step}: {what} is not finite; training stopped (train.on_nonfinite=stop). "
                                  f"The step's update was not applied and no later checkpoint was written")
        self.skipped += 1
        self.in_a_row += 1
        if self.in_a_row >= self.max_in_a_row:
            raise DivergenceError(f"step {step}: {self.in_a_row} non-finite steps in a row (train.max_skipped_steps"
                                  f"={self.max_in_a_row}); training stopped. No update of these steps was applied")
        self.log(f"warning: step {step}: {what} is not finite; update skipped ({self.in_a_row} in a row, "
                 f"{self.skipped} in this run; train.on_nonfinite=skip_step)")
        return False


class LossSpikeDetector:
    """``check(step, loss)`` -> True (and a logged warning) when ``loss > factor * median(last window losses)``;
    off when ``factor`` is 0. Only finite losses enter the window; the window must be full before anything is
    called a spike."""

    def __init__(self, factor: float, window: int, log: Callable[[str], None]):
        self.factor, self.log = factor, log
        self.recent = deque(maxlen=window)
        self.spikes = 0

    def check(self, step: int, loss: float) -> bool:
        if self.factor <= 0 or not math.isfinite(loss):
            return False
        spike = len(self.recent) == self.recent.maxlen and loss > self.factor * median(self.recent)
        if spike:
            self.spikes += 1
            self.log(f"warning: step {step}: loss spike, {loss:.4f} > {self.factor:g} x the median "
                     f"{median(self.recent):.4f} of the last {len(self.recent)} steps ({self.spikes} in this run; "
                     f"train.loss_spike_factor)")
        self.recent.append(loss)
        return spike
