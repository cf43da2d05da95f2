"""Parameter and FLOP counts computed from the config alone (no weights allocated).

This is the one counter of the project: tools/model_stats.py, the benchmarks, the training logs (MFU) and the
simulator all call it, and a test checks it against the instantiated model parameter by parameter.

Conventions (stated because published MFU figures differ on them):
* ``total_params`` counts every Parameter the model instantiates, MTP included (expert bias buffers too).
* ``total_params_without_mtp`` drops the MTP module (the published "718B" excludes it).
* ``active_params``: parameters used per token, without MTP, **without the input embedding** (a lookup does no
  arithmetic), with top_k of the routed experts. This is how the published "39B" is obtained.
* ``train_flops_per_token`` = 3 x forward FLOPs (backward = 2 x forward), forward FLOPs = 2 x multiply-accumulates
  of every matmul a token goes through (LM head included, router included) plus the attention score and value
  products over the **full** S x S square (PaLM / Megatron convention, no causal halving), MTP module included.
  ``train_flops_per_token_without_mtp`` drops the MTP module. Recomputation is not counted (model FLOPs).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from math import prod

from ..config.schema import Config
from .inventory import count, layer_counts, model_level_entries, mtp_module_entries, swiglu_template, template_count


@dataclass
class ModelStats:
    total_params: int
    total_params_without_mtp: int
    active_params: int
    train_flops_per_token: float
    train_flops_per_token_without_mtp: float
    seq_length: int
    breakdown: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "total_params": self.total_params,
            "total_params_without_mtp": self.total_params_without_mtp,
            "active_params": self.active_params,
            "train_flops_per_token": self.train_flops_per_token,
            "train_flops_per_token_without_mtp": self.train_flops_per_token_without_mtp,
            "seq_length": self.seq_length,
            "breakdown": self.breakdown,
        }


def _layer_kinds(cfg: Config, moe_layer: bool, kinds) -> int:
    """Elements of one decoder layer's parameters of the given kinds (read from the inventory)."""
    return template_count(cfg, moe_layer, kinds)


def attention_params(cfg: Config) -> int:
    """Matrices + internal norms of one attention block."""
    return _layer_kinds(cfg, False, ("attention", "attention_norm"))


def attention_norm_params(cfg: Config) -> int:
    """Norm weights inside the attention block (MLA's latent norms): no matmul FLOPs."""
    return _layer_kinds(cfg, False, ("attention_norm",))


def attention_core_flops_per_token(cfg: Config, seq_length: int) -> float:
    """Forward FLOPs of QK^T and AV for one token in one layer, full S x S square."""
    m = cfg.model
    if m.attention_type == "mla":
        dqk, dv = m.qk_nope_head_dim + m.qk_rope_head_dim, m.v_head_dim
    else:
        dqk = dv = m.attn_head_dim
    return 2.0 * seq_length * m.num_heads * (dqk + dv)


def swiglu_params(hidden: int, ffn: int) -> int:
    """A fused SwiGLU MLP of this width (gate_up [2F, d] + down [d, F]); the inventory's shapes."""
    return sum(prod(shape) for _, shape, *_ in swiglu_template("mlp", hidden, ffn, "dense_mlp"))


def layer_norm_params(cfg: Config) -> int:
    """The decoder layer's own RMSNorm weights (2, or 4 with sandwich norm)."""
    return _layer_kinds(cfg, False, ("norm",))


def dense_mlp_params(cfg: Config) -> int:
    return _layer_kinds(cfg, False, ("dense_mlp",))


def moe_params(cfg: Config) -> dict:
    e = cfg.moe
    if not e.enabled:
        return {"router": 0, "expert_bias": 0, "routed_experts": 0, "routed_active": 0, "shared_experts": 0}
    routed = _layer_kinds(cfg, True, ("routed_expert",))
    return {
        "router": _layer_kinds(cfg, True, ("router",)),
        "expert_bias": _layer_kinds(cfg, True, ("expert_bias",)),
        "routed_experts": routed,
        "routed_active": routed // e.num_experts * e.top_k,
        "shared_experts": _layer_kinds(cfg, True, ("shared_expert",)),
    }


def _layer(cfg: Config, moe_layer: bool) -> dict:
    """total / active / matmul-active params of one decoder layer."""
    total = _layer_kinds(cfg, moe_layer, None)
    attn_mm = _layer_kinds(cfg, moe_layer, ("attention",))
    if moe_layer:
        p = moe_params(cfg)
        inactive = p["routed_experts"] - p["routed_active"]
        active = total - p["expert_bias"] - inactive
        mm = attn_mm + p["router"] + p["routed_active"] + p["shared_experts"]
    else:
        active = total
        mm = attn_mm + dense_mlp_params(cfg)
    return {"total": total, "active": active, "matmul": mm}


def compute_stats(cfg: Config, seq_length: int | None = None) -> ModelStats:
    m = cfg.model
    s = seq_length or cfg.train.seq_length
    h, v = m.hidden_size, m.vocab_size
    n_dense, n_moe = layer_counts(cfg)
    dense, moe = _layer(cfg, False), _layer(cfg, cfg.moe.enabled)

    model_level = model_level_entries(cfg)                         # embedding, final norm, LM head
    embedding = count(model_level, ("embedding",))
    head = count(model_level, ("lm_head",))
    final_norm = count(model_level, ("norm",))
    layers_active = n_dense * dense["active"] + n_moe * moe["active"]
    layers_mm = n_dense * dense["matmul"] + n_moe * moe["matmul"]

    mtp_layer = moe if cfg.moe.enabled else dense
    mtp_module = mtp_module_entries(cfg, 0)
    mtp_total = m.mtp_depth * count(mtp_module)
    mtp_projections = count([q for q in mtp_module if q.kind == "mtp" and len(q.shape) == 2])   # eh_proj
    mtp_mm = m.mtp_depth * (mtp_projections + mtp_layer["matmul"] + v * h)

    total_wo_mtp = count(model_level) + n_dense * dense["total"] + n_moe * moe["total"]
    active = layers_active + final_norm + v * h                      # head always computes, tied or not
    attn_core = attention_core_flops_per_token(cfg, s)
    fwd_wo_mtp = 2.0 * (layers_mm + v * h) + m.num_layers * attn_core
    fwd_mtp = 2.0 * mtp_mm + m.mtp_depth * attn_core
    return ModelStats(
        total_params=total_wo_mtp + mtp_total,
        total_params_without_mtp=total_wo_mtp,
        active_params=active,
        train_flops_per_token=3.0 * (fwd_wo_mtp + fwd_mtp),
        train_flops_per_token_without_mtp=3.0 * fwd_wo_mtp,
        seq_length=s,
        breakdown={
            "embedding": embedding, "lm_head": head, "final_norm": final_norm,
            "dense_layers": n_dense, "moe_layers": n_moe,
            "dense_layer_params": dense["total"], "moe_layer_params": moe["total"] if n_moe else 0,
            "moe_layer_active_params": moe["active"] if n_moe else 0,
            "attention_params_per_layer": attention_params(cfg),
            "mtp_params": mtp_total,
            "forward_flops_per_token_attention_core": m.num_layers * attn_core,
        },
    )
