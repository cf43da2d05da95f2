"""Kernel counts of the project's reference (CPU, unfused) implementation, derived from the model structure.

On a CPU every kernel launch of a compiled MindSpore graph costs a fixed ``op_overhead`` (measured by
``calibrate``) on top of its FLOPs / bytes; for small models this term dominates the step. The simulator's
operators (compute.py) are coarse groups, so for ``sim.moe_impl: training_cpu`` each group's ``calls`` is the
number of *forward* kernels the reference implementation launches for it, counted from the code:

    RMSNorm (backend.RMSNorm)            6   x*x, mean, +eps, rsqrt, *, *gain
    RoPE (model/rope.py)                 6   rotate matmul, expand cos / sin, *cos, *sin, +
    Linear (layers/linear.py)            1   MatMul primitive with transpose_b
    SwiGLU (backend.SwiGLU)              4   2 slices, silu, *
    attention core (backend)             8   q_nope k_nope^T, q_rope k_rope^T, +, *scale, expand mask, +mask, softmax, @v
                                             (GQA/MHA: 5 without the rope product, + 2 repeat_elements if grouped)
    MLA glue (model/attention.py)        9   3 transposes (q, kv, o), 6 slices (q nope/rope, c_kv, k_rope, k, v)
    router (moe/router.py)               16  sigmoid|softmax, sum, /, topk, gather, *scale, one_hot, sum, casts,
                                             the aux-loss statistics (+3 when norm_topk_prob: sum, +eps, /)
    masked-dense dispatch / experts      gates one_hot, *, sum (3); w1 transpose + matmul (2); SwiGLU (4) +
    (moe/dispatcher.py, experts.py)          *gates (1); matmul (1); the shared expert folded into the same two
                                             matmuls: 3 weight / gate concats + ones (4)
    residual add                         1 per sub-block
    MTP extras (model/mtp.py)            25  enorm, hnorm, concat, slices, embedding lookup, final norm, loss glue
    head + loss glue                     35  final norm, cross-entropy, loss combination (LM + MTP + aux terms)

Checked against the compiled graph (``tools/count_kernels.py --variants``: the backend's final IR of the
training step, pangu_ms/sim/graph_kernels.py), tiny_cpu and six one-change variants (3 layers, 2 dense layers,
no MTP, no sandwich norm, no q_lora, no shared expert): the forward counts above reproduce the compiled
forward exactly for every variant (tiny_cpu: 552 = 37 + 73 dense + 3 x 102 MoE + 136 MTP).

Backward: ``BWD_KERNELS_PER_FWD`` = 1.40 backward kernels per forward kernel, measured on the same graphs
(tiny_cpu: 775 / 552; per block 1.36 .. 1.58, the head's fused cross-entropy gradient much less). The
optimizer and step glue add ``PER_TENSOR_KERNELS`` = 2 kernels per parameter tensor (the fused AdamW kernel
of train/optim.py ``FusedAdamW`` and the clip scale) plus ``STEP_KERNELS`` = 91 (global-norm, LR schedule
both branches, bias-correction scalars): a least-squares fit over the seven variants was exactly 2 T + 41 with MindFormers' LR Cell; the arithmetic
schedule Cell of train/schedule.py and the non-finite guard of train/step.py add 50 (measured on tiny_cpu: 1030 compiled).
Whole step: compiled vs counted within 2 % on all seven (the table in docs/simulator.md). Re-run
``tools/count_kernels.py --variants`` and update these numbers whenever the model or the train step changes.

The ``cpu_fused`` backend (backend.FusedCpuBackend) runs RMSNorm, RoPE, SwiGLU, the attention core's scaled masked
softmax and the embedding lookup as one C++ kernel forward and one backward each: a norm is 1 forward kernel
instead of 7, RoPE 1 instead of 6, SwiGLU 1 instead of 4, the core 3 fewer (scale, mask expand and add, softmax ->
one kernel): tiny_cpu's structural forward 607 -> 323 (compiled: 664 -> 336). Its backward ratio
``bwd_kernels_per_fwd`` = 1.30 per structural forward kernel is the value that minimises the largest whole-step
error over the seven variants compiled with ``model.backend=cpu_fused`` and the 2-layer config of
tests/sim/test_graph_kernels.py: all eight within 2.5 % (tiny_cpu: 1,025 compiled, 1,002 counted).
"""
from __future__ import annotations

from ..config.schema import Config
from ..model.inventory import layer_counts, layer_template, model_level_entries, mtp_module_entries

BWD_KERNELS_PER_FWD = 1.40    # measured on the compiled graph (see the module docstring), backend cpu
# forward kernels per op by backend (see the module docstring); any other backend counts as the reference
NORM_KERNELS = {"cpu": 7, "cpu_fused": 1}
SWIGLU_KERNELS = {"cpu": 4, "cpu_fused": 1}
ROPE_KERNELS = {"cpu": 6, "cpu_fused": 1}
CORE_SOFTMAX_KERNELS = {"cpu": 4, "cpu_fused": 1}       # scale, mask expand, mask add, softmax
BACKWARD_PER_FORWARD = {"cpu": BWD_KERNELS_PER_FWD, "cpu_fused": 1.30}


