"""Expert-load predictor for dynamic expert placement (numpy): an exponential moving average per MoE layer and
expert, fed every optimizer step with the tokens routed in that step summed over all data-parallel ranks
(identical on every rank, so every rank predicts -- and later plans -- the same)::

    pred <- load                                   (first observation)
    pred <- theta * pred + (1 - theta) * load      (afterwards; MindSpeed's theta: 0.9)
"""
from __future__ import annotations

import numpy as np


class EMALoadPredictor:
    def __init__(self, theta: float):
        if not 0.0 <= theta < 1.0:
            raise ValueError(f"theta must be in [0, 1), got {theta}")
        self.theta = float(theta)
        self.pred: np.ndarray | None = None      # [n_moe_layers, E], float64
        self.observed = 0

    def update(self, load) -> np.ndarray:
        load = np.asarray(load, np.float64)
        if self.pred is None:
            self.pred = load.copy()
        else:
            self.pred = self.theta * self.pred + (1.0 - self.theta) * load
        self.observed += 1
        return self.pred

    def state(self) -> dict:
        return {"theta": self.theta, "observed": self.observed,
                "pred": None if self.pred is None else self.pred.tolist()}

    def load_state(self, state: dict) -> None:
        self.observed = int(state["observed"])
        self.pred = None if state["pred"] is None else np.asarray(state["pred"], np.float64)


__all__ = ["EMALoadPredictor"]
