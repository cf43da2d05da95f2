"""The parameter inventory: every Parameter of ``PanguForCausalLM`` derived from the config alone.

One entry per parameter, named exactly as ``net.parameters_and_names()`` names it, in the same order, with its
shape, kind, decoder-layer index and the dims that parallelism may split. This is the one description of the
model's parameters: ``model/stats.py`` (parameter counts), the Ascend plan (``parallel/plan``) and the
simulator's tensor counts (``sim/kernels.py``) read it; tests/model/test_inventory.py checks it against the
instantiated model for several config variants.

Kinds
    embedding, lm_head, attention (projection matrices), attention_norm (MLA's latent norms), norm (the decoder
    layer's and the model's RMSNorms), dense_mlp (dense SwiGLU FFN), router, expert_bias (not trainable),
    routed_expert, shared_expert, mtp (the MTP module's own enorm / hnorm / eh_proj / final_norm; the decoder
    layer inside an MTP module keeps the kinds above and carries ``mtp=j``).

Shardable dims (MindSpore ``[out, in]`` dense weights, see ``parallel/plan``)
    ``tp_dim``: the dim tensor parallelism splits (0 = column-parallel / vocab-parallel, 1 = row-parallel, ``None``
    = replicated); for routed experts the FFN dim (split over the expert-TP size ``etp``, config/expert_grid.py).
    ``expert_dim``: the dim expert parallelism splits (routed experts only).
    ``fused_halves``: 2 for fused gate|up weights (a contiguous split needs per-shard row order).
"""
from __future__ import annotations

from dataclasses import dataclass
from math import prod

from ..config.schema import Config

KINDS = ("embedding", "lm_head", "attention", "attention_norm", "norm", "dense_mlp", "router", "expert_bias",
         "routed_expert", "shared_expert", "mtp")


@dataclass(frozen=True)
class ParamEntry:
    name: str
    shape: tuple
    kind: str
    layer: int | None = None          # decoder layer index in ``layers``; None for model-level and MTP tensors
    mtp: int | None = None            # MTP module index (its own tensors and its decoder layer's)
    tp_dim: int | None = None
    expert_dim: int | None = None
    fused_halves: int = 1
    trainable: bool = True

    @property
    def numel(self) -> int:
        return prod(self.shape)

    @property
    def suffix(self) -> str:
        """Name relative to its decoder layer (``attention.o_proj.weight``); the full name otherwise."""
        for prefix in (f"layers.{self.layer}.", f"mtp.{self.mtp}.layer.", f"mtp.{self.mtp}."):
            if self.name.startswith(prefix):
                return self.name[len(prefix):]
        return self.name


def _attention(cfg: Config) -> list:
    """(suffix, shape, kind, tp_dim) of one attention block, in the Cell's order."""
    m = cfg.model
    hidden, heads = m.hidden_size, m.num_heads
    out = []
    if m.attention_type == "mla":
        qk = m.qk_nope_head_dim + m.qk_rope_head_dim
        if m.q_lora_rank > 0:
            out += [("q_a_proj.weight", (m.q_lora_rank, hidden), "attention", None),
                    ("q_a_norm.weight", (m.q_lora_rank,), "attention_norm", None),
                    ("q_b_proj.weight", (heads * qk, m.q_lora_rank), "attention", 0)]
        else:
            out.append(("q_proj.weight", (heads * qk, hidden), "attention", 0))
        out += [("kv_a_proj.weight", (m.kv_lora_rank + m.qk_rope_head_dim, hidden), "attention", None),
                ("kv_a_norm.weight", (m.kv_lora_rank,), "attention_norm", None),
                ("kv_b_proj.weight", (heads * (m.qk_nope_head_dim + m.v_head_dim), m.kv_lora_rank), "attention", 0),
                ("o_proj.weight", (hidden, heads * m.v_head_dim), "attention", 1)]
    else:
        head_dim = m.attn_head_dim
        kv_heads = heads if m.attention_type == "mha" else m.num_kv_heads
        out += [("q_proj.weight", (heads * head_dim, hidden), "attention", 0),
                ("k_proj.weight", (kv_heads * head_dim, hidden), "attention", 0),
                ("v_proj.weight", (kv_heads * head_dim, hidden), "attention", 0),
                ("o_proj.weight", (hidden, heads * head_dim), "attention", 1)]
    return [(f"attention.{s}", shape, kind, tp, None, 1, True) for s, shape, kind, tp in out]


def swiglu_template(prefix: str, hidden: int, ffn: int, kind: str) -> list:
    return [(f"{prefix}.gate_up_proj.weight", (2 * ffn, hidden), kind, 0, None, 2, True),
            (f"{prefix}.down_proj.weight", (hidden, ffn), kind, 1, None, 1, True)]


