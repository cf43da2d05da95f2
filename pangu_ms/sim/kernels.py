"""Kernel counts of the project's reference (CPU, unfused) implementation, derived from the model structure.

Derived from the model / train code of commit b656535 (with train/step.py's graph-safe clip loop). Commit
bd58539 ("shared expert folded into masked-dense expert matmuls", fused AdamW, flat grad-norm buffer; 2,173 ->
1,023 kernels per step on tiny_cpu by its author's count) changed the reference implementation: re-derive
the per-operator counts below (and re-check against the compiled graph's final IR) when the model changes.

On a CPU every kernel launch of a compiled MindSpore graph costs a fixed ``op_overhead`` (measured by
``calibrate``) on top of its FLOPs / bytes; for small models this term dominates the step. The simulator's
operators (compute.py) are coarse groups, so for ``sim.moe_impl: training_cpu`` each group's ``calls`` is the
number of *forward* kernels the reference implementation launches for it, counted from the code:

    RMSNorm (backend.RMSNorm)            6   x*x, mean, +eps, rsqrt, *, *gain
    RoPE (model/rope.py)                 4   rotate matmul, *cos, *sin, +
    Linear (model/linear.py)             1   MatMul primitive with transpose_b
    SwiGLU (backend.SwiGLU)              4   2 slices, silu, *
    attention core (backend)             7   q_nope k_nope^T, q_rope k_rope^T, +, *scale, +mask, softmax, @v
                                             (GQA/MHA: 5 without the rope product, + 2 repeat_elements if grouped)
    MLA glue (model/attention.py)        9   3 transposes (q, kv, o), 6 slices (q nope/rope, c_kv, k_rope, k, v)
    router (moe/router.py)               10  sigmoid|softmax, sum, /, +bias, topk, gather, *scale, one_hot, sum
                                             (+3 when norm_topk_prob), + aux loss 8, + load sum 1
    masked-dense dispatch/experts        gates one_hot, *, sum (3); w1 transpose + matmul (2); SwiGLU (4) +
                                             *gates (1); matmul (1)
    residual add                         1 per sub-block

Backward: ``BWD_KERNELS_PER_FWD`` = 2 kernels per forward kernel (assumption: one gradient kernel per input of
a binary op; the compiled tiny_cpu step has 1,855 kernels in its final graph vs 1,718 counted here, see
docs/simulator.md). The optimizer adds ``param_tensors(cfg)`` fused AdamW kernels (train/optim.py
``FusedAdamW``: one kernel per parameter tensor) plus ``STEP_KERNELS`` for the loss combination, causal masks,
global-norm clipping and the LR / bias-correction scalars.
"""
from __future__ import annotations

from ..config.schema import Config

BWD_KERNELS_PER_FWD = 2.0     # assumption (see the module docstring)
STEP_KERNELS = 30             # loss sum 6, 2 causal masks 6, clip (concat, square-sum, sqrt, min, *, split) 8,
                              # optimizer scalars (step, pow x2, sqrt, lr, eps, wd) 10


def reference_forward_kernels(cfg: Config) -> dict:
    """Forward kernels of each simulator operator (compute.py op names) in the reference implementation."""
    m, e = cfg.model, cfg.moe
    sandwich = 1 if m.sandwich_norm else 0
    if m.attention_type == "mla":
        q_lora = 1 if m.q_lora_rank > 0 else 0
        attn = {"attn.down_proj": 1 + q_lora, "attn.up_proj": 2, "attn.o_proj": 1, "attn.core": 7,
                # input norm, q_a / kv_a norms, 2 RoPEs, MLA glue, residual, post-attention norm (sandwich)
                "attn.norm_rope_residual": 6 * (1 + q_lora + 1) + 2 * 4 + 9 + 1 + 6 * sandwich}
    else:
        grouped = m.attention_type == "gqa" and m.num_kv_heads < m.num_heads
        attn = {"attn.qkv_o_proj": 4, "attn.core": 5 + (2 if grouped else 0),
                # input norm, RoPE on q and k, 4 transposes, residual, post-attention norm
                "attn.norm_rope_residual": 6 + 2 * 4 + 4 + 1 + 6 * sandwich}
    norms_res = 6 * (1 + sandwich) + 1                 # pre-MLP norm (+ post-MLP norm) + residual
    out = dict(attn)
    out.update({"ffn.swiglu": 2, "ffn.act_norm_residual": 4 + norms_res,
                "moe.router": 1, "moe.router_topk": 10 + (3 if e.norm_topk_prob else 0) + 8 + 1,
                "moe.experts.fc1": 2, "moe.experts.fc2": 1, "moe.experts.act": 5,
                "moe.permute_unpermute": 3, "moe.shared": 2, "moe.shared.act": 4 + 1,
                "moe.norm_residual": norms_res,
                "embed.lookup": 1,
                "head.lm_head": 1, "head.norm_xent": 6 + 1, "mtp_head.lm_head": 1, "mtp_head.norm_xent": 6 + 1,
                # enorm, hnorm, concat, 3 slices (hidden, next tokens, targets), the embedding lookup
                "mtp.eh_proj": 1, "mtp.norms": 6 + 6 + 1 + 3 + 1})
    return out


def param_tensors(cfg: Config) -> int:
    """Trainable parameter tensors of PanguForCausalLM (one fused AdamW kernel each)."""
    m, e = cfg.model, cfg.moe
    if m.attention_type == "mla":
        attn = (3 if m.q_lora_rank > 0 else 1) + 3 + 1          # q_a, q_a_norm, q_b | q; kv_a, kv_a_norm, kv_b; o
    else:
        attn = 4
    norms = 2 + (2 if m.sandwich_norm else 0)
    dense = attn + norms + 2
    moe = attn + norms + 1 + 2 + (2 if e.num_shared_experts else 0)
    n_moe = (m.num_layers - m.num_dense_layers) if e.enabled else 0
    layers = (m.num_layers - n_moe) * dense + n_moe * moe
    mtp_layer = moe if e.enabled else dense
    head = 1 + 1 + (0 if m.tie_embeddings else 1)               # embedding, final norm, LM head
    return layers + head + m.mtp_depth * (4 + mtp_layer)


def reference_step_kernels(cfg: Config) -> float:
    """Kernels of one reference training step (forward, backward, optimizer); for reports and tests."""
    fwd = reference_forward_kernels(cfg)
    m, e = cfg.model, cfg.moe
    attn_keys = [k for k in fwd if k.startswith("attn.")]
    attn = sum(fwd[k] for k in attn_keys)
    dense = attn + fwd["ffn.swiglu"] + fwd["ffn.act_norm_residual"]
    moe = attn + sum(fwd[k] for k in ("moe.router", "moe.router_topk", "moe.experts.fc1", "moe.experts.fc2",
                                      "moe.experts.act", "moe.permute_unpermute", "moe.norm_residual"))
    if e.num_shared_experts:
        moe += fwd["moe.shared"] + fwd["moe.shared.act"]
    n_moe = (m.num_layers - m.num_dense_layers) if e.enabled else 0
    total = (m.num_layers - n_moe) * dense + n_moe * moe + fwd["embed.lookup"] + fwd["head.lm_head"] \
        + fwd["head.norm_xent"]
    total += m.mtp_depth * ((moe if e.enabled else dense) + fwd["mtp.eh_proj"] + fwd["mtp.norms"]
                            + fwd["mtp_head.lm_head"] + fwd["mtp_head.norm_xent"])
    return total * (1.0 + BWD_KERNELS_PER_FWD) + param_tensors(cfg) + STEP_KERNELS
