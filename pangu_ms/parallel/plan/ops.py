"""Op strategies of the plan, each bound to a Cell path and a primitive (or ``plan_attrs`` name) of the model.

Targets (checked against the instantiated model by ``apply_ascend.apply_plan(..., dry_run=True)``):
``embedding.gather`` (Gather), ``<linear>.matmul`` (MatMul), ``<norm>.norm`` and ``<attention>.core.attention``
(Cells that map the logical op onto their named primitives), ``moe.experts.bmm_gate_up`` / ``bmm_down``,
``lm_head.matmul`` (or the model's ``head_mm`` when embeddings are tied) and, on the loss Cell,
``cross_entropy.fused`` (SparseSoftmaxCrossEntropyWithLogits).
"""
from __future__ import annotations

from .specs import OpPlan, TensorSpec
from .tensors import layer_specs

NORMS = ("input_norm", "post_attn_norm", "pre_mlp_norm", "post_mlp_norm")


def plan_ops(cfg, expert_tp: bool, tokens: int) -> list[OpPlan]:
    """Logical ops with the specs of their inputs; ``tokens`` = tokens of one stage-global micro-batch."""
    m, e, t = cfg.model, cfg.moe, cfg.train
    hidden, vocab = m.hidden_size, m.vocab_size
    tokens_dims, TP, N = ("dp", "cp"), ("tp",), ()
    batch = cfg.parallel.micro_batch_size * cfg.parallel.dp
    seq = t.seq_length
    layer = layer_specs(cfg, expert_tp)

    def w(suffix):
        return layer[suffix][0]

    def where(suffix):
        return layer[suffix][1]

    def x(width, dims2=N, name="x"):
        return TensorSpec(name, (tokens, width), (tokens_dims, dims2))

    def linear(suffix, kind, seed=False):
        cell = suffix.rsplit(".", 1)[0]
        width_in = w(suffix).shape[1]
        if kind == "column":
            xin, comm = x(width_in), "none (output split over tp)"
        elif kind == "row":
            xin, comm = x(width_in, TP), "AllReduce(tp) of the partial output"
        else:
            xin, comm = x(width_in), "none (replicated weight; gradient AllReduce over the stage)"
        return OpPlan(cell, f"layers.{{i}}.{cell}", "MatMul", "matmul", kind, [xin, w(suffix)],
                      layers=where(suffix), seed=seed, comm=comm)

    def norm(suffix):
        cell = suffix.rsplit(".", 1)[0]
        return OpPlan(cell, f"layers.{{i}}.{cell}", "RmsNorm", "norm", "norm", [x(w(suffix).shape[0]), w(suffix)],
                      layers=where(suffix))

    ops = [OpPlan("embedding", "embedding", "Gather", "gather", "vocab",
                  [TensorSpec("embedding.weight", (vocab, hidden), (TP, N)),
                   TensorSpec("input_ids", (tokens,), (tokens_dims,))],
                  layers="none", mtp=False, seed=True,
                  comm="vocab-parallel lookup: masked local gather + AllReduce(tp)")]
    ops += [norm(f"{n}.weight") for n in NORMS if f"{n}.weight" in layer]
    kinds = {0: "column", 1: "row", None: "replicated"}
    for suffix, (spec, _) in layer.items():
        if suffix.startswith("attention.") and len(spec.shape) == 2:
            ops.append(linear(suffix, kinds[_tp_dim(spec)]))
        elif suffix.startswith("attention.") and suffix.endswith("_norm.weight"):
            ops.append(norm(suffix))
    heads = m.num_heads
    if m.attention_type == "mla":
        dq, dv, kv_heads = m.qk_nope_head_dim + m.qk_rope_head_dim, m.v_head_dim, heads
    else:
        dq = dv = m.attn_head_dim
        kv_heads = heads if m.attention_type == "mha" else m.num_kv_heads
    bnsd = (("dp",), TP, ("cp",), N)
    ops.append(OpPlan("attention.core", "layers.{i}.attention.core", "FlashAttentionScore", "attention",
                      "attention",
                      [TensorSpec("q", (batch, heads, seq, dq), bnsd), TensorSpec("k", (batch, kv_heads, seq, dq), bnsd),
                       TensorSpec("v", (batch, kv_heads, seq, dv), bnsd)],
                      comm="context parallel: ring exchange of k/v over cp" if cfg.parallel.cp > 1 else "none"))
    if "mlp.gate_up_proj.weight" in layer and (m.num_dense_layers > 0 or not e.enabled):
        ops += [linear("mlp.gate_up_proj.weight", "column"), linear("mlp.down_proj.weight", "row")]
    if e.enabled:
        experts, ffn = e.num_experts, e.expert_ffn_hidden
        ops.append(linear("moe.router.weight", "replicated"))
        edim, fdim = ("ep",), (("etp",) if expert_tp else N)
        cap = tokens * e.top_k // experts  # nominal tokens per expert per micro-batch (balanced routing)
        ops += [OpPlan("moe.experts.gate_up", "layers.{i}.moe.experts", "BatchMatMul", "bmm_gate_up", "expert",
                       [TensorSpec("dispatched", (experts, cap, hidden), (edim, ("edp",), N), "expert"),
                        w("moe.experts.w_gate_up")], layers="moe", seed=True,
                       comm="EP all-to-all dispatch before (AlltoAll over the ep group)"),
                OpPlan("moe.experts.down", "layers.{i}.moe.experts", "BatchMatMul", "bmm_down", "expert",
                       [TensorSpec("expert_hidden", (experts, cap, ffn), (edim, ("edp",), fdim), "expert"),
                        w("moe.experts.w_down")], layers="moe", seed=True,
                       comm=("AllReduce(etp) of the partial output, then EP all-to-all combine" if expert_tp
                             else "EP all-to-all combine after"))]
        if e.num_shared_experts:
            ops += [linear("moe.shared_expert.gate_up_proj.weight", "column"),
                    linear("moe.shared_expert.down_proj.weight", "row")]
    ops.append(OpPlan("final_norm", "final_norm", "RmsNorm", "norm", "norm",
                      [x(hidden), TensorSpec("final_norm.weight", (hidden,), (N,))], layers="none", mtp=False))
    head_weight = TensorSpec("embedding.weight" if m.tie_embeddings else "lm_head.weight", (vocab, hidden), (TP, N))
    ops.append(OpPlan("lm_head", "" if m.tie_embeddings else "lm_head", "MatMul",
                      "head_mm" if m.tie_embeddings else "matmul", "vocab", [x(hidden), head_weight],
                      layers="none", mtp=False, seed=True, comm="none (logits split over the vocabulary)"))
    ops.append(OpPlan("loss.cross_entropy", "cross_entropy", "SparseSoftmaxCrossEntropyWithLogits", "fused", "loss",
                      [TensorSpec("logits", (tokens, vocab), (tokens_dims, TP)),
                       TensorSpec("labels", (tokens,), (tokens_dims,))],
                      layers="none", mtp=False, seed=True, root="loss",
                      comm="vocab-parallel softmax: AllReduce(tp) of max and sum-exp"))
    layer_kinds = ("all", "moe") if e.enabled else ("all", "dense")   # what the MTP module's layer holds
    for o in ops:
        if o.layers != "none":
            o.mtp = m.mtp_depth > 0 and o.layers in layer_kinds
    if m.mtp_depth:
        ops.append(OpPlan("mtp.eh_proj", "mtp.{j}.eh_proj", "MatMul", "matmul", "column",
                          [x(2 * hidden), TensorSpec("mtp.{j}.eh_proj.weight", (hidden, 2 * hidden), (TP, N))],
                          layers="none", mtp=False, comm="AllGather(tp) of the output before the MTP layer"))
    return ops


def _tp_dim(spec: TensorSpec):
    for i, d in enumerate(spec.dims):
        if "tp" in d:
            return i
    return None
