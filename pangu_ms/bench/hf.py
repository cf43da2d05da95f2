"""The same model in HF transformers: ``DeepseekV3ForCausalLM`` built from a pangu_ms config, with pangu_ms's
weights copied in, plus a torch AdamW train step with the pangu_ms hyper-parameters.

Optional dependencies (``pip install -r requirements-bench.txt``: ``torch==2.13.0``, ``transformers==4.57.1``).

Mapping (pangu_ms -> HF), valid for ``attention_type: mla``, ``sandwich_norm: false``, ``mtp_depth: 0``,
``router_score: sigmoid`` (HF 4.57's DeepSeek-V3 router is always sigmoid), no expert bias:
    embedding.weight                          model.embed_tokens.weight
    layers.i.input_norm / pre_mlp_norm        input_layernorm / post_attention_layernorm
    attention.q_a_proj, q_a_norm, q_b_proj    self_attn.q_a_proj, q_a_layernorm, q_b_proj
    attention.kv_a_proj, kv_a_norm, kv_b_proj self_attn.kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj
    attention.o_proj                          self_attn.o_proj
    mlp.gate_up_proj [2F, d] (gate | up)      mlp.gate_proj = rows [:F], mlp.up_proj = rows [F:]
    moe.router.weight [E, d]                  mlp.gate.weight
    moe.experts.w_gate_up [E, d, 2F]          mlp.experts.e.gate_proj = w[e, :, :F]^T, up_proj = w[e, :, F:]^T
    moe.experts.w_down [E, F, d]              mlp.experts.e.down_proj = w[e]^T
    moe.shared_expert.*                       mlp.shared_experts.*
    final_norm / lm_head                      model.norm / lm_head
RoPE: both sides use DeepSeek's interleaved pairs (2i, 2i+1) (``rope_interleave=True``). HF de-interleaves q_rope
and k_rope before rotating, pangu_ms rotates in place; q.k is invariant under the same permutation of both, so the
attention scores are identical. HF's MLA latent norms use eps 1e-6 by default; they are set to ``norm_eps`` here.
Not modelled by HF: the MoE load-balancing aux loss (pangu_ms adds it to the training loss; HF does not compute
one), so training traces coincide beyond step 0 only with ``moe.aux_loss_coeff=0``.
"""
from __future__ import annotations

import numpy as np


def check_comparable(cfg) -> list[str]:
    """Reasons why the HF twin would not be the same model (empty list: comparable)."""
    m, e = cfg.model, cfg.moe
    why = []
    if m.attention_type != "mla":
        why.append("attention_type must be mla")
    if m.sandwich_norm:
        why.append("sandwich_norm must be false (HF DeepSeek-V3 is plain pre-norm)")
    if m.mtp_depth:
        why.append("mtp_depth must be 0 (HF DeepseekV3ForCausalLM has no MTP)")
    if e.enabled and e.router_score != "sigmoid":
        why.append("router_score must be sigmoid")
    if e.enabled and e.num_shared_experts < 1:
        why.append("HF DeepSeek-V3 always has a shared expert")
    if m.tie_embeddings:
        why.append("tie_embeddings must be false")
    if m.compute_dtype != "float32":
        why.append("compute_dtype must be float32")
    return why


def hf_config(cfg):
    from transformers import DeepseekV3Config
    m, e = cfg.model, cfg.moe
    first_dense = m.num_dense_layers if e.enabled else m.num_layers
    return DeepseekV3Config(
        vocab_size=m.vocab_size, hidden_size=m.hidden_size, intermediate_size=m.dense_ffn_hidden,
        moe_intermediate_size=e.expert_ffn_hidden, num_hidden_layers=m.num_layers,
        num_attention_heads=m.num_heads, num_key_value_heads=m.num_heads,
        n_shared_experts=max(e.num_shared_experts, 1), n_routed_experts=e.num_experts,
        routed_scaling_factor=e.routed_scaling_factor, kv_lora_rank=m.kv_lora_rank,
        q_lora_rank=m.q_lora_rank if m.q_lora_rank > 0 else None, qk_rope_head_dim=m.qk_rope_head_dim,
        v_head_dim=m.v_head_dim, qk_nope_head_dim=m.qk_nope_head_dim, n_group=1, topk_group=1,
        num_experts_per_tok=e.top_k, first_k_dense_replace=first_dense, norm_topk_prob=e.norm_topk_prob,
        hidden_act="silu", max_position_embeddings=m.max_position_embeddings, rms_norm_eps=m.norm_eps,
        rope_theta=m.rope_theta, rope_interleave=m.rope_interleaved, attention_bias=False, attention_dropout=0.0,
        tie_word_embeddings=False, use_cache=False,
    )