def bwd_kernels_per_fwd(cfg: Config) -> float:
    """Backward kernels per structural forward kernel of ``cfg.model.backend`` (measured, module docstring)."""
    return BACKWARD_PER_FORWARD.get(cfg.model.backend, BWD_KERNELS_PER_FWD)


def _per_backend(table: dict, cfg: Config) -> int:
    return table.get(cfg.model.backend, table["cpu"])
PER_TENSOR_KERNELS = 2        # fused AdamW + clip scale per parameter tensor
STEP_KERNELS = 91             # global norm, the arithmetic LR-schedule Cell, the non-finite guard, bias-correction scalars


def reference_forward_kernels(cfg: Config) -> dict:
    """Forward kernels of each simulator operator (compute.py op names) in the reference implementation."""
    m, e = cfg.model, cfg.moe
    sandwich = 1 if m.sandwich_norm else 0
    nk, sw, rk = _per_backend(NORM_KERNELS, cfg), _per_backend(SWIGLU_KERNELS, cfg), _per_backend(ROPE_KERNELS, cfg)
    core_fused = CORE_SOFTMAX_KERNELS["cpu"] - _per_backend(CORE_SOFTMAX_KERNELS, cfg)   # kernels the fusion saves
    if m.attention_type == "mla":
        q_lora = 1 if m.q_lora_rank > 0 else 0
        attn = {"attn.down_proj": 1 + q_lora, "attn.up_proj": 2, "attn.o_proj": 1, "attn.core": 8 - core_fused,
                # input norm, q_a / kv_a norms, 2 RoPEs, MLA glue, residual, post-attention norm (sandwich)
                "attn.norm_rope_residual": nk * (1 + q_lora + 1) + 2 * rk + 9 + 1 + nk * sandwich}
    else:
        grouped = m.attention_type == "gqa" and m.num_kv_heads < m.num_heads
        attn = {"attn.qkv_o_proj": 4, "attn.core": 6 + (2 if grouped else 0) - core_fused,
                # input norm, RoPE on q and k, 4 transposes, residual, post-attention norm
                "attn.norm_rope_residual": nk + 2 * rk + 4 + 1 + nk * sandwich}
    norms_res = nk * (1 + sandwich) + 1                # pre-MLP norm (+ post-MLP norm) + residual
    out = dict(attn)
    out.update({"ffn.swiglu": 2, "ffn.act_norm_residual": sw + norms_res,
                "moe.router": 1, "moe.router_topk": 16 + (3 if e.norm_topk_prob else 0),
                "moe.experts.fc1": 2, "moe.experts.fc2": 1, "moe.experts.act": sw + 1,
                # the shared expert rides in the expert matmuls: its own kernels are the weight / gate concats
                "moe.permute_unpermute": 3, "moe.shared": 4, "moe.shared.act": 0,
                "moe.norm_residual": norms_res,
                "embed.lookup": 1,
                # final norm + cross-entropy + the loss combination (LM, MTP, per-layer aux terms)
                "head.lm_head": 1, "head.norm_xent": 28 + nk, "mtp_head.lm_head": 1, "mtp_head.norm_xent": nk,
                # enorm, hnorm, concat, slices (hidden, next tokens, targets), embedding lookup, loss glue
                "mtp.eh_proj": 1, "mtp.norms": 11 + 2 * nk})
    return out


def param_tensors(cfg: Config) -> int:
    """Trainable parameter tensors of PanguForCausalLM (one fused AdamW kernel each), from the inventory."""
    def per_layer(moe_layer):
        return sum(1 for *_, trainable in layer_template(cfg, moe_layer) if trainable)
    n_dense, n_moe = layer_counts(cfg)
    mtp = sum(1 for p in mtp_module_entries(cfg, 0) if p.trainable) if cfg.model.mtp_depth else 0
    return (len(model_level_entries(cfg)) + n_dense * per_layer(False) + (n_moe * per_layer(True) if n_moe else 0)
            + cfg.model.mtp_depth * mtp)


def optimizer_step_kernels(cfg: Config) -> float:
    """Kernels outside forward and backward: one fused AdamW kernel per parameter tensor + step glue."""
    return PER_TENSOR_KERNELS * param_tensors(cfg) + STEP_KERNELS


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
    return total * (1.0 + bwd_kernels_per_fwd(cfg)) + optimizer_step_kernels(cfg)


def _norm_of(rows: float, d: float, fused: bool = False) -> tuple:
    """RMSNorm on [rows, d]: x*x (plain); mean (reduction), x * rsqrt (broadcast), * gain (broadcast). The fused
    C++ norm (cpu_fused) reads x twice and writes y once, all plain."""
    return (3.0 * rows * d, 0.0) if fused else (rows * d, 3.0 * rows * d)


