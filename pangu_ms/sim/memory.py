"""Per-device memory: parameters, gradients, optimizer states, activations by module, transient buffers.

Model states (bytes per parameter held by the device; mixed precision as Megatron / MindSpeed):

    bf16 / fp8 runs: weight 2 (bf16)  + gradient 4 (fp32 main grad)  + optimizer 12 (fp32 master, Adam m, v)
    fp32 runs:       weight 4         + gradient 4                    + optimizer 8  (Adam m, v)

* dense (non-expert) parameters of a stage are divided by tp; expert parameters by ep_width * etp (experts over
  the EP group, each expert's FFN dim over the expert-TP group; with the derived etp both give tp*ep);
* ``optimizer_shard`` (ZeRO-1 / distributed optimizer) divides the optimizer bytes by the DP group of the
  parameter (dp*cp for dense, the expert-DP group for experts); gradients stay whole (fp32 grad buffer);
* ``swap_optimizer`` keeps the optimizer bytes in host memory (0 on device);
* DualPipe: a device holds two different stages (i and p-1-i, schedule.dualpipe_pair); the caller passes the
  parameters of both (estimate.py), so every stage's parameters live on two devices ("2x", DeepSeek-V3 Table 2)
  and, as two separate model copies, each keeps its own ZeRO-1 optimizer shard over DP.
Small replicated tensors (RMSNorm gains, MLA latent norms) are counted as if sharded (< 0.1 %).

Activations stored per token of a micro-batch on one device, in elements (x 2 bytes for bf16 runs); h hidden,
t = tp (sequence parallel: token-wise tensors are split over TP), H heads, f / f_s / n_w FFN widths; in brackets
the recompute module (``pangu_ms/config/recompute.py``; the presets are module sets) that drops the term::

    attention  norm input h/t, norm output h/t [norm], q,k of the attention (MLA: H/t*2*qk) and v H/t*v
               [mla_up_proj for MLA], output o H/t*v, MLA latents q_lora + kv_lora + rope and their norm
               outputs q_lora + kv_lora [mla_up_proj], post-norm input h/t (sandwich norm);
               fused attention: softmax LSE 2*H/t; reference path (``sim.moe_impl: training_cpu``, explicit
               attention): the softmax probabilities H/t*S_k [core_attn] (S_k = S; query-chunked: (S+chunk)/2,
               and none where the chunked MLA core takes the blockwise backward: ``blockwise_core``)
    dense FFN  norm in h/t, norm out h/t [norm], gate f/t, up f/t [mlp], act f/t [mlp_act, mlp], post-norm in h/t
    MoE        norm in h/t, norm out h/t [norm], router probabilities 2*E/t (fp32),
               per routed row (k*T*etp/t rows at width n_w = f/etp: ParallelDims.routed_rows), times the
               expert imbalance: dispatched input h, fc1 output 2*n_w [experts], act n_w [moe_act, experts],
               expert output h (only when the routing weight multiplies the expert *output*: with
               ``sim.moe_probs_before_fc2`` it scales the SwiGLU output before fc2, as pangu_ms/moe/experts.py
               does, and the gate gradient <d a, swiglu(fc1 x)> needs no stored output),
               shared expert gate/up 2*f_s/t [shared_expert], act f_s/t [moe_act, shared_expert],
               post-norm in h/t;
               reference path, masked-dense dispatcher: every token through all E + n_shared experts, per
               (token, expert) the gate / up halves 2f [experts], silu(gate), SwiGLU output, the expanded
               routing gates and gated output 4f [moe_act, experts]; the dense FFN's unfused SwiGLU keeps
               silu(gate) too (act 2f/t); every RMSNorm keeps the expanded inverse RMS, the normalised input
               and the expanded weight (3 x its width: ``norm_kept_elems``) [norm; latent norms mla_up_proj]

``mtp`` keeps only the MTP layer's input. With ``fp8`` precision the o_proj input, the dispatched expert inputs
and the fc1 outputs are cached in FP8 (1 byte; DeepSeek-V3 sec. 3.3.4); ``full`` keeps only the layer input
h/t, for ``recompute_fraction`` of the layers. ``swap_activations`` moves that fraction of the stored activations
to the host. The first stage holds the most micro-batches in flight (schedule.py).

Transient (one micro-batch, largest of the stage): fp32 logits + their gradient of the LM head (2 * 4 * T * V/t
bytes) on the last stage, the working set of one fully recomputed layer (reference path: with the re-run
softmax's three probability-sized tensors), on the reference path for a module list the tensors its modules
dropped from one layer (they exist again while that layer's backward runs; a re-run core's softmax: three
probability-sized tensors instead of one), all-to-all send/receive buffers,
and on the reference path the explicit softmax backward (``backward_working_set_bytes``).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config.recompute import FULL, parse_recompute
from ..config.schema import Config
from ..parallel.dims import ParallelDims


@dataclass
class StateBytes:
    weights: float
    grads: float
    optimizer: float

    @property
    def total(self) -> float:
        return self.weights + self.grads + self.optimizer


def model_state_bytes(cfg: Config, layout: ParallelDims, dense_params: float, expert_params: float) -> StateBytes:
    """Weights, gradients and optimizer bytes of one device holding the given (unsharded) stage parameters."""
    s = cfg.sim
    fp32 = s.precision == "fp32"
    wb, gb, ob = (4.0, 4.0, 8.0) if fp32 else (2.0, 4.0, 12.0)
    d_dev = dense_params / layout.tp
    x_dev = expert_params / layout.expert_shards
    weights, grads = wb * (d_dev + x_dev), gb * (d_dev + x_dev)
    if layout.optimizer_shard:
        opt = ob * (d_dev / (layout.dp * layout.cp) + x_dev / layout.edp)
    else:
        opt = ob * (d_dev + x_dev)
    if s.swap_optimizer:
        opt = 0.0
    return StateBytes(weights, grads, opt)


def _recompute_modules(value):
    """``sim.recompute`` (a preset, ``full`` or a module list; ``auto`` resolved before) -> ("full" or the set of
    recomputed modules). One list of names with training: ``pangu_ms/config/recompute.py``."""
    return parse_recompute(value, "sim.recompute", allow_auto=False)


def reference_path(cfg: Config) -> bool:
    """The project's CPU reference path (``sim.moe_impl: training_cpu``): explicit attention (the softmax
    probabilities are stored, no fused kernel) and the CPU dropless dispatchers."""
    return cfg.sim.moe_impl == "training_cpu"


# The reference path's RMSNorm (backend.RMSNormKernel) multiplies x by its inverse RMS and the result by the weight,
# both expanded to x's shape first; each multiply keeps its two operands for the backward, so a norm stores, beside
# its input and output, the expanded inverse RMS, the normalised x and the expanded weight: 3 tensors of its width
REFERENCE_NORM_TENSORS = 3


def norm_kept_elems(cfg: Config, width: float) -> float:
    """Per token: what one RMSNorm of ``width`` stores beyond its input and output (the composite norm of the
    ``cpu`` backend on the reference path only; the fused norms, ``cpu_fused``'s C++ kernel and Ascend's
    RmsNorm, keep a [T, 1] statistic, not counted)."""
    return REFERENCE_NORM_TENSORS * width if reference_path(cfg) and cfg.model.backend == "cpu" else 0.0


def _layer_norms_kept(cfg: Config, t: int, mods) -> float:
    """Per token: the ``norm_kept_elems`` of a sub-layer's pre-norm and (sandwich) post-norm; dropped by ``norm``."""
    if "norm" in mods:
        return 0.0
    return norm_kept_elems(cfg, cfg.model.hidden_size / t) * (2 if cfg.model.sandwich_norm else 1)


