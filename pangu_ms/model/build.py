"""``build_model(cfg)``: the one convenience constructor mapping a whole recipe onto the model's own inputs
(the ``model`` and ``moe`` sections, ``train.seed``, and the attention options of ``long_context``)."""
from __future__ import annotations

from ..config.schema import Config
from .attention import AttentionOptions
from .transformer import PanguForCausalLM


def attention_options(cfg: Config) -> AttentionOptions:
    """RoPE scaling and attention chunking of the recipe (``long_context`` section; defaults when unused)."""
    lc = cfg.long_context
    return AttentionOptions(rope_scaling=lc.rope_scaling, rope_scaling_factor=lc.rope_scaling_factor,
                            rope_original_max_position=lc.rope_original_max_position, chunk=lc.attention_chunk)


def build_model(cfg: Config, hooks=None, seed: int | None = None, backend: str | None = None) -> PanguForCausalLM:
    """``PanguForCausalLM`` of ``cfg``; ``seed`` defaults to ``train.seed``; ``hooks``: expert-parallel hooks
    of the runtime (``pangu_ms.parallel.runtime.Runtime.hooks``); ``backend`` defaults to ``model.backend``."""
    return PanguForCausalLM(cfg.model, cfg.moe, cfg.train.seed if seed is None else seed, backend=backend,
                            hooks=hooks, attention=attention_options(cfg))