def reference_elementwise(cfg: Config, tokens: float, batch: float, seq: float) -> dict:
    """Forward element-wise work of the reference implementation per simulator operator, in elements:
    ``{op: (plain, slow)}``. *plain* kernels read and write same-shaped tensors (copies for slices / transposes
    / concats, same-shape binary ops, activations); *slow* ones broadcast an operand or reduce an axis (RMSNorm's
    mean and its two broadcast multiplies, RoPE's cos / sin products, the attention mask add and softmax, the
    routing-gate multiply, cross-entropy). MindSpore's CPU kernels run the second class ~5x below the first's
    bandwidth (``calibrate`` measures both: ``hbm_bandwidth`` and ``broadcast_efficiency``). Tensors smaller
    than [tokens, experts] are counted too, but are launch-bound (``op_overhead``)."""
    m, e = cfg.model, cfg.moe
    t, h = float(tokens), float(m.hidden_size)
    n = float(m.num_heads)
    p = batch * n * seq * seq                                  # attention scores [B, N, S, S]

    def add(acc, *parts):
        return (acc[0] + sum(x[0] for x in parts), acc[1] + sum(x[1] for x in parts))

    sandwich = 1.0 if m.sandwich_norm else 0.0
    fused = cfg.model.backend == "cpu_fused"
    core = (3.0 * p, 0.0) if fused else (p, 3.0 * p)           # fused: one pass of scale, mask, softmax

    def _norm(rows, d):                                        # the backend's norm
        return _norm_of(rows, d, fused)

    def rope_work(rope, other_plain):                          # reference: + (plain), * cos, * sin (broadcast)
        return (3.0 * rope + other_plain, 0.0) if fused else (rope + other_plain, 2.0 * rope)

    out = {}
    if m.attention_type == "mla":
        dn, dr, dv = m.qk_nope_head_dim, m.qk_rope_head_dim, m.v_head_dim
        a = add((0.0, 0.0), _norm(t, h), _norm(t, m.kv_lora_rank))
        if m.q_lora_rank > 0:
            a = add(a, _norm(t, m.q_lora_rank))
        if sandwich:
            a = add(a, _norm(t, h))
        rope = t * n * dr + t * dr                             # q and the shared k_rope
        glue = t * n * ((dn + dr) + (dn + dv) + dv) + t * n * (dn + dr + dn + dv) + t * (m.kv_lora_rank + dr)
        a = add(a, rope_work(rope, glue + t * h))          # rope: + (plain), * cos, * sin; residual add
        out["attn.core"] = (core[0] + p, core[1])              # + rope scores; * scale, + mask, softmax (2)
    else:
        hd = m.attn_head_dim
        kvh = n if m.attention_type == "mha" else float(m.num_kv_heads)
        a = add((0.0, 0.0), _norm(t, h))
        if sandwich:
            a = add(a, _norm(t, h))
        rope = t * (n + kvh) * hd
        glue = t * hd * (2 * n + 2 * kvh) + (2 * t * n * hd if kvh < n else 0.0)   # transposes (+ repeats)
        a = add(a, rope_work(rope, glue + t * h))
        out["attn.core"] = core                                # * scale; + mask, softmax (2)
    out["attn.norm_rope_residual"] = a
    mlp_norms = add((t * h, 0.0), _norm(t, h), *([_norm(t, h)] if sandwich else []))   # + residual
    ffn = float(m.dense_ffn_hidden)
    out["ffn.act_norm_residual"] = add(mlp_norms, (4.0 * t * ffn, 0.0))     # SwiGLU: 2 slices, silu, *
    ne, k, f = float(e.num_experts), float(e.top_k), float(e.expert_ffn_hidden)
    ns = float(e.num_shared_experts)
    out["moe.router_topk"] = (t * ne + t * k + t * k * ne, 6.0 * t * ne + 2.0 * t * k + t * k * ne)
    out["moe.permute_unpermute"] = (t * k * ne, 2.0 * t * k * ne)            # one_hot, gate * w, sum over k
    rows_f = t * (ne + ns) * f                                                 # every expert on every token
    out["moe.experts.act"] = (4.0 * rows_f + ne * 2 * f * h, rows_f)         # SwiGLU + w1 transpose; * gates
    out["moe.shared"] = (3.0 * (ne + ns) * f * h + t * (ne + ns), 0.0) if ns else (0.0, 0.0)   # concats
    out["moe.norm_residual"] = mlp_norms
    v = float(m.vocab_size)
    out["embed.lookup"] = (t * h, 0.0)
    out["head.norm_xent"] = add(_norm(t, h), (0.0, 2.0 * t * v))             # fused softmax cross-entropy
    out["mtp_head.norm_xent"] = out["head.norm_xent"]
    out["mtp.norms"] = add(_norm(t, h), _norm(t, h), (5.0 * t * h, 0.0))     # enorm, hnorm, concat, slices
    return out
