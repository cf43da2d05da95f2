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
t = tp (sequence parallel: token-wise tensors are split over TP), H heads, f / f_s / n_w FFN widths::

    attention  norm input h/t, norm output h/t [S], q,k,v and output o of the fused attention (MLA:
               H/t*(2*qk + 2*v); GQA: (H + 2*max(KV/t, 1))*d + H*d), softmax LSE 2*H/t,
               MLA latents q_lora + kv_lora + rope and their norm outputs q_lora + kv_lora [S],
               post-norm input h/t (sandwich norm)
    dense FFN  norm in h/t, norm out h/t [S], gate f/t, up f/t, act f/t [S], post-norm in h/t
    MoE        norm in h/t, norm out h/t [S], router probabilities 2*E/t (fp32),
               per routed row (k*T*etp/t rows at width n_w = f/etp: ParallelDims.routed_rows), times the
               expert imbalance: dispatched input h, fc1 output 2*n_w [F], act n_w [S][F], expert output h
               (only when the routing weight multiplies the expert *output*: with ``sim.moe_probs_before_fc2`` it
               scales the SwiGLU output before fc2, as pangu_ms/moe/experts.py does, and the gate gradient
               <d a, swiglu(fc1 x)> needs no stored output),
               shared expert gate/up 2*f_s/t, act f_s/t [S], post-norm in h/t

[S] dropped by ``selective`` (re-computed element-wise; for MLA also q, k, v, re-computed from the stored
latents by the up-projections as DeepSeek-V3 does), [F] dropped by ``moe_fine``; with ``fp8`` precision
the o_proj input, the dispatched expert inputs and the fc1 outputs are cached in FP8 (1 byte; DeepSeek-V3
sec. 3.3.4); ``full`` keeps only the
layer input h/t, for ``recompute_fraction`` of the layers. ``swap_activations`` moves that fraction of the
stored activations to the host. The first stage holds the most micro-batches in flight (schedule.py).

Transient (one micro-batch, largest of the stage): fp32 logits + their gradient of the LM head (2 * 4 * T * V/t
bytes) on the last stage, the working set of one fully recomputed layer, all-to-all send/receive buffers.
"""
from __future__ import annotations

from dataclasses import dataclass

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


def _elems_attention(cfg: Config, t: int, drop_sel: bool) -> float:
    m = cfg.model
    fp8_scale = 0.5 if cfg.sim.precision == "fp8" else 1.0     # o_proj input cached in FP8
    h = m.hidden_size
    sandwich = h / t if m.sandwich_norm else 0.0
    if m.attention_type == "mla":
        qk = m.qk_nope_head_dim + m.qk_rope_head_dim
        # q, k, v are re-computed from the stored latents by 'selective' (MLA up-projection recompute)
        qkvo = m.num_heads / t * ((0.0 if drop_sel else 2 * qk + m.v_head_dim) + m.v_head_dim * fp8_scale)
        lat = m.q_lora_rank + m.kv_lora_rank + m.qk_rope_head_dim
        lat_norm = m.q_lora_rank + m.kv_lora_rank
    else:
        d = m.attn_head_dim
        kvh = m.num_heads if m.attention_type == "mha" else m.num_kv_heads
        qkvo = (m.num_heads / t + 2 * max(kvh / t, 1.0)) * d + m.num_heads / t * d * fp8_scale
        lat = lat_norm = 0.0
    lse = 2.0 * m.num_heads / t
    return h / t + (0.0 if drop_sel else h / t) + qkvo + lse + lat + (0.0 if drop_sel else lat_norm) + sandwich


def _elems_dense_ffn(cfg: Config, t: int, ffn: int, drop_sel: bool) -> float:
    h = cfg.model.hidden_size
    sandwich = h / t if cfg.model.sandwich_norm else 0.0
    return h / t + (0.0 if drop_sel else h / t) + 2 * ffn / t + (0.0 if drop_sel else ffn / t) + sandwich


def _elems_moe(cfg: Config, layout: ParallelDims, drop_sel: bool, drop_fine: bool) -> dict:
    m, e, t = cfg.model, cfg.moe, layout.tp
    h, f = m.hidden_size, e.expert_ffn_hidden
    rows, n_w = layout.routed_rows(e.top_k, f)
    fp8_scale = 0.5 if cfg.sim.precision == "fp8" else 1.0     # expert inputs / fc1 outputs cached in FP8
    out_h = 0.0 if cfg.sim.moe_probs_before_fc2 else h          # expert output kept for the gate gradient
    per_row = (h * fp8_scale + out_h + (0.0 if drop_fine else 2 * n_w * fp8_scale)
               + (0.0 if (drop_sel or drop_fine) else n_w))
    fs = e.num_shared_experts * f
    shared = (2 * fs / t + (0.0 if drop_sel else fs / t)) if fs else 0.0
    sandwich = h / t if m.sandwich_norm else 0.0
    return {
        "moe.common": h / t + (0.0 if drop_sel else h / t) + 2.0 * e.num_experts / t + sandwich,
        "moe.routed": rows * per_row * cfg.sim.expert_imbalance,
        "moe.shared": shared,
    }


def layer_activation_bytes(cfg: Config, layout: ParallelDims, moe_layer: bool, recompute: str | None = None,
                           full_fraction: float | None = None) -> dict:
    """Stored activation bytes of one layer for one micro-batch on one device, by module."""
    rc = recompute if recompute is not None else cfg.sim.recompute
    frac = cfg.sim.recompute_fraction if full_fraction is None else full_fraction
    t, tok = layout.tp, layout.tokens_per_micro
    b = 4.0 if cfg.sim.precision == "fp32" else 2.0
    drop_sel = rc in ("selective", "moe_fine")
    drop_fine = rc == "moe_fine"
    out = {"attention": _elems_attention(cfg, t, drop_sel)}
    if moe_layer:
        out.update(_elems_moe(cfg, layout, drop_sel, drop_fine))
    else:
        out["ffn"] = _elems_dense_ffn(cfg, t, cfg.model.dense_ffn_hidden, drop_sel)
    out = {k: v * tok * b for k, v in out.items()}
    if rc == "full":
        kept = cfg.model.hidden_size / t * tok * b
        full_total = sum(out.values())
        out = {k: (1.0 - frac) * v for k, v in out.items()}
        out["layer_input"] = frac * kept
        out["_full_working_set"] = full_total      # transient, not multiplied by in-flight micro-batches
    return out


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
