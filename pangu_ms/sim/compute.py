"""Per-operator compute of one micro-batch on one device: FLOPs, bytes and roofline time.

FLOPs come from the project's one counter (``pangu_ms/model/stats.py``): every operator's *model* FLOPs are
built from ``attention_params``, ``attention_norm_params``, ``attention_core_flops_per_token``,
``swiglu_params`` and ``moe_params``, so that summing the operators of every block of the model gives exactly
``compute_stats(cfg).train_flops_per_token`` (tests/sim checks it). Model FLOPs are what MFU counts.

*Hardware* FLOPs are what a device actually executes and can differ from the model FLOPs:
* MLA down-projections (``q_a``, ``kv_a``) have unsharded (duplicated) weights but, with sequence parallelism,
  each TP rank applies them to its own ``tok / tp`` sequence shard only (MindSpeed-LLM ``LinearNoTP`` on the SP
  input, Megatron-Core ``linear_q_down_proj`` / ``linear_kv_down_proj``): no FLOPs are repeated; the SP
  all-gather then moves the latents instead of the hidden states (comm.py ``CommModel.attn_gather_width``);
* the causal attention kernel skips masked blocks (half the full-square FLOPs) when
  ``sim.attention_causal_skip``; its backward does 2.5x the forward work (FlashAttention recomputes QK^T);
* routed-expert work on the busiest device is ``sim.expert_imbalance`` times the mean.

Precision per GEMM (``sim.precision: fp8``, the DeepSeek-V3 / Transformer Engine recipe): the linear layers of
attention, dense FFN, experts and the MTP projection run at the FP8 peak times the profile's
``fp8_gemm_efficiency_scale`` (FP8 GEMMs reach a lower fraction of their peak than BF16 ones) and pay the
quantisation passes of Transformer Engine's FP8 linear (transformer_engine/pytorch/module/linear.py,
layernorm_linear.py, base.py ``grad_output_preprocess``): the forward casts the input activation with a fused
cast-transpose (read BF16, write the FP8 copy for the forward / dgrad GEMM and the FP8 transpose the Hopper wgrad
GEMM needs: 4 bytes per element), the backward does the same to the output gradient (4 bytes per element of the
GEMM's output), and the weight is cast (and transposed) once per optimizer step, not per micro-batch: TE caches
the FP8 weight between the micro-batches of one step (``is_first_microbatch``, TE docs "FP8 weight caching"), so
its 4 bytes per element are spread over the step's micro-batches. The quantisation passes are memory-bound
element-wise traffic, not scaled by the GEMM's backward factor; the
attention core, the router and the LM head stay BF16 (DeepSeek-V3 sec. 3.3.1: embedding, output head, gating,
normalisation and attention operators keep their original precision).

Roofline per operator (forward; backward = 2x for GEMMs and element-wise, 2.5x for attention)::

    gemm         t = max(F_hw / (peak_dtype * eff_gemm(F_call)), bytes / hbm_bw) + calls * op_overhead
    attention    t = max(F_hw / (peak_bf16 * attention_efficiency), bytes / hbm_bw) + op_overhead
    elementwise  t = bytes * traffic_factor / (hbm_bw * elementwise_efficiency) + op_overhead

Per-kernel cost: ``calls`` is the number of kernel launches of an operator group (fused NPU/GPU kernels by
default); with ``sim.moe_impl: training_cpu`` it is the forward kernel count of the project's reference
implementation (kernels.py), and the backward pays kernels.bwd_kernels_per_fwd (1.4 for the ``cpu`` backend, 1.30 for ``cpu_fused``,
measured) per forward kernel.

Conventions: ``tok`` = micro_batch_size * seq / cp tokens per micro-batch; with TP > 1 sequence parallelism is
on, so token-wise (norm, residual, router) work is split over the TP ranks and TP-sharded GEMMs see all ``tok``
rows. Activations are 2 bytes (bf16 / fp8 runs) or 4 bytes (fp32).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..config.schema import Config
from ..model.stats import (attention_core_flops_per_token, attention_norm_params, attention_params, moe_params,
                           swiglu_params)
from .hardware import HardwareProfile
from .kernels import bwd_kernels_per_fwd, reference_elementwise, reference_forward_kernels
from ..parallel.dims import ParallelDims

GEMM, ATTN, ELEM = "gemm", "attn", "elementwise"
# bytes per element of one FP8 cast-transpose pass: read 2 (bf16) + write 1 (fp8) + write 1 (fp8 transpose)
QUANT_BYTES = 4.0
# recompute tags: which granularity re-runs an op in the backward pass
R_ELEM, R_EXPERT_FC1, R_NONE = "elementwise", "expert_fc1", "none"


# forward operators each recompute module re-runs (``pangu_ms/config/recompute.py``), for module lists that are
# not a preset; the presets keep their tags above. The element-wise groups are upper bounds (a norm group also
# holds the residual add / RoPE it is fused with).
MODULE_OPS = {
    "norm": ("attn.norm_rope_residual", "moe.norm_residual", "ffn.act_norm_residual"),
    "mla_up_proj": ("attn.up_proj",),
    "core_attn": ("attn.core",),
    "moe_act": ("moe.experts.act", "moe.shared.act"),
    "mlp_act": ("ffn.act_norm_residual",),
    "experts": ("moe.experts.fc1", "moe.experts.fc2", "moe.experts.act"),
    "shared_expert": ("moe.shared", "moe.shared.act"),
    "mlp": ("ffn.swiglu", "ffn.act_norm_residual"),
}


def module_recompute_time(cost, modules) -> float:
    """Forward time of ``cost``'s operators that the recompute ``modules`` re-run (each operator once)."""
    names = {n for m in modules for n in MODULE_OPS.get(m, ())}
    return sum(t for op, t in cost.ops if op.name in names)


