"""The math of pangu_ms as MindSpore Cells (no collectives, no shard strategies here)."""
from .transformer import DecoderLayer, PanguForCausalLM, model_dtype  # noqa: F401
