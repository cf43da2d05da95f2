"""The Ascend shard plan as data: tensor layouts, op strategies, auto-parallel settings, pipeline stages.

Generated from a :class:`~pangu_ms.config.Config` alone (no MindSpore import, runs on CPU) and validated here;
:mod:`pangu_ms.parallel.apply_ascend` is the only place that turns it into ``.shard()`` / ``pipeline_stage`` /
``set_auto_parallel_context`` calls, on Ascend only.

Meshes (one pipeline stage; MindSpore strategies describe the devices of one stage)

* ``dense``  device matrix ``(dp, cp, tp)``: attention, dense FFN, shared expert, norms, embedding, LM head.
* ``expert`` device matrix ``(edp, ep, tp)`` with ``edp = dp*cp/ep``: the routed experts. The expert dim is
  sharded over ``ep`` (or ``(ep, tp)`` with tp_extend_ep), each expert's FFN dim over ``tp`` without it.

Both matrices are row-major over the stage's local rank ``rank - stage * stage_size`` (last axis fastest), which
is exactly the coordinate system of :class:`pangu_ms.parallel.dims.ParallelDims`; :func:`local_slice` computes
the block a rank holds from the plan alone, and the tests check it against ``ParallelDims.experts_of``.

Conventions
* Dense weights are ``[out, in]`` applied as ``x @ W^T`` (MatMul ``transpose_b=True``); activations are
  flattened to ``[T, H]`` with ``T = micro_batch_size * dp * seq_length`` tokens (the stage-global micro-batch as
  semi-auto parallel sees it), and T is sharded over ``(dp, cp)`` (batch over DP, sequence over CP).
* Column-parallel (split ``out`` over tp): q_b_proj, kv_b_proj (head-major rows: heads split over tp),
  gate_up_proj, shared_expert.gate_up_proj, eh_proj, lm_head (vocab-parallel). Row-parallel (split ``in`` over
  tp, output AllReduce): o_proj, down_proj, shared_expert.down_proj. Replicated: q_a_proj, kv_a_proj (low-rank
  down-projections), router, every norm weight.
* Fused gate/up weights ``[2F, H]`` (and the expert ``[E, H, 2Fe]``) are marked ``fused_halves=2``: a contiguous
  TP split would give rank 0 all of ``gate``; the checkpoint must be stored in per-shard order
  ``[gate_0; up_0; gate_1; up_1; ...]`` for Ascend, see :func:`fused_shard_permutation`.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from math import prod

from ..config import ConfigError
from .dims import ParallelDims, layout_notes, layout_problems
from .stages import StageAssignment, assign_from_config

MESHES = {"dense": ("dp", "cp", "tp"), "expert": ("edp", "ep", "tp")}
BYTES_PER_OPT_PARAM = 12  # fp32 master/param + two fp32 Adam moments (what optimizer_level=level1 shards)


@dataclass
class TensorSpec:
    """One tensor's global shape and how each of its dims is split.

    ``dims[i]`` is a tuple of mesh axis names (major first) sharding dimension i; ``()`` = not split.
    """

    name: str
    shape: tuple
    dims: tuple
    mesh: str = "dense"
    fused_halves: int = 1
    note: str = ""

    def factors(self, axis_sizes: dict) -> tuple:
        return tuple(prod(axis_sizes[a] for a in d) for d in self.dims)

    def axes(self) -> list:
        return [a for d in self.dims for a in d]

    def layout_args(self) -> tuple:
        """Arguments of ``Layout(device_matrix, alias)(*args)`` for this tensor."""
        return tuple("None" if not d else (d[0] if len(d) == 1 else tuple(d)) for d in self.dims)


@dataclass
class OpPlan:
    """Strategy of one logical op, instantiated per layer by the cell pattern.

    Attributes:
        name: logical op (``attention.q_b_proj``).
        cell: cell path pattern (``layers.{i}.attention.q_b_proj``), ``{i}`` for decoder layers.
        prim: MindSpore primitive the strategy is for; ``attr`` the attribute of the cell holding it.
        kind: column / row / replicated / vocab / expert / norm / attention / loss.
        inputs: TensorSpecs of the primitive's inputs, in order.
        layers: which decoder layers it exists in: ``all``, ``dense``, ``moe``, ``none`` (model-level op), and
            whether the MTP layer has it (``mtp``).
        seed: part of the seed set for ``sharding_propagation`` (auto-parallel mode).
        comm: collective implied by the strategy (informational).
    """

    name: str
    cell: str
    prim: str
    attr: str
    kind: str
    inputs: list
    layers: str = "all"
    mtp: bool = True
    seed: bool = False
    comm: str = ""

    def mesh(self) -> str:
        return self.inputs[0].mesh


@dataclass
class ParamPlan:
    """Layout of one parameter pattern plus its optimizer-state sharding."""

    pattern: str
    spec: TensorSpec
    layers: str = "all"
    mtp: bool = True
    replicas: int = 1
    opt_shard: int = 1
    opt_note: str = ""


@dataclass
class ShardPlan:
    dims: ParallelDims
    axis_sizes: dict
    params: list
    ops: list
    stages: StageAssignment
    context: dict
    notes: list = field(default_factory=list)
    tokens_per_microbatch: int = 0
    num_micro_batches: int = 1
    hierarchical: bool = False
    memory: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ lookups
    def param(self, pattern: str) -> ParamPlan:
        for p in self.params:
            if p.pattern == pattern:
                return p
        raise KeyError(pattern)

    def op(self, name: str) -> OpPlan:
        for o in self.ops:
            if o.name == name:
                return o
        raise KeyError(name)

    def match_param(self, name: str) -> ParamPlan | None:
        """The plan entry of a concrete parameter name (``layers.7.attention.o_proj.weight``)."""
        for p in self.params:
            if _pattern_regex(p.pattern).fullmatch(name):
                return p
        return None

    def strategy(self, op: OpPlan) -> tuple:
        """``in_strategy`` of ``op`` as integer tuples (what ``Primitive.shard`` takes)."""
        return tuple(t.factors(self.axis_sizes) for t in op.inputs)

    def layout(self, op_or_spec) -> dict:
        """Device matrix, alias names and per-input Layout arguments (what ``Layout`` takes)."""
        mesh = op_or_spec.mesh() if isinstance(op_or_spec, OpPlan) else op_or_spec.mesh
        names = MESHES[mesh]
        out = {"device_matrix": tuple(self.axis_sizes[a] for a in names), "alias_name": names}
        if isinstance(op_or_spec, OpPlan):
            out["inputs"] = tuple(t.layout_args() for t in op_or_spec.inputs)
        else:
            out["tensor"] = op_or_spec.layout_args()
        return out

    def as_dict(self) -> dict:
        return {
            "layout": self.dims.summary(),
            "axis_sizes": dict(self.axis_sizes),
            "tokens_per_microbatch": self.tokens_per_microbatch,
            "num_micro_batches": self.num_micro_batches,
            "memory": dict(self.memory),
            "context": copy.deepcopy(self.context),
            "stages": self.stages.as_dict(),
            "params": [{"pattern": p.pattern, "shape": list(p.spec.shape), "mesh": p.spec.mesh,
                        "strategy": list(p.spec.factors(self.axis_sizes)), "layout": list(p.spec.layout_args()),
                        "layers": p.layers, "mtp": p.mtp, "replicas": p.replicas, "opt_shard": p.opt_shard,
                        "opt_note": p.opt_note, "fused_halves": p.spec.fused_halves} for p in self.params],
            "ops": [{"name": o.name, "cell": o.cell, "prim": o.prim, "attr": o.attr, "kind": o.kind,
                     "layers": o.layers, "mtp": o.mtp, "seed": o.seed, "mesh": o.mesh(),
                     "in_strategy": [list(s) for s in self.strategy(o)],
                     "layout": [list(a) if isinstance(a, tuple) else a for a in
                                (t.layout_args() for t in o.inputs)],
                     "inputs": [{"name": t.name, "shape": list(t.shape)} for t in o.inputs],
                     "comm": o.comm} for o in self.ops],
            "notes": list(self.notes),
        }


def _pattern_regex(pattern: str):
    esc = re.escape(pattern).replace(r"\{i\}", r"\d+").replace(r"\{j\}", r"\d+")
    return re.compile(esc)


# ---------------------------------------------------------------------- building
def _layer_tensors(cfg, d: ParallelDims, extend: bool):
    """(pattern suffix, shape, dims, mesh, fused, where) for the tensors of one decoder layer.

    where: ``all`` / ``dense`` / ``moe``; suffixes are relative to ``layers.{i}.``.
    """
    m, e = cfg.model, cfg.moe
    H = m.hidden_size
    T = ()
    TP = ("tp",)
    out = []
    for n in ("input_norm", "post_attn_norm", "pre_mlp_norm", "post_mlp_norm"):
        if m.sandwich_norm or n in ("input_norm", "pre_mlp_norm"):
            out.append((f"{n}.weight", (H,), (T,), "dense", 1, "all"))
    nh = m.num_heads
    if m.attention_type == "mla":
        qk = m.qk_nope_head_dim + m.qk_rope_head_dim
        if m.q_lora_rank > 0:
            out += [("attention.q_a_proj.weight", (m.q_lora_rank, H), (T, T), "dense", 1, "all"),
                    ("attention.q_a_norm.weight", (m.q_lora_rank,), (T,), "dense", 1, "all"),
                    ("attention.q_b_proj.weight", (nh * qk, m.q_lora_rank), (TP, T), "dense", 1, "all")]
        else:
            out.append(("attention.q_proj.weight", (nh * qk, H), (TP, T), "dense", 1, "all"))
        out += [("attention.kv_a_proj.weight", (m.kv_lora_rank + m.qk_rope_head_dim, H), (T, T), "dense", 1, "all"),
                ("attention.kv_a_norm.weight", (m.kv_lora_rank,), (T,), "dense", 1, "all"),
                ("attention.kv_b_proj.weight", (nh * (m.qk_nope_head_dim + m.v_head_dim), m.kv_lora_rank),
                 (TP, T), "dense", 1, "all"),
                ("attention.o_proj.weight", (H, nh * m.v_head_dim), (T, TP), "dense", 1, "all")]
    else:
        hd = m.attn_head_dim
        kv = m.num_heads if m.attention_type == "mha" else m.num_kv_heads
        out += [("attention.q_proj.weight", (nh * hd, H), (TP, T), "dense", 1, "all"),
                ("attention.k_proj.weight", (kv * hd, H), (TP, T), "dense", 1, "all"),
                ("attention.v_proj.weight", (kv * hd, H), (TP, T), "dense", 1, "all"),
                ("attention.o_proj.weight", (H, nh * hd), (T, TP), "dense", 1, "all")]
    F = m.dense_ffn_hidden
    out += [("mlp.gate_up_proj.weight", (2 * F, H), (TP, T), "dense", 2, "dense"),
            ("mlp.down_proj.weight", (H, F), (T, TP), "dense", 1, "dense")]
    if e.enabled:
        E, Fe = e.num_experts, e.expert_ffn_hidden
        edim = ("ep", "tp") if extend else ("ep",)
        fdim = () if extend else ("tp",)
        out += [("moe.router.weight", (E, H), (T, T), "dense", 1, "moe")]
        if e.expert_bias:
            out.append(("moe.router.expert_bias", (E,), (T,), "dense", 1, "moe"))
        out += [("moe.experts.w_gate_up", (E, H, 2 * Fe), (edim, T, fdim), "expert", 2, "moe"),
                ("moe.experts.w_down", (E, Fe, H), (edim, fdim, T), "expert", 1, "moe")]
        if e.num_shared_experts:
            Fs = e.num_shared_experts * Fe
            out += [("moe.shared_expert.gate_up_proj.weight", (2 * Fs, H), (TP, T), "dense", 2, "moe"),
                    ("moe.shared_expert.down_proj.weight", (H, Fs), (T, TP), "dense", 1, "moe")]
    return out


def _params(cfg, d, extend):
    m = cfg.model
    H, V = m.hidden_size, m.vocab_size
    T, TP = (), ("tp",)
    ps = [ParamPlan("embedding.weight", TensorSpec("embedding.weight", (V, H), (TP, T)), layers="none", mtp=False)]
    for suffix, shape, dims, mesh, fused, where in _layer_tensors(cfg, d, extend):
        pat = f"layers.{{i}}.{suffix}"
        ps.append(ParamPlan(pat, TensorSpec(pat, shape, dims, mesh, fused), layers=where,
                            mtp=where in ("all", "moe") if cfg.moe.enabled else where in ("all", "dense")))
    ps.append(ParamPlan("final_norm.weight", TensorSpec("final_norm.weight", (H,), (T,)), layers="none", mtp=False))
    if not m.tie_embeddings:
        ps.append(ParamPlan("lm_head.weight", TensorSpec("lm_head.weight", (V, H), (TP, T)), layers="none",
                            mtp=False))
    if m.mtp_depth:
        for n in ("enorm", "hnorm", "final_norm"):
            pat = f"mtp.{{j}}.{n}.weight"
            ps.append(ParamPlan(pat, TensorSpec(pat, (H,), (T,)), layers="none", mtp=False))
        pat = "mtp.{j}.eh_proj.weight"
        ps.append(ParamPlan(pat, TensorSpec(pat, (H, 2 * H), (TP, T)), layers="none", mtp=False))
        for suffix, shape, dims, mesh, fused, where in _layer_tensors(cfg, d, extend):
            if cfg.moe.enabled and where == "dense":
                continue  # the MTP layer is a MoE layer
            if not cfg.moe.enabled and where == "moe":
                continue
            pat = f"mtp.{{j}}.layer.{suffix}"
            ps.append(ParamPlan(pat, TensorSpec(pat, shape, dims, mesh, fused), layers="none", mtp=False))
    return ps


def _ops(cfg, d, extend, T_tok):
    """Logical ops with the specs of their inputs."""
    m, e, t = cfg.model, cfg.moe, cfg.train
    H, V = m.hidden_size, m.vocab_size
    DC, TP, N = ("dp", "cp"), ("tp",), ()
    B = cfg.parallel.micro_batch_size * cfg.parallel.dp
    S = t.seq_length
    L = {}  # pattern suffix -> (shape, dims, mesh, fused, where)
    for suffix, shape, dims, mesh, fused, where in _layer_tensors(cfg, d, extend):
        L[suffix] = (shape, dims, mesh, fused, where)

    def w(suffix):
        shape, dims, mesh, fused, _ = L[suffix]
        return TensorSpec(f"layers.{{i}}.{suffix}", shape, dims, mesh, fused)

    def x(width, dims2=N, name="x"):
        return TensorSpec(name, (T_tok, width), (DC, dims2))

    def where(suffix):
        return L[suffix][4]

    ops = [OpPlan("embedding", "embedding", "Gather", "gather", "vocab",
                  [TensorSpec("embedding.weight", (V, H), (TP, N)), TensorSpec("input_ids", (B, S), (("dp",), ("cp",)))],
                  layers="none", mtp=False, seed=True,
                  comm="vocab-parallel lookup: masked local gather + AllReduce(tp)")]

    def linear(name, suffix, kind, width_in, seed=False):
        shape = L[suffix][0]
        if kind == "column":
            xin, comm = x(width_in), "none (output split over tp)"
        elif kind == "row":
            xin, comm = x(width_in, TP), "AllReduce(tp) of the partial output"
        else:
            xin, comm = x(width_in), "none (replicated weight; gradient AllReduce over the stage)"
        assert shape[1] == width_in, (suffix, shape, width_in)
        return OpPlan(name, f"layers.{{i}}.{suffix.rsplit('.', 1)[0]}", "MatMul", "matmul", kind,
                      [xin, w(suffix)], layers=where(suffix), seed=seed, comm=comm)

    def norm(name, suffix, width):
        return OpPlan(name, f"layers.{{i}}.{suffix.rsplit('.', 1)[0]}", "RmsNorm", "norm", "norm",
                      [x(width), w(suffix)], layers=where(suffix))

    for n in ("input_norm", "post_attn_norm", "pre_mlp_norm", "post_mlp_norm"):
        if f"{n}.weight" in L:
            ops.append(norm(n, f"{n}.weight", H))
    nh = m.num_heads
    if m.attention_type == "mla":
        qk = m.qk_nope_head_dim + m.qk_rope_head_dim
        if m.q_lora_rank > 0:
            ops += [linear("attention.q_a_proj", "attention.q_a_proj.weight", "replicated", H),
                    norm("attention.q_a_norm", "attention.q_a_norm.weight", m.q_lora_rank),
                    linear("attention.q_b_proj", "attention.q_b_proj.weight", "column", m.q_lora_rank)]
        else:
            ops.append(linear("attention.q_proj", "attention.q_proj.weight", "column", H))
        ops += [linear("attention.kv_a_proj", "attention.kv_a_proj.weight", "replicated", H),
                norm("attention.kv_a_norm", "attention.kv_a_norm.weight", m.kv_lora_rank),
                linear("attention.kv_b_proj", "attention.kv_b_proj.weight", "column", m.kv_lora_rank)]
        dq, dv = qk, m.v_head_dim
        nkv = nh
    else:
        hd = m.attn_head_dim
        nkv = m.num_heads if m.attention_type == "mha" else m.num_kv_heads
        ops += [linear("attention.q_proj", "attention.q_proj.weight", "column", H),
                linear("attention.k_proj", "attention.k_proj.weight", "column", H),
                linear("attention.v_proj", "attention.v_proj.weight", "column", H)]
        dq = dv = hd
    bnsd = (("dp",), TP, ("cp",), N)
    ops.append(OpPlan("attention.core", "layers.{i}.attention", "FlashAttentionScore", "flash_attention",
                      "attention",
                      [TensorSpec("q", (B, nh, S, dq), bnsd), TensorSpec("k", (B, nkv, S, dq), bnsd),
                       TensorSpec("v", (B, nkv, S, dv), bnsd)],
                      comm="context parallel: ring exchange of k/v over cp" if cfg.parallel.cp > 1 else "none"))
    ops.append(linear("attention.o_proj", "attention.o_proj.weight", "row", L["attention.o_proj.weight"][0][1]))
    F = m.dense_ffn_hidden
    if m.num_dense_layers > 0 or not e.enabled:
        ops += [linear("mlp.gate_up_proj", "mlp.gate_up_proj.weight", "column", H),
                linear("mlp.down_proj", "mlp.down_proj.weight", "row", F)]
    if e.enabled:
        E, Fe, k = e.num_experts, e.expert_ffn_hidden, e.top_k
        ops.append(linear("moe.router", "moe.router.weight", "replicated", H))
        edim = ("ep", "tp") if extend else ("ep",)
        fdim = N if extend else TP
        cap = T_tok * k // E  # nominal tokens per expert per micro-batch (balanced routing; dropless is dynamic)
        ops += [OpPlan("moe.experts.gate_up", "layers.{i}.moe.experts", "BatchMatMul", "bmm_gate_up", "expert",
                       [TensorSpec("dispatched", (E, cap, H), (edim, ("edp",), N), "expert"),
                        w("moe.experts.w_gate_up")], layers="moe", seed=True,
                       comm="EP all-to-all dispatch before (AlltoAll over the ep group)"),
                OpPlan("moe.experts.down", "layers.{i}.moe.experts", "BatchMatMul", "bmm_down", "expert",
                       [TensorSpec("expert_hidden", (E, cap, Fe), (edim, ("edp",), fdim), "expert"),
                        w("moe.experts.w_down")], layers="moe", seed=True,
                       comm=("EP all-to-all combine after" if extend else
                             "AllReduce(tp) of the partial output, then EP all-to-all combine"))]
        if e.num_shared_experts:
            ops += [linear("moe.shared_expert.gate_up_proj", "moe.shared_expert.gate_up_proj.weight", "column", H),
                    linear("moe.shared_expert.down_proj", "moe.shared_expert.down_proj.weight", "row",
                           e.num_shared_experts * Fe)]
    ops.append(OpPlan("final_norm", "final_norm", "RmsNorm", "norm", "norm",
                      [x(H), TensorSpec("final_norm.weight", (H,), (N,))], layers="none", mtp=False))
    head_w = "embedding.weight" if m.tie_embeddings else "lm_head.weight"
    ops.append(OpPlan("lm_head", "lm_head", "MatMul", "matmul", "vocab",
                      [x(H), TensorSpec(head_w, (V, H), (TP, N))], layers="none", mtp=False, seed=True,
                      comm="none (logits split over the vocabulary)"))
    ops.append(OpPlan("loss.cross_entropy", "loss", "CrossEntropy", "cross_entropy", "loss",
                      [TensorSpec("logits", (T_tok, V), (DC, TP)), TensorSpec("labels", (T_tok,), (DC,))],
                      layers="none", mtp=False, seed=True,
                      comm="vocab-parallel softmax: AllReduce(tp) of max and sum-exp"))
    layer_kinds = ("all", "moe") if e.enabled else ("all", "dense")
    for o in ops:
        if o.layers != "none":
            o.mtp = m.mtp_depth > 0 and o.layers in layer_kinds
    if m.mtp_depth:
        ops.append(OpPlan("mtp.eh_proj", "mtp.{j}.eh_proj", "MatMul", "matmul", "column",
                          [x(2 * H), TensorSpec("mtp.{j}.eh_proj.weight", (H, 2 * H), (TP, N))], layers="none",
                          mtp=False, comm="AllGather(tp) of the output before the MTP layer"))
    return ops


def _opt_group(replicas: int, shard_size: int) -> int:
    if shard_size > 0 and replicas % shard_size == 0:
        return shard_size
    return replicas


def _local_dim0(spec: TensorSpec, axis_sizes) -> int:
    return spec.shape[0] // spec.factors(axis_sizes)[0]


def _apply_opt_shard(params, axis_sizes, stage_size, shard_size, threshold_kb, enabled):
    total = 0
    for p in params:
        f = prod(p.spec.factors(axis_sizes))
        p.replicas = stage_size // f
        local = prod(p.spec.shape) // f
        p.opt_shard, p.opt_note = 1, ""
        if not enabled or p.replicas == 1:
            p.opt_note = "no replicas" if enabled else "optimizer_shard off"
        elif local * 4 < threshold_kb * 1024:
            p.opt_note = f"< {threshold_kb} KB threshold"
        else:
            g = _opt_group(p.replicas, shard_size)
            if _local_dim0(p.spec, axis_sizes) % g:
                p.opt_note = f"dim0 slice {_local_dim0(p.spec, axis_sizes)} not divisible by {g} replicas"
            else:
                p.opt_shard = g
        total += local // p.opt_shard
    return total


def _choose_shard_size(params, axis_sizes, stage_size, threshold_kb, counts):
    """Pick ``optimizer_weight_shard_size`` minimising per-device optimizer state (counts: pattern -> copies)."""
    cands = {-1}
    for p in params:
        r = stage_size // prod(p.spec.factors(axis_sizes))
        cands |= {s for s in range(2, r + 1) if r % s == 0}
    best = None
    for s in sorted(cands):
        ps = copy.deepcopy(params)
        _apply_opt_shard(ps, axis_sizes, stage_size, s, threshold_kb, True)
        per_dev = sum(prod(p.spec.shape) // prod(p.spec.factors(axis_sizes)) // p.opt_shard * counts.get(p.pattern, 1)
                      for p in ps)
        key = (per_dev, s != -1, s)
        if best is None or key < best[0]:
            best = (key, s)
    return best[1]


def _copies_per_stage(cfg, stages: StageAssignment, stage: int) -> dict:
    """Instances of dense / MoE decoder layers on physical ``stage``."""
    m = cfg.model
    items = [it for c in stages.stage_items(stage) for it in c if it.startswith("layers.")]
    n_dense = sum(1 for it in items if int(it.split(".")[1]) < m.num_dense_layers)
    n_moe = len(items) - n_dense
    return {"dense": n_dense, "moe": n_moe, "all": n_dense + n_moe}


def _heaviest_counts(cfg, stages, params, axis_sizes) -> dict:
    """pattern -> copies on the stage with the most decoder-layer parameters per device."""
    best = None
    for s in range(stages.pp):
        per = _copies_per_stage(cfg, stages, s)
        counts = {q.pattern: per.get(q.layers, 0) for q in params if q.layers != "none"}
        n = sum(prod(q.spec.shape) // prod(q.spec.factors(axis_sizes)) * counts[q.pattern] for q in params
                if q.layers != "none")
        if best is None or n > best[0]:
            best = (n, counts)
    return best[1]


def build_plan(cfg, shard_size: int | None = None, threshold_kb: int = 64, scheduler: str = "1f1b",
               strategy_file: str = "") -> ShardPlan:
    """Generate the plan. Raises :class:`ConfigError` for an invalid layout (first problem)."""
    problems = layout_problems(cfg)
    if problems:
        raise ConfigError(problems[0])
    d = ParallelDims.from_config(cfg)
    p, t = cfg.parallel, cfg.train
    extend = p.tp_extend_ep and p.tp > 1
    axis_sizes = {"dp": p.dp, "cp": p.cp, "tp": p.tp, "edp": d.edp, "ep": p.ep}
    T_tok = p.micro_batch_size * p.dp * t.seq_length
    stages = assign_from_config(cfg)
    params = _params(cfg, d, extend)
    ops = _ops(cfg, d, extend, T_tok)
    counts = _heaviest_counts(cfg, stages, params, axis_sizes)
    counts.update({q.pattern: 1 for q in params if q.layers == "none"})
    if shard_size is None:
        shard_size = _choose_shard_size(params, axis_sizes, d.stage_size, threshold_kb, counts) \
            if p.optimizer_shard else -1
    _apply_opt_shard(params, axis_sizes, d.stage_size, shard_size, threshold_kb, p.optimizer_shard)
    n_micro = t.global_batch_size // (p.micro_batch_size * p.dp)
    plan = ShardPlan(dims=d, axis_sizes=axis_sizes, params=params, ops=ops, stages=stages, context={},
                     tokens_per_microbatch=T_tok, num_micro_batches=n_micro,
                     hierarchical=p.hierarchical_alltoall)
    local = sum(prod(q.spec.shape) // prod(q.spec.factors(axis_sizes)) * counts[q.pattern] for q in params
                if q.layers != "none")
    extra = {q.pattern: prod(q.spec.shape) // prod(q.spec.factors(axis_sizes)) for q in params if q.layers == "none"}
    opt = sum(prod(q.spec.shape) // prod(q.spec.factors(axis_sizes)) // q.opt_shard * counts[q.pattern]
              for q in params if q.layers != "none")
    plan.memory = {"heaviest_stage_layer_params_per_device": local,
                   "model_level_params_per_device": extra,
                   "heaviest_stage_layer_optimizer_bytes_per_device": opt * BYTES_PER_OPT_PARAM,
                   "note": "decoder-layer parameters of the stage with the most layers, per device, "
                           "model-level tensors (embedding, heads) listed separately; optimizer bytes = "
                           f"{BYTES_PER_OPT_PARAM} B/param (fp32 param + Adam m, v) after optimizer sharding"}
    plan.context = _context(cfg, d, shard_size, threshold_kb, scheduler, strategy_file, n_micro)
    plan.notes = layout_notes(cfg) + _plan_notes(cfg, plan)
    return plan


def _context(cfg, d, shard_size, threshold_kb, scheduler, strategy_file, n_micro) -> dict:
    p = cfg.parallel
    common = {
        "device_num": d.world,
        "gradients_mean": False,
        "enable_alltoall": True,
        "dataset_strategy": ((p.dp, p.cp), (p.dp, p.cp)),   # input_ids, labels [B, S]
        "pipeline_stages": p.pp,
    }
    if p.pp > 1:
        common["pipeline_config"] = {"pipeline_interleave": p.vpp > 1, "pipeline_scheduler": scheduler}
    if p.optimizer_shard:
        common["enable_parallel_optimizer"] = True
        common["parallel_optimizer_config"] = {"optimizer_level": "level1",
                                               "optimizer_weight_shard_size": shard_size,
                                               "parallel_optimizer_threshold": threshold_kb}
    if strategy_file:
        common["strategy_ckpt_config"] = {"save_file": strategy_file, "only_trainable_params": False}
    semi = dict(common, parallel_mode="semi_auto_parallel")
    auto = dict(common, parallel_mode="auto_parallel", search_mode="sharding_propagation")
    return {
        "semi_auto": semi,
        "auto": auto,
        "pipeline": {"micro_size": n_micro, "vpp": p.vpp, "cell": "mindspore.parallel.nn.Pipeline"},
        "auto_parallel_api": {  # the same settings through mindspore.parallel.auto_parallel.AutoParallel
            "parallel_mode": {"semi_auto": "semi_auto", "auto": "sharding_propagation"},
            "pipeline": {"stages": p.pp, "interleave": p.vpp > 1, "scheduler": scheduler},
            "hsdp": ({"shard_size": shard_size, "threshold": threshold_kb, "optimizer_level": "level1"}
                     if p.optimizer_shard else None),
            "dataset_strategy": ((p.dp, p.cp), (p.dp, p.cp)),
        },
    }


def _plan_notes(cfg, plan) -> list:
    notes = []
    fused_split = [p.pattern for p in plan.params if p.spec.fused_halves > 1 and _fused_dim_split(p.spec, plan)]
    if fused_split:
        notes.append("fused gate/up weights split over tp need per-shard row order on Ascend "
                     "(plan.fused_shard_permutation): " + ", ".join(fused_split))
    unsharded = [p.pattern for p in plan.params if cfg.parallel.optimizer_shard and p.opt_shard == 1
                 and p.opt_note.startswith("dim0")]
    if unsharded:
        notes.append("optimizer state not sharded (dim0 indivisible): " + ", ".join(unsharded))
    return notes


def _fused_dim_split(spec: TensorSpec, plan) -> bool:
    fused_dim = 0 if len(spec.shape) == 2 else 2
    return spec.factors(plan.axis_sizes)[fused_dim] > 1


# ---------------------------------------------------------------------- validation (data checks)
def plan_problems(plan: ShardPlan) -> list[str]:
    """Check the plan as data; one message per problem (empty = valid)."""
    out = []
    sizes = plan.axis_sizes
    world, stage = plan.dims.world, plan.dims.stage_size
    for name, mesh in MESHES.items():
        n = prod(sizes[a] for a in mesh)
        if n != stage:
            out.append(f"mesh {name}: device matrix {tuple(sizes[a] for a in mesh)} has {n} devices, "
                       f"a stage has {stage}")
    specs = [(f"param {p.pattern}", p.spec) for p in plan.params]
    specs += [(f"op {o.name} input {t.name}", t) for o in plan.ops for t in o.inputs]
    for where, s in specs:
        axes = s.axes()
        if len(axes) != len(set(axes)):
            out.append(f"{where}: a mesh axis shards two dimensions ({s.dims})")
        unknown = [a for a in axes if a not in MESHES[s.mesh]]
        if unknown:
            out.append(f"{where}: axes {unknown} are not in the {s.mesh} mesh {MESHES[s.mesh]}")
            continue
        f = s.factors(sizes)
        if prod(f) != prod(sizes[a] for a in axes):
            out.append(f"{where}: strategy {f} product != devices of its axes {axes}")
        if prod(f) > stage or prod(f) > world:
            out.append(f"{where}: strategy {f} uses {prod(f)} devices > stage size {stage}")
        for i, (dim, k) in enumerate(zip(s.shape, f)):
            if dim % k:
                out.append(f"{where}: dim {i} ({dim}) is not divisible by its shard factor {k} ({'*'.join(s.dims[i])})")
            elif s.fused_halves > 1 and k > 1 and i == (0 if len(s.shape) == 2 else 2) and \
                    (dim // s.fused_halves) % k:
                out.append(f"{where}: each of the {s.fused_halves} fused halves of dim {i} "
                           f"({dim // s.fused_halves}) is not divisible by {k}")
    for o in plan.ops:
        out += _op_consistency(o)
    # heads must not be cut: q/kv column splits are per head
    m_heads = [o for o in plan.ops if o.name == "attention.core"]
    for o in m_heads:
        nh = o.inputs[0].shape[1]
        k = o.inputs[0].factors(sizes)[1]
        if nh % k:
            out.append(f"op attention.core: {nh} heads not divisible by tp={k}")
    out += _stage_problems(plan)
    return out


def _op_consistency(o: OpPlan) -> list[str]:
    a, b = o.inputs[0], o.inputs[1] if len(o.inputs) > 1 else None
    if o.prim == "MatMul":  # x [T, K] @ W[N, K]^T
        if a.dims[1] != b.dims[1]:
            return [f"op {o.name}: contracted dim split differently in x {a.dims[1]} and weight {b.dims[1]}"]
        if a.shape[1] != b.shape[1]:
            return [f"op {o.name}: x width {a.shape[1]} != weight in-dim {b.shape[1]}"]
    if o.prim == "BatchMatMul":  # x [E, C, K] @ W[E, K, N]
        if a.dims[0] != b.dims[0] or a.dims[2] != b.dims[1]:
            return [f"op {o.name}: batch/contracted dims split differently ({a.dims} vs {b.dims})"]
        if a.shape[0] != b.shape[0] or a.shape[2] != b.shape[1]:
            return [f"op {o.name}: shapes {a.shape} and {b.shape} do not chain"]
    return []


def _stage_problems(plan: ShardPlan) -> list[str]:
    st = plan.stages
    out = []
    items = [it for c in st.chunks for it in c]
    layers = [int(i.split(".")[1]) for i in items if i.startswith("layers.")]
    if layers != sorted(layers) or len(set(layers)) != len(layers):
        out.append("stages: decoder layers are not assigned exactly once in order")
    mtp = [i for i in items if i.startswith("mtp.")]
    if any(st.stage_of[i] != st.pp - 1 for i in mtp):
        out.append("stages: an MTP module is not on the last pipeline stage")
    if any(not c for c in st.chunks):
        out.append("stages: an empty virtual stage")
    return out


def validate_plan(plan: ShardPlan) -> ShardPlan:
    probs = plan_problems(plan)
    if probs:
        raise ConfigError(f"shard plan: {probs[0]}")
    return plan


# ---------------------------------------------------------------------- slices and checkpoint helpers
def local_slice(plan: ShardPlan, spec: TensorSpec, rank: int) -> tuple:
    """The index range ``(start, stop)`` per tensor dim held by global ``rank`` under ``spec``.

    Uses MindSpore's Layout semantics only: the stage's device matrix is row-major over the local rank (last
    axis fastest) and a dim sharded by several axes is split major-first.
    """
    names = MESHES[spec.mesh]
    sizes = [plan.axis_sizes[a] for a in names]
    local = rank % plan.dims.stage_size
    coord = {}
    for a, n in zip(reversed(names), reversed(sizes)):
        coord[a] = local % n
        local //= n
    out = []
    for dim, axes in zip(spec.shape, spec.dims):
        idx, k = 0, 1
        for a in axes:
            idx = idx * plan.axis_sizes[a] + coord[a]
            k *= plan.axis_sizes[a]
        step = dim // k
        out.append((idx * step, (idx + 1) * step))
    return tuple(out)


def fused_shard_permutation(total: int, shards: int, halves: int = 2) -> list[int]:
    """Row order that makes a fused ``[gate; up]`` dim TP-splittable: new row i comes from old row perm[i].

    After permuting, the contiguous slice k of size total/shards is ``[gate_k; up_k]``.
    """
    if total % (halves * shards):
        raise ValueError(f"{total} rows cannot be split into {halves} halves x {shards} shards")
    h = total // halves
    blk = h // shards
    return [half * h + k * blk + r for k in range(shards) for half in range(halves) for r in range(blk)]


def summarize(plan: ShardPlan) -> str:
    """Human-readable plan (used by tools/show_plan.py)."""
    d = plan.dims
    s = plan.axis_sizes
    lines = ["== layout =="]
    lines.append(f"world {d.world} = dp {d.dp} x tp {d.tp} x pp {d.pp} x cp {d.cp}; vpp {d.vpp}; stage size "
                 f"{d.stage_size}; ranks/node {d.ranks_per_node} ({d.num_nodes} nodes)")
    lines.append(f"experts: ep {d.ep}, tp_extend_ep {d.tp_extend_ep} -> EP width {d.ep_width}, expert-TP {d.etp}, "
                 f"expert-DP {d.edp}, {d.experts_per_rank} experts/rank")
    lines.append(f"micro-batch: {plan.tokens_per_microbatch} tokens per stage-global micro-batch, "
                 f"{plan.num_micro_batches} micro-batches per step")
    lines.append("== groups (rank 0's; count x size) ==")
    for kind in ("dp", "tp", "pp", "cp", "dp_cp", "ep", "expert_dp", "expert_tp", "embedding"):
        gs = d.groups(kind)
        g0 = next(g for g in gs if 0 in g) if any(0 in g for g in gs) else gs[0]
        lines.append(f"  {kind:<10} {len(gs)} x {len(gs[0])}  rank 0: {_short(g0)}")
    if d.ep_width > 1 and plan.hierarchical:
        try:
            inner, outer = d.hierarchical_of(0)
            lines.append(f"  hier-a2a   inner {_short(inner)}  outer {_short(outer)}")
        except ConfigError as err:
            lines.append(f"  hier-a2a   {err}")
    mem = plan.memory
    if mem:
        lines.append(f"memory (heaviest stage, per device): {mem['heaviest_stage_layer_params_per_device'] / 1e9:.3f}"
                     f" B layer params, optimizer state "
                     f"{mem['heaviest_stage_layer_optimizer_bytes_per_device'] / 2**30:.2f} GiB (without embedding/heads)")
    lines.append(f"== pipeline stages (pp {d.pp} x vpp {d.vpp}) ==")
    lines.append(plan.stages.table())
    lines.append("== op strategies (in_strategy per input; mesh dense=(dp,cp,tp) "
                 f"{tuple(s[a] for a in MESHES['dense'])}, expert=(edp,ep,tp) "
                 f"{tuple(s[a] for a in MESHES['expert'])}) ==")
    for o in plan.ops:
        seed = " [seed]" if o.seed else ""
        lines.append(f"  {o.name:<32} {o.prim:<19} {o.kind:<10} {plan.strategy(o)}{seed}")
    lines.append("== parameters (strategy | replicas | optimizer shard) ==")
    for p in plan.params:
        lines.append(f"  {p.pattern:<48} {str(p.spec.factors(s)):<12} x{p.replicas:<5} opt/{p.opt_shard}"
                     + (f"  ({p.opt_note})" if p.opt_note and p.opt_shard == 1 and 'off' not in p.opt_note else ""))
    lines.append("== set_auto_parallel_context ==")
    for mode in ("semi_auto", "auto"):
        lines.append(f"  {mode}: {plan.context[mode]}")
    lines.append(f"  pipeline: {plan.context['pipeline']}")
    if plan.notes:
        lines.append("== notes ==")
        lines += [f"  - {n}" for n in plan.notes]
    return "\n".join(lines)


def _short(ranks) -> str:
    ranks = list(ranks)
    return str(ranks) if len(ranks) <= 8 else f"[{ranks[0]}, {ranks[1]}, ..., {ranks[-1]}] ({len(ranks)})"


__all__ = ["MESHES", "TensorSpec", "OpPlan", "ParamPlan", "ShardPlan", "build_plan", "plan_problems",
           "validate_plan", "local_slice", "fused_shard_permutation", "summarize"]
