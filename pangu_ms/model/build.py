"""``build_model(cfg)``: the one convenience constructor mapping a whole recipe onto the model's own inputs
(the ``model`` and ``moe`` sections, ``train.seed``, and the attention options of ``long_context``)."""
from __future__ import annotations

from ..config import ConfigError
from ..config.schema import Config
from ..config.recompute import AUTO, resolve_recompute
from ..config.stage_recompute import single_stage_recompute_layers
from .attention import AttentionOptions
from .recompute import apply_recompute
from .transformer import PanguForCausalLM


def attention_options(cfg: Config) -> AttentionOptions:
    """RoPE scaling and attention chunking of the recipe (``long_context`` section; defaults when unused)."""
    lc = cfg.long_context
    return AttentionOptions(rope_scaling=lc.rope_scaling, rope_scaling_factor=lc.rope_scaling_factor,
                            rope_original_max_position=lc.rope_original_max_position, chunk=lc.attention_chunk)


def build_model(cfg: Config, hooks=None, seed: int | None = None, backend: str | None = None,
                recompute=None) -> PanguForCausalLM:
    """``PanguForCausalLM`` of ``cfg``; ``seed`` defaults to ``train.seed``; ``hooks``: expert-parallel hooks
    of the runtime (``pangu_ms.parallel.runtime.Runtime.hooks``); ``backend`` defaults to ``model.backend``;
    ``recompute`` (default ``train.recompute``) is applied with ``apply_recompute``. ``auto`` is resolved by
    the trainer (it needs the simulator's memory model); here it raises one error.
    ``train.recompute_layers_per_stage`` with one pipeline stage (pp = vpp = 1, the CPU training path): its first
    n layers are recomputed whole, the others with ``recompute``; with pipeline stages the Ascend plan applies it
    per stage (``pangu_ms.parallel.stage_recompute``)."""
    net = PanguForCausalLM(cfg.model, cfg.moe, cfg.train.seed if seed is None else seed, backend=backend,
                           hooks=hooks, attention=attention_options(cfg))
    spec = resolve_recompute(cfg, cfg.train.recompute if recompute is None else recompute, "train.recompute")
    if spec == AUTO:
        raise ConfigError("train.recompute: 'auto' must be resolved against train.memory_budget_gb before the "
                          "model is built (pangu_ms.train.recompute_auto)")
    p = cfg.parallel
    whole = single_stage_recompute_layers(cfg) if p.pp * p.vpp == 1 else frozenset()
    if spec or whole:
        apply_recompute(net, spec, whole_layers=whole)
    return net
