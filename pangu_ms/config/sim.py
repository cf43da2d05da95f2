"""Simulator section of the recipe (``sim:``): hardware, cluster and optimisation switches for pangu_ms/sim."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SimConfig:
    """Inputs of the performance simulator that are not part of the model or the parallel layout.

    Attributes:
        hardware: hardware profile name (``ascend_910b``, ``h100``, ``h800``) or a profile YAML path.
    """

    hardware: str = "ascend_910b"