@dataclass
class Op:
    """One forward operator of one micro-batch on one device."""

    name: str
    kind: str                 # gemm | attn | elementwise
    model_flops: float        # counted by MFU (forward)
    hw_flops: float           # executed (forward)
    bytes: float              # HBM traffic (forward)
    call_flops: float = 0.0   # FLOPs of one GEMM call (efficiency lookup)
    calls: int = 1
    imbalance: bool = False   # scales with sim.expert_imbalance
    recompute: str = R_ELEM
    gemm_dtype: str = "bf16"  # which peak a GEMM runs at
    quant_elems: float = 0.0  # FP8 GEMMs: input-activation elements cast per forward (all calls)
    quant_grad_elems: float = 0.0   # FP8 GEMMs: output-gradient elements cast per backward (all calls)
    quant_weight_elems: float = 0.0  # FP8 GEMMs: weight elements, cast once per optimizer step
    quant_fwd: float = 0.0    # seconds of the forward quantisation (set by ComputeModel.time)
    quant_bwd: float = 0.0    # seconds of the backward quantisation (set by ComputeModel.time)
    launch: float = 0.0       # per-kernel cost part of the forward time (set by ComputeModel.time)
    bwd_launch: float = 2.0   # backward kernels per forward kernel


@dataclass
class BlockCost:
    """Compute of one block (layer / embedding / head / MTP) for one micro-batch on one device."""

    name: str
    ops: list = field(default_factory=list)
    fwd: float = 0.0                  # seconds
    bwd: float = 0.0
    recompute_selective: float = 0.0  # forward time re-run by 'selective'
    recompute_expert: float = 0.0     # extra forward time re-run by 'moe_fine'
    gemm_time_attn: float = 0.0       # forward GEMM time of the attention block (hides TP collectives)
    gemm_time_mlp: float = 0.0        # forward GEMM time of the FFN / MoE block
    model_flops: float = 0.0          # forward model FLOPs on this device
    # expert groups of a MoE layer (the EP overlap model, overlap.py): routed + shared experts, shared alone,
    # and the routed experts' weight-gradient GEMMs (half of their backward GEMM work)
    expert_fwd: float = 0.0
    expert_bwd: float = 0.0
    shared_fwd: float = 0.0
    shared_bwd: float = 0.0
    routed_wgrad: float = 0.0

    def add(self, op: Op, t: float, part: str) -> None:
        self.ops.append((op, t))
        bwd_factor = 2.5 if op.kind == ATTN else 2.0
        self.fwd += t
        # work scales like the FLOPs / bytes; kernel launches by the backward's kernels per forward kernel; FP8
        # quantisation passes are their own (element-wise) terms
        bwd = bwd_factor * (t - op.launch - op.quant_fwd) + op.quant_bwd + op.bwd_launch * op.launch
        self.bwd += bwd
        if op.name.startswith(("moe.experts", "moe.shared")):
            self.expert_fwd += t
            self.expert_bwd += bwd
            if op.name.startswith("moe.shared"):
                self.shared_fwd += t
                self.shared_bwd += bwd
            elif op.kind == GEMM:
                self.routed_wgrad += 0.5 * bwd
        self.model_flops += op.model_flops
        if op.recompute == R_ELEM:
            self.recompute_selective += t
        elif op.recompute == R_EXPERT_FC1:
            self.recompute_expert += t
        if op.kind == GEMM and part == "attn":
            self.gemm_time_attn += t
        elif op.kind == GEMM:
            self.gemm_time_mlp += t


