"""pangu_ms: train Pangu-Ultra-MoE-style sparse models with MindSpore (CPU reference path, Ascend plans)."""
__version__ = "0.1.0"