def blockwise_core(cfg: Config) -> bool:
    """The reference path's query-chunked MLA attention takes the blockwise backward
    (``layers/blockwise_attention.py``): its probabilities are rebuilt chunk by chunk in the backward, not kept.
    (Not for a recomputed core, which takes the autodiff path; nor without RoPE, i.e. GQA / MHA.)"""
    s_len, chunk = cfg.train.seq_length, cfg.long_context.attention_chunk
    return reference_path(cfg) and cfg.model.attention_type == "mla" and 0 < chunk < s_len


def _elems_attention(cfg: Config, t: int, mods, recomputed_core: bool = False) -> float:
    m = cfg.model
    fp8_scale = 0.5 if cfg.sim.precision == "fp8" else 1.0     # o_proj input cached in FP8
    h = m.hidden_size
    norm_out = 0.0 if "norm" in mods else h / t
    sandwich = h / t if m.sandwich_norm else 0.0
    up = "mla_up_proj" in mods
    if m.attention_type == "mla":
        qk = m.qk_nope_head_dim + m.qk_rope_head_dim
        # q, k, v are re-computed from the stored latents by 'mla_up_proj' (DeepSeek-V3)
        qkvo = m.num_heads / t * ((0.0 if up else 2 * qk + m.v_head_dim) + m.v_head_dim * fp8_scale)
        lat = m.q_lora_rank + m.kv_lora_rank + m.qk_rope_head_dim
        lat_norm = 0.0 if up else m.q_lora_rank + m.kv_lora_rank
    else:
        d = m.attn_head_dim
        kvh = m.num_heads if m.attention_type == "mha" else m.num_kv_heads
        qkvo = (m.num_heads / t + 2 * max(kvh / t, 1.0)) * d + m.num_heads / t * d * fp8_scale
        lat = lat_norm = 0.0
    if reference_path(cfg):
        # explicit attention: the softmax probabilities [H, S, S_k], re-computed by 'core_attn'; none with the
        # blockwise backward of a core that is not inside a recomputed region
        core = 0.0 if "core_attn" in mods or (blockwise_core(cfg) and not recomputed_core) else _probs_elems(cfg, t)
    else:
        core = 2.0 * m.num_heads / t                            # fused attention: softmax LSE (fp32)
    # the norms' own tensors (reference path): input norm and sandwich post-norm [norm], latent norms [mla_up_proj]
    norms = _layer_norms_kept(cfg, t, mods)
    if m.attention_type == "mla" and not up:
        norms += norm_kept_elems(cfg, m.q_lora_rank + m.kv_lora_rank)
    return h / t + norm_out + qkvo + core + lat + lat_norm + sandwich + norms