class ComputeModel:
    """Roofline timing of operators for one (config, layout, hardware)."""

    def __init__(self, cfg: Config, layout: ParallelDims, hw: HardwareProfile):
        self.cfg, self.L, self.hw = cfg, layout, hw
        s = cfg.sim
        self.act_bytes = 4.0 if s.precision == "fp32" else 2.0
        self.linear_dtype = {"bf16": "bf16", "fp8": "fp8", "fp32": "fp32"}[s.precision]
        self.attn_dtype = "fp32" if s.precision == "fp32" else "bf16"
        self.traffic = 1.0 if s.fused_kernels else s.unfused_traffic_factor
        self.imb = s.expert_imbalance
        self.causal = 0.5 if s.attention_causal_skip else 1.0
        self._peak = {d: hw.peak(d) for d in {self.linear_dtype, self.attn_dtype}}
        # reference CPU implementation: per-operator forward kernel counts from the model structure (kernels.py)
        self.ref_calls = reference_forward_kernels(cfg) if s.moe_impl == "training_cpu" else None
        self.ref_elem = (reference_elementwise(cfg, layout.tokens_per_micro, layout.tokens_per_micro / layout.seq_length,
                                               layout.seq_length) if s.moe_impl == "training_cpu" else None)
        if self.linear_dtype == "fp8":
            self._peak["bf16"] = hw.peak("bf16")

    # ----------------------------------------------------------------- timing
    def time(self, op: Op) -> float:
        hw = self.hw
        flops = op.hw_flops * (self.imb if op.imbalance else 1.0)
        byts = op.bytes * (self.imb if op.imbalance else 1.0)
        if op.kind == GEMM:
            eff = hw.gemm_efficiency(op.call_flops or flops)
            if op.gemm_dtype == "fp8":
                eff *= hw.fp8_gemm_efficiency_scale
            t = max(flops / (self._peak[op.gemm_dtype] * eff), byts / hw.hbm_bandwidth)
            op.quant_fwd = op.quant_bwd = 0.0
            if op.gemm_dtype == "fp8":
                # quantisation (module docstring): fused cast-transpose = read bf16 + write fp8 + write the fp8
                # transpose (the per-tensor / per-block scales are negligible): the input activation in the
                # forward, the output gradient in the backward, the weight once per optimizer step
                scale = self.imb if op.imbalance else 1.0
                bw = QUANT_BYTES / (hw.hbm_bandwidth * hw.elementwise_efficiency)
                op.quant_fwd = bw * (scale * op.quant_elems + op.quant_weight_elems / self.L.micro_batches)
                op.quant_bwd = bw * scale * op.quant_grad_elems
                t += op.quant_fwd
        elif op.kind == ATTN:
            t = max(flops / (self._peak[self.attn_dtype] * hw.attention_efficiency), byts / hw.hbm_bandwidth)
        else:
            t = byts * self.traffic / (hw.hbm_bandwidth * hw.elementwise_efficiency)
        if self.ref_elem is not None and op.name in self.ref_elem:
            # reference (CPU) implementation: its own element-wise kernels, counted by class (kernels.py);
            # same-shape kernels read 2 and write 1 tensor, broadcast / reducing ones read 1 and write 1
            plain, slow = self.ref_elem[op.name]
            scale = self.imb if op.imbalance else 1.0
            t_elem = self.act_bytes * scale * (3.0 * plain / (hw.hbm_bandwidth * hw.elementwise_efficiency)
                                               + 2.0 * slow / (hw.hbm_bandwidth * hw.broadcast_efficiency))
            t = t + t_elem if op.kind == ATTN else t_elem
        if self.ref_calls is not None:
            calls = self.ref_calls.get(op.name, op.calls)
            op.bwd_launch = bwd_kernels_per_fwd(self.cfg)
        else:
            calls = op.calls
        op.launch = calls * hw.op_overhead
        return t + op.launch

    def _gemm(self, name, model_flops, hw_flops, weight_elems, rows, in_dim, out_dim, calls=1, imbalance=False,
              recompute=R_NONE, dtype=None, quant_in=None, quant_grad=None) -> Op:
        """``quant_in`` / ``quant_grad``: input-activation / output-gradient elements an FP8 run casts (default
        ``rows * in_dim`` / ``rows * out_dim``; given where the calls' widths differ or share one input)."""
        b = self.act_bytes * (weight_elems + rows * (in_dim + out_dim))
        op = Op(name, GEMM, model_flops, hw_flops, b, hw_flops / calls, calls, imbalance, recompute,
                dtype or self.linear_dtype)
        op.quant_elems = rows * in_dim if quant_in is None else quant_in
        op.quant_grad_elems = rows * out_dim if quant_grad is None else quant_grad
        op.quant_weight_elems = weight_elems
        return op

    def _elem(self, name, elems, imbalance=False, recompute=R_ELEM, calls=1) -> Op:
        return Op(name, ELEM, 0.0, 0.0, self.act_bytes * elems, 0.0, calls, imbalance, recompute)

    # ----------------------------------------------------------------- blocks
    def attention(self, blk: BlockCost) -> None:
        cfg, m, t = self.cfg, self.cfg.model, self.L.tp
        tok, h = self.L.tokens_per_micro, m.hidden_size
        mm = attention_params(cfg) - attention_norm_params(cfg)
        if m.attention_type == "mla":
            qk = m.qk_nope_head_dim + m.qk_rope_head_dim
            # down-projections q_a (absent when q_lora_rank = 0: q is then a TP-sharded matmul) and kv_a: full
            # (duplicated) weights applied to this rank's tok/t sequence-parallel shard (module docstring)
            down = (h * m.q_lora_rank if m.q_lora_rank > 0 else 0) + h * (m.kv_lora_rank + m.qk_rope_head_dim)
            o_proj = m.num_heads * m.v_head_dim * h
            up = mm - down - o_proj                                     # q_b (or q) and kv_b
            op = self._gemm("attn.down_proj", 2.0 * tok * down / t, 2.0 * tok * down / t, down, tok / t, h,
                            down / h, calls=2)
            blk.add(op, self.time(op), "attn")
            # up-projections: re-run by 'selective' for MLA (DeepSeek-V3 recomputes MLA up-projections)
            op = self._gemm("attn.up_proj", 2.0 * tok * up / t, 2.0 * tok * up / t, up / t, tok,
                            (m.q_lora_rank + m.kv_lora_rank) / 2, m.num_heads * (qk + qk + m.v_head_dim) / t / 2,
                            calls=2, recompute=R_ELEM)
            blk.add(op, self.time(op), "attn")
            op = self._gemm("attn.o_proj", 2.0 * tok * o_proj / t, 2.0 * tok * o_proj / t, o_proj / t, tok,
                            m.num_heads * m.v_head_dim / t, h)
            blk.add(op, self.time(op), "attn")
            heads_qk = m.num_heads / t * qk
            lat = 2 * (m.q_lora_rank + m.kv_lora_rank) / t             # latent norms, on the SP shard
            rope = 2 * 2 * m.num_heads / t * m.qk_rope_head_dim        # rotate q and k (read + write)
            qkv_out = m.num_heads / t * (2 * qk + m.v_head_dim)
        else:
            hd = m.attn_head_dim
            kvh = m.num_heads if m.attention_type == "mha" else m.num_kv_heads
            qkv_w = (m.num_heads / t + 2 * max(kvh / t, 1.0)) * hd      # per-rank QKV output width
            op = self._gemm("attn.qkv_o_proj", 2.0 * tok * mm / t, 2.0 * tok * mm / t, mm / t, tok,
                            h / 2 + m.num_heads * hd / t / 2, (m.num_heads + 2 * kvh) * hd / t / 2 + h / 2,
                            calls=2, quant_in=tok * (h + m.num_heads * hd / t), quant_grad=tok * (qkv_w + h))
            blk.add(op, self.time(op), "attn")
            heads_qk = m.num_heads / t * hd
            lat = 0
            rope = 2 * 2 * (m.num_heads + kvh) / t * hd / 2
            qkv_out = (m.num_heads + 2 * max(kvh / t, 1.0)) * hd
        core = tok * attention_core_flops_per_token(cfg, self.L.seq_length) / t
        qkv_bytes = self.act_bytes * tok * (qkv_out + heads_qk)        # read q, k, v; write o
        op = Op("attn.core", ATTN, core, core * self.causal, qkv_bytes, recompute=R_NONE)
        blk.add(op, self.time(op), "attn")
        norms = (2 if m.sandwich_norm else 1) * 2 * h / t              # pre (+ post) norm: read + write
        op = self._elem("attn.norm_rope_residual", tok * (norms + lat + rope + 3 * h / t),
                        calls=3 + (2 if lat else 0))
        blk.add(op, self.time(op), "attn")

    def dense_ffn(self, blk: BlockCost, ffn: int) -> None:
        m, t, tok = self.cfg.model, self.L.tp, self.L.tokens_per_micro
        h = m.hidden_size
        w = swiglu_params(h, ffn)
        # FP8 casts: the fc1 (gate + up) input once, the fc2 input; the fc1 and fc2 output gradients
        op = self._gemm("ffn.swiglu", 2.0 * tok * w / t, 2.0 * tok * w / t, w / t, tok, (h + 2 * ffn / t) / 3,
                        (2 * ffn / t + h) / 3, calls=3, quant_in=tok * (h + ffn / t), quant_grad=tok * (2 * ffn / t + h))
        blk.add(op, self.time(op), "mlp")
        norms = (2 if m.sandwich_norm else 1) * 2 * h / t
        op = self._elem("ffn.act_norm_residual", tok * (3 * ffn / t + norms + 3 * h / t), calls=4)
        blk.add(op, self.time(op), "mlp")

    def moe(self, blk: BlockCost) -> None:
        cfg, m, e, L = self.cfg, self.cfg.model, self.cfg.moe, self.L
        t, tok, h, f, k = L.tp, L.tokens_per_micro, m.hidden_size, e.expert_ffn_hidden, e.top_k
        p = moe_params(cfg)
        # router on this rank's tok/t tokens (sequence parallel)
        op = self._gemm("moe.router", 2.0 * tok * p["router"] / t, 2.0 * tok * p["router"] / t, p["router"],
                        tok / t, h, e.num_experts, recompute=R_NONE, dtype=self.attn_dtype)
        blk.add(op, self.time(op), "mlp")
        op = self._elem("moe.router_topk", tok / t * 3 * e.num_experts * 2, recompute=R_NONE, calls=3)
        blk.add(op, self.time(op), "mlp")
        # routed experts: every device holds E_loc = E / W experts (a 1/etp slice of each) and, on average,
        # rows = tok*k*etp/t routed token copies at width f/etp (ParallelDims.routed_rows)
        e_loc = e.num_experts / L.ep_width
        rows_per_tok, n_w = L.routed_rows(k, f)
        rows = tok * rows_per_tok
        routed = 2.0 * tok * p["routed_active"] / t                     # = 2 * rows * 3 h n_w
        hw_scale = 1.0
        per_call = 2.0 * (rows / e_loc) * h * n_w                        # one expert's GEMM (grouped matmul)
        merged = self.cfg.sim.moe_impl == "training_cpu" and e.resolved_dropless_impl() == "masked_dense"
        if merged:
            # moe/experts.py all_experts: every expert on every token in one [T, h] x [h, (E + n_shared) 2F]
            # matmul and one [T, (E + n_shared) F] x [., h] matmul (shared experts folded in as gate-1 experts)
            hw_scale = e.num_experts / k
            rows = rows * hw_scale
            per_call = 2.0 * tok * h * f * (e.num_experts + e.num_shared_experts)
        fc1 = self._gemm("moe.experts.fc1", routed * 2 / 3, hw_scale * routed * 2 / 3, e_loc * 2 * h * n_w, rows, h,
                         2 * n_w, calls=int(2 * e_loc), imbalance=True, recompute=R_EXPERT_FC1)
        fc1.call_flops = 2 * per_call
        blk.add(fc1, self.time(fc1), "mlp")
        fc2 = self._gemm("moe.experts.fc2", routed / 3, hw_scale * routed / 3, e_loc * h * n_w, rows, n_w, h,
                         calls=int(e_loc), imbalance=True)
        fc2.call_flops = per_call
        blk.add(fc2, self.time(fc2), "mlp")
        op = self._elem("moe.experts.act", rows * 3 * n_w, imbalance=True)
        blk.add(op, self.time(op), "mlp")
        op = self._elem("moe.permute_unpermute", tok / t * k * h * 4, recompute=R_NONE, calls=4)
        blk.add(op, self.time(op), "mlp")
        if e.num_shared_experts:
            fs = e.num_shared_experts * f
            w = p["shared_experts"]
            op = self._gemm("moe.shared", 2.0 * tok * w / t, 2.0 * tok * w / t, w / t, tok, (h + 2 * fs / t) / 3,
                            (2 * fs / t + h) / 3, calls=3, quant_in=tok * (h + fs / t),
                            quant_grad=tok * (2 * fs / t + h))
            if merged:                     # runs inside the expert matmuls above: same per-call efficiency
                op.call_flops = 2 * per_call
            blk.add(op, self.time(op), "mlp")
            op = self._elem("moe.shared.act", tok * 3 * fs / t)
            blk.add(op, self.time(op), "mlp")
        norms = (2 if m.sandwich_norm else 1) * 2 * h / t
        op = self._elem("moe.norm_residual", tok * (norms + 3 * h / t), calls=3)
        blk.add(op, self.time(op), "mlp")

    def layer(self, moe_layer: bool) -> BlockCost:
        blk = BlockCost("moe_layer" if moe_layer else "dense_layer")
        self.attention(blk)
        if moe_layer:
            self.moe(blk)
        else:
            self.dense_ffn(blk, self.cfg.model.dense_ffn_hidden)
        return blk

    def embedding(self) -> BlockCost:
        blk = BlockCost("embedding")
        op = self._elem("embed.lookup", self.L.tokens_per_micro * 2 * self.cfg.model.hidden_size / self.L.tp,
                        recompute=R_NONE)
        blk.add(op, self.time(op), "mlp")
        return blk

    def head(self, name: str = "head") -> BlockCost:
        """Final RMSNorm + vocab-parallel LM head + fp32 softmax cross-entropy."""
        m, t, tok = self.cfg.model, self.L.tp, self.L.tokens_per_micro
        h, v = m.hidden_size, m.vocab_size
        blk = BlockCost(name)
        op = self._gemm(f"{name}.lm_head", 2.0 * tok * v * h / t, 2.0 * tok * v * h / t, v * h / t, tok, h,
                        v / t, dtype=self.attn_dtype)           # output head stays BF16 in FP8 recipes
        blk.add(op, self.time(op), "mlp")
        op = self._elem(f"{name}.norm_xent", tok * (2 * h / t + 3 * 2 * v / t), recompute=R_NONE, calls=4)
        blk.add(op, self.time(op), "mlp")
        return blk

    def mtp_extra(self) -> BlockCost:
        """MTP module minus its decoder layer and head: enorm, hnorm, eh_proj (2h -> h)."""
        m, t, tok = self.cfg.model, self.L.tp, self.L.tokens_per_micro
        h = m.hidden_size
        blk = BlockCost("mtp_proj")
        op = self._gemm("mtp.eh_proj", 2.0 * tok * 2 * h * h / t, 2.0 * tok * 2 * h * h / t, 2 * h * h / t, tok,
                        2 * h, h / t)
        blk.add(op, self.time(op), "mlp")
        op = self._elem("mtp.norms", tok * 2 * 2 * h / t, calls=2)
        blk.add(op, self.time(op), "mlp")
        return blk


def model_flops_per_token(cfg: Config, layout: ParallelDims, hw: HardwareProfile, with_mtp: bool = True) -> float:
    """Training model FLOPs per token (3 x forward) summed over the simulator's operators.

    Equals ``compute_stats(cfg, seq).train_flops_per_token`` (or the ``_without_mtp`` variant).
    """
    cm = ComputeModel(cfg, layout, hw)
    m = cfg.model
    n_moe = (m.num_layers - m.num_dense_layers) if cfg.moe.enabled else 0
    n_dense = m.num_layers - n_moe
    fwd = (n_dense * cm.layer(False).model_flops + n_moe * (cm.layer(True).model_flops if n_moe else 0.0)
           + cm.embedding().model_flops + cm.head().model_flops)
    if with_mtp and m.mtp_depth:
        mtp_layer = cm.layer(cfg.moe.enabled)
        fwd += m.mtp_depth * (cm.mtp_extra().model_flops + mtp_layer.model_flops + cm.head("mtp_head").model_flops)
    return 3.0 * fwd * layout.tp / layout.tokens_per_micro
