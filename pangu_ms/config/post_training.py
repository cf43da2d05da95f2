"""Post-training sections of the recipe (``sft:`` and ``rl:``), used when ``stage.name`` is ``sft`` / ``rl``."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SFTConfig:
    """Supervised fine-tuning (filled in by the SFT stage)."""

    data: str = ""


@dataclass
class RLConfig:
    """GRPO-family reinforcement learning (filled in by the RL stage)."""

    group_size: int = 4