def _probs_elems(cfg: Config, t: int) -> float:
    """Per token: the explicit attention's softmax probabilities H/t * S_k (query-chunked: only the causally
    visible keys, about (S + chunk) / 2)."""
    s_len, chunk = cfg.train.seq_length, cfg.long_context.attention_chunk
    keys = (s_len + chunk) / 2.0 if 0 < chunk < s_len else float(s_len)
    return cfg.model.num_heads / t * keys


# RecomputableSoftmax, the softmax of a recomputed attention core, keeps three probability-sized tensors for its
# backward (the probabilities, its input x and x - rowsum) where the Softmax Cell keeps one
RECOMPUTED_SOFTMAX_TENSORS = 3


def _elems_dense_ffn(cfg: Config, t: int, ffn: int, mods) -> float:
    h = cfg.model.hidden_size
    sandwich = h / t if cfg.model.sandwich_norm else 0.0
    gate_up = 0.0 if "mlp" in mods else 2 * ffn / t
    # the SwiGLU output (the down-projection input); the reference path's unfused SwiGLU also keeps silu(gate)
    act = 0.0 if ("mlp" in mods or "mlp_act" in mods) else (2 if reference_path(cfg) else 1) * ffn / t
    norms = _layer_norms_kept(cfg, t, mods)
    return h / t + (0.0 if "norm" in mods else h / t) + gate_up + act + sandwich + norms


def _elems_moe(cfg: Config, layout: ParallelDims, mods) -> dict:
    m, e, t = cfg.model, cfg.moe, layout.tp
    h, f = m.hidden_size, e.expert_ffn_hidden
    act = "moe_act" in mods or "experts" in mods
    fs = e.num_shared_experts * f
    sandwich = h / t if m.sandwich_norm else 0.0
    norms = _layer_norms_kept(cfg, t, mods)
    common = h / t + (0.0 if "norm" in mods else h / t) + 2.0 * e.num_experts / t + sandwich + norms
    if reference_path(cfg) and e.resolved_dropless_impl() == "masked_dense":
        # every token through every expert (and the folded shared experts) in two matmuls: per (token, expert)
        # the SwiGLU's gate and up halves 2F, silu(gate) F, SwiGLU output F (for the gate gradient), the routing
        # gates expanded to [T, E, F] F (GateScale's multiply keeps both operands) and gated output F (the fc2 input)
        n = e.num_experts + e.num_shared_experts
        routed = n * ((0.0 if "experts" in mods else 2 * f) + (0.0 if act else 4 * f))
        return {"moe.common": common, "moe.routed": routed, "moe.shared": 0.0}
    rows, n_w = layout.routed_rows(e.top_k, f)
    fp8_scale = 0.5 if cfg.sim.precision == "fp8" else 1.0     # expert inputs / fc1 outputs cached in FP8
    out_h = 0.0 if cfg.sim.moe_probs_before_fc2 else h          # expert output kept for the gate gradient
    per_row = (h * fp8_scale + out_h + (0.0 if "experts" in mods else 2 * n_w * fp8_scale)
               + (0.0 if act else n_w))
    shared_act = "moe_act" in mods or "shared_expert" in mods
    shared = ((0.0 if "shared_expert" in mods else 2 * fs / t) + (0.0 if shared_act else fs / t)) if fs else 0.0
    return {"moe.common": common, "moe.routed": rows * per_row * cfg.sim.expert_imbalance, "moe.shared": shared}