def _ffn(cfg: Config, moe_layer: bool) -> list:
    m, e = cfg.model, cfg.moe
    hidden = m.hidden_size
    if not moe_layer:
        return swiglu_template("mlp", hidden, m.dense_ffn_hidden, "dense_mlp")
    experts, ffn = e.num_experts, e.expert_ffn_hidden
    out = [("moe.router.weight", (experts, hidden), "router", None, None, 1, True)]
    if e.expert_bias:
        out.append(("moe.router.expert_bias", (experts,), "expert_bias", None, None, 1, False))
    out += [("moe.experts.w_gate_up", (experts, hidden, 2 * ffn), "routed_expert", 2, 0, 2, True),
            ("moe.experts.w_down", (experts, ffn, hidden), "routed_expert", 1, 0, 1, True)]
    if e.num_shared_experts:
        out += swiglu_template("moe.shared_expert", hidden, e.num_shared_experts * ffn, "shared_expert")
    return out


def layer_template(cfg: Config, moe_layer: bool) -> list:
    """One decoder layer's parameters as ``(suffix, shape, kind, tp_dim, expert_dim, fused_halves, trainable)``
    in the Cell's order (suffixes relative to ``layers.{i}.``)."""
    hidden = (cfg.model.hidden_size,)
    sandwich = cfg.model.sandwich_norm
    out = [("input_norm.weight", hidden, "norm", None, None, 1, True)] + _attention(cfg)
    if sandwich:
        out.append(("post_attn_norm.weight", hidden, "norm", None, None, 1, True))
    out.append(("pre_mlp_norm.weight", hidden, "norm", None, None, 1, True))
    out += _ffn(cfg, moe_layer)
    if sandwich:
        out.append(("post_mlp_norm.weight", hidden, "norm", None, None, 1, True))
    return out


def is_moe_layer(cfg: Config, index: int) -> bool:
    return cfg.moe.enabled and index >= cfg.model.num_dense_layers


def layer_entries(cfg: Config, moe_layer: bool, prefix: str, layer: int | None = None,
                  mtp: int | None = None) -> list[ParamEntry]:
    return [ParamEntry(prefix + suffix, shape, kind, layer, mtp, tp_dim, expert_dim, fused, trainable)
            for suffix, shape, kind, tp_dim, expert_dim, fused, trainable in layer_template(cfg, moe_layer)]


def model_level_entries(cfg: Config) -> list[ParamEntry]:
    """The tensors outside decoder layers and MTP modules: embedding, final norm, LM head (unless tied)."""
    m = cfg.model
    out = [ParamEntry("embedding.weight", (m.vocab_size, m.hidden_size), "embedding", tp_dim=0),
           ParamEntry("final_norm.weight", (m.hidden_size,), "norm")]
    if not m.tie_embeddings:
        out.append(ParamEntry("lm_head.weight", (m.vocab_size, m.hidden_size), "lm_head", tp_dim=0))
    return out


def mtp_module_entries(cfg: Config, j: int) -> list[ParamEntry]:
    """MTP module j: enorm, hnorm, eh_proj, its decoder layer (MoE when the model has experts), final norm."""
    hidden = cfg.model.hidden_size
    p = f"mtp.{j}."
    return ([ParamEntry(p + "enorm.weight", (hidden,), "mtp", mtp=j),
             ParamEntry(p + "hnorm.weight", (hidden,), "mtp", mtp=j),
             ParamEntry(p + "eh_proj.weight", (hidden, 2 * hidden), "mtp", mtp=j, tp_dim=0)]
            + layer_entries(cfg, cfg.moe.enabled, p + "layer.", mtp=j)
            + [ParamEntry(p + "final_norm.weight", (hidden,), "mtp", mtp=j)])


def parameter_inventory(cfg: Config) -> list[ParamEntry]:
    """Every parameter of ``PanguForCausalLM``, in ``parameters_and_names()`` order."""
    m = cfg.model
    embedding, *heads = model_level_entries(cfg)
    out = [embedding]
    for i in range(m.num_layers):
        out += layer_entries(cfg, is_moe_layer(cfg, i), f"layers.{i}.", layer=i)
    out += heads
    for j in range(m.mtp_depth):
        out += mtp_module_entries(cfg, j)
    return out


def template_count(cfg: Config, moe_layer: bool, kinds=None, trainable_only: bool = False) -> int:
    """Elements of one decoder layer's parameters (of the given kinds), without building entries."""
    return sum(prod(shape) for _, shape, kind, _, _, _, trainable in layer_template(cfg, moe_layer)
               if (kinds is None or kind in kinds) and (trainable or not trainable_only))


def layer_counts(cfg: Config) -> tuple[int, int]:
    """(dense decoder layers, MoE decoder layers) of the main stack."""
    n_moe = sum(1 for i in range(cfg.model.num_layers) if is_moe_layer(cfg, i))
    return cfg.model.num_layers - n_moe, n_moe


def inventory_shapes(cfg: Config) -> dict:
    """``{name: shape}`` of every parameter (what ``parameters_and_names()`` yields)."""
    return {p.name: p.shape for p in parameter_inventory(cfg)}


def count(entries, kinds=None, trainable_only: bool = False) -> int:
    """Elements of the entries (of the given kinds)."""
    return sum(p.numel for p in entries if (kinds is None or p.kind in kinds)
               and (p.trainable or not trainable_only))


__all__ = ["KINDS", "ParamEntry", "layer_template", "layer_entries", "model_level_entries", "mtp_module_entries",
           "parameter_inventory", "inventory_shapes", "is_moe_layer", "layer_counts", "template_count", "count"]
