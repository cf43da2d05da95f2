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

from ..config.schema import Config


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


def attention_params(cfg: Config) -> int:
    """Matrices + internal norms of one attention block."""
    m = cfg.model
    if m.attention_type == "mla":
        qk = m.qk_nope_head_dim + m.qk_rope_head_dim
        if m.q_lora_rank > 0:
            q = m.hidden_size * m.q_lora_rank + m.q_lora_rank + m.q_lora_rank * m.num_heads * qk
        else:
            q = m.hidden_size * m.num_heads * qk
        kv = (m.hidden_size * (m.kv_lora_rank + m.qk_rope_head_dim) + m.kv_lora_rank
              + m.kv_lora_rank * m.num_heads * (m.qk_nope_head_dim + m.v_head_dim))
        o = m.num_heads * m.v_head_dim * m.hidden_size
        return q + kv + o
    hd = m.attn_head_dim
    kvh = m.num_heads if m.attention_type == "mha" else m.num_kv_heads
    return m.hidden_size * hd * (2 * m.num_heads + 2 * kvh)


def attention_norm_params(cfg: Config) -> int:
    """Norm weights inside the attention block (MLA's latent norms): no matmul FLOPs."""
    m = cfg.model
    if m.attention_type != "mla":
        return 0
    return m.kv_lora_rank + (m.q_lora_rank if m.q_lora_rank > 0 else 0)


def attention_core_flops_per_token(cfg: Config, seq_length: int) -> float:
    """Forward FLOPs of QK^T and AV for one token in one layer, full S x S square."""
    m = cfg.model
    if m.attention_type == "mla":
        dqk, dv = m.qk_nope_head_dim + m.qk_rope_head_dim, m.v_head_dim
    else:
        dqk = dv = m.attn_head_dim
    return 2.0 * seq_length * m.num_heads * (dqk + dv)


def swiglu_params(hidden: int, ffn: int) -> int:
    return 3 * hidden * ffn


def layer_norm_params(cfg: Config) -> int:
    return (4 if cfg.model.sandwich_norm else 2) * cfg.model.hidden_size


def moe_params(cfg: Config) -> dict:
    e, h = cfg.moe, cfg.model.hidden_size
    return {
        "router": e.num_experts * h,
        "expert_bias": e.num_experts if e.expert_bias else 0,
        "routed_experts": e.num_experts * swiglu_params(h, e.expert_ffn_hidden),
        "routed_active": e.top_k * swiglu_params(h, e.expert_ffn_hidden),
        "shared_experts": swiglu_params(h, e.num_shared_experts * e.expert_ffn_hidden)
        if e.num_shared_experts else 0,
    }


def _layer(cfg: Config, moe_layer: bool) -> dict:
    """total / active / matmul-active params of one decoder layer."""
    attn = attention_params(cfg)
    attn_mm = attn - attention_norm_params(cfg)
    norms = layer_norm_params(cfg)
    if moe_layer:
        p = moe_params(cfg)
        total = attn + norms + p["router"] + p["expert_bias"] + p["routed_experts"] + p["shared_experts"]
        active = attn + norms + p["router"] + p["routed_active"] + p["shared_experts"]
        mm = attn_mm + p["router"] + p["routed_active"] + p["shared_experts"]
    else:
        ffn = swiglu_params(cfg.model.hidden_size, cfg.model.dense_ffn_hidden)
        total = active = attn + norms + ffn
        mm = attn_mm + ffn
    return {"total": total, "active": active, "matmul": mm}


def compute_stats(cfg: Config, seq_length: int | None = None) -> ModelStats:
    m = cfg.model
    s = seq_length or cfg.train.seq_length
    h, v = m.hidden_size, m.vocab_size
    n_moe = (m.num_layers - m.num_dense_layers) if cfg.moe.enabled else 0
    n_dense = m.num_layers - n_moe
    dense, moe = _layer(cfg, False), _layer(cfg, cfg.moe.enabled)

    embedding = v * h
    head = 0 if m.tie_embeddings else v * h
    final_norm = h
    layers_total = n_dense * dense["total"] + n_moe * moe["total"]
    layers_active = n_dense * dense["active"] + n_moe * moe["active"]
    layers_mm = n_dense * dense["matmul"] + n_moe * moe["matmul"]

    mtp_layer = moe if cfg.moe.enabled else dense
    mtp_one_total = 2 * h + 2 * h * h + mtp_layer["total"] + h     # enorm, hnorm, eh_proj, layer, head norm
    mtp_total = m.mtp_depth * mtp_one_total
    mtp_mm = m.mtp_depth * (2 * h * h + mtp_layer["matmul"] + v * h)

    total_wo_mtp = embedding + layers_total + final_norm + head
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
