"""Stage dispatch: ``stage.name`` of the recipe -> the stage's runner. Pretraining is the shared loop; the other
stages (long_context, sft, rl) build on it and are added by their own modules."""
from __future__ import annotations

from ..config import Config


def run_stage(cfg: Config, progress: bool = True, stop_after: int | None = None) -> dict:
    name = cfg.stage.name
    if name == "pretrain":
        from .loop import Trainer
        return Trainer(cfg, progress=progress).train(stop_after=stop_after)
    if name == "long_context":
        from .long_context import run_long_context
        return run_long_context(cfg, progress=progress, stop_after=stop_after)
    if name == "sft":
        from .sft import run_sft
        return run_sft(cfg, progress=progress, stop_after=stop_after)
    if name == "rl":
        from .rl import run_rl
        return run_rl(cfg, progress=progress, stop_after=stop_after)
    raise NotImplementedError(f"stage.name: '{name}' has no runner")