def build_hf_model(cfg, weights: dict, attn_impl: str = "eager"):
    """HF model with pangu_ms's weights (``weights``: pangu parameter name -> numpy array)."""
    import torch
    from transformers import DeepseekV3ForCausalLM
    hcfg = hf_config(cfg)
    hcfg._attn_implementation = attn_impl
    model = DeepseekV3ForCausalLM(hcfg).float()
    model.train()
    sd = hf_state_dict(cfg, weights)
    own = model.state_dict()
    missing = [k for k in own if k not in sd and not k.endswith("e_score_correction_bias")]
    extra = [k for k in sd if k not in own]
    if missing or extra:
        raise RuntimeError(f"weight mapping mismatch: missing {missing[:5]}, unexpected {extra[:5]}")
    for k, v in sd.items():
        if tuple(own[k].shape) != v.shape:
            raise RuntimeError(f"weight mapping: {k} has shape {tuple(own[k].shape)}, pangu gives {v.shape}")
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}, strict=False)
    for layer in model.model.layers:
        attn = layer.self_attn
        attn.kv_a_layernorm.variance_epsilon = cfg.model.norm_eps
        if hasattr(attn, "q_a_layernorm"):
            attn.q_a_layernorm.variance_epsilon = cfg.model.norm_eps
    return model


def hf_state_dict(cfg, w: dict) -> dict:
    m, e = cfg.model, cfg.moe
    sd = {"model.embed_tokens.weight": w["embedding.weight"], "model.norm.weight": w["final_norm.weight"],
          "lm_head.weight": w["lm_head.weight"]}
    for i in range(m.num_layers):
        p, q = f"layers.{i}.", f"model.layers.{i}."
        sd[q + "input_layernorm.weight"] = w[p + "input_norm.weight"]
        sd[q + "post_attention_layernorm.weight"] = w[p + "pre_mlp_norm.weight"]
        a, b = p + "attention.", q + "self_attn."
        names = [("kv_a_proj", "kv_a_proj_with_mqa"), ("kv_a_norm", "kv_a_layernorm"), ("kv_b_proj", "kv_b_proj"),
                 ("o_proj", "o_proj")]
        names += ([("q_a_proj", "q_a_proj"), ("q_a_norm", "q_a_layernorm"), ("q_b_proj", "q_b_proj")]
                  if m.q_lora_rank > 0 else [("q_proj", "q_proj")])
        for src, dst in names:
            sd[b + dst + ".weight"] = w[a + src + ".weight"]
        if p + "mlp.gate_up_proj.weight" in w:
            _swiglu(sd, q + "mlp.", w[p + "mlp.gate_up_proj.weight"], w[p + "mlp.down_proj.weight"])
        else:
            sd[q + "mlp.gate.weight"] = w[p + "moe.router.weight"]
            f = e.expert_ffn_hidden
            gu, down = w[p + "moe.experts.w_gate_up"], w[p + "moe.experts.w_down"]
            for j in range(e.num_experts):
                sd[q + f"mlp.experts.{j}.gate_proj.weight"] = gu[j, :, :f].T
                sd[q + f"mlp.experts.{j}.up_proj.weight"] = gu[j, :, f:].T
                sd[q + f"mlp.experts.{j}.down_proj.weight"] = down[j].T
            _swiglu(sd, q + "mlp.shared_experts.", w[p + "moe.shared_expert.gate_up_proj.weight"],
                    w[p + "moe.shared_expert.down_proj.weight"])
    return sd


def _swiglu(sd, prefix, gate_up, down):
    f = gate_up.shape[0] // 2
    sd[prefix + "gate_proj.weight"] = gate_up[:f]
    sd[prefix + "up_proj.weight"] = gate_up[f:]
    sd[prefix + "down_proj.weight"] = down


def torch_adamw(model, t):
    """torch AdamW with the pangu_ms groups: decay on matrices except the embedding (``decay_groups``)."""
    import torch
    decay, rest = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim >= 2 and "embed_tokens" not in name else rest).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": t.weight_decay},
                              {"params": rest, "weight_decay": 0.0}],
                             lr=t.lr, betas=(t.adam_beta1, t.adam_beta2), eps=t.adam_eps)


class TorchStep:
    """loss = CE(logits, labels) (labels already shifted, as pangu_ms takes them), clip 1.0, AdamW; the learning
    rate of each step is set from ``lrs`` (the pangu_ms schedule, so both sides take the same steps)."""

    def __init__(self, model, opt, clip: float, lrs, compiled: bool = False):
        import torch
        self.model, self.opt, self.clip, self.lrs, self.i = model, opt, clip, lrs, 0
        self.torch = torch
        fwd = self._loss
        self.loss_fn = torch.compile(fwd) if compiled else fwd

    def _loss(self, x, y):
        logits = self.model(input_ids=x, use_cache=False).logits
        return self.torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

    def __call__(self, x, y):
        lr = float(self.lrs[min(self.i, len(self.lrs) - 1)])
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss_fn(x, y)
        loss.backward()
        if self.clip > 0:
            self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.opt.step()
        self.i += 1
        return loss.item()