def layer_activation_bytes(cfg: Config, layout: ParallelDims, moe_layer: bool, recompute=None,
                           full_fraction: float | None = None) -> dict:
    """Stored activation bytes of one layer for one micro-batch on one device, by module."""
    rc = _recompute_modules(recompute if recompute is not None else cfg.sim.recompute)
    frac = cfg.sim.recompute_fraction if full_fraction is None else full_fraction
    t, tok = layout.tp, layout.tokens_per_micro
    b = 4.0 if cfg.sim.precision == "fp32" else 2.0
    mods = frozenset() if rc == FULL else rc

    def stored(modules, recomputed_core):
        elems = {"attention": _elems_attention(cfg, t, modules, recomputed_core)}
        if moe_layer:
            elems.update(_elems_moe(cfg, layout, modules))
        else:
            elems["ffn"] = _elems_dense_ffn(cfg, t, cfg.model.dense_ffn_hidden, modules)
        return {k: v * tok * b for k, v in elems.items()}
    out = stored(mods, rc == FULL or "core_attn" in mods)
    # the re-run attention core's softmax (reference path) holds RECOMPUTED_SOFTMAX_TENSORS probability-sized
    # tensors while its layer's backward runs: transient
    rerun_core = (RECOMPUTED_SOFTMAX_TENSORS * _probs_elems(cfg, t) * tok * b
                  if reference_path(cfg) and (rc == FULL or "core_attn" in mods) else 0.0)
    if rc == FULL:
        kept = cfg.model.hidden_size / t * tok * b
        full_total = sum(out.values())
        if rerun_core:
            full_total += rerun_core - _probs_elems(cfg, t) * tok * b     # instead of the Softmax's one
        out = {k: (1.0 - frac) * v for k, v in out.items()}
        out["layer_input"] = frac * kept
        out["_recompute_working_set"] = full_total     # transient, not multiplied by in-flight micro-batches
    elif mods and reference_path(cfg):
        # the recomputed modules' tensors exist again while their layer's backward runs (measured on the
        # reference path; the Ascend rows of docs/simulator.md do not count it)
        dropped = sum(stored(frozenset(), "core_attn" in mods).values()) - sum(out.values())
        out["_recompute_working_set"] = dropped + (rerun_core - _probs_elems(cfg, t) * tok * b if rerun_core else 0.0)
    elif rerun_core:
        out["_recompute_working_set"] = rerun_core
    return out


def backward_working_set_bytes(cfg: Config, layout: ParallelDims) -> float:
    """Transient of one layer's backward pass beyond its stored activations. Reference path: the softmax
    backward of the explicit attention holds four probability-sized tensors at once (the incoming gradient, its
    product with the probabilities, the expanded row sum and their product: ``layers/explicit_broadcast.py``);
    elsewhere (fused attention) it is small and not counted."""
    if not reference_path(cfg):
        return 0.0
    m, b = cfg.model, (4.0 if cfg.sim.precision == "fp32" else 2.0)
    s_len, chunk = cfg.train.seq_length, cfg.long_context.attention_chunk
    keys = chunk if 0 < chunk < s_len else s_len                # one query chunk's scores at a time
    return 4.0 * m.num_heads / layout.tp * keys * layout.tokens_per_micro * b


def head_transient_bytes(cfg: Config, layout: ParallelDims) -> float:
    """fp32 logits and their gradient for one micro-batch (vocab-parallel)."""
    return 2 * 4.0 * layout.tokens_per_micro * cfg.model.vocab_size / layout.tp


def a2a_buffer_bytes(cfg: Config, layout: ParallelDims) -> float:
    """Dispatch + combine send and receive buffers of one MoE layer."""
    if not cfg.moe.enabled or layout.ep_width <= 1:
        return 0.0
    b = 4.0 if cfg.sim.precision == "fp32" else 2.0
    rows = layout.tokens_per_micro / layout.tp * cfg.moe.top_k
    return 4 * rows * cfg.model.hidden_size * b * cfg.sim.expert_imbalance
