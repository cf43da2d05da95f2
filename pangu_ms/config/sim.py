"""Simulator section of the recipe (``sim:``): hardware, cluster and optimisation switches for pangu_ms/sim.

Sections
--------
target        which hardware profile and how many devices the estimate is for.
precision     number format of the GEMMs (bf16 / fp8 / fp32) and of gradient reduction.
schedule      pipeline schedule (1F1B, interleaved, DualPipe-style).
memory        recompute granularity, activation swapping, optimizer-state swapping.
communication overlap switches (TP collectives fused with GEMMs, cross-micro-batch EP overlap, DP overlap)
              and the expert-placement load-imbalance factor.

The parallel degrees themselves (dp, tp, pp, vpp, ep, etp, cp, micro_batch_size, tp_extend_ep,
hierarchical_alltoall, optimizer_shard) and the pipeline split (pipeline_split, layers_per_virtual_stage) live
in the ``parallel:`` section, shared with training.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def _choice(default, choices):
    return field(default=default, metadata={"choices": tuple(choices)})


@dataclass
class SimConfig:
    """Inputs of the performance simulator that are not part of the model or the parallel layout.

    Attributes:
        hardware: hardware profile name (``ascend_910b``, ``h100``, ``h800``, ``cpu``) or a profile YAML path.
        devices: cluster size; 0 means ``parallel.dp * tp * pp * cp``. When set, dp is derived as
            devices / (tp * pp * cp).

        precision: ``bf16`` (all GEMMs at the BF16 peak), ``fp8`` (linear-layer GEMMs at the FP8 peak,
            attention core in BF16, EP dispatch sent in FP8, as DeepSeek-V3), ``fp32`` (CPU).
        grad_reduce_dtype: dtype of the data-parallel gradient reduction (``fp32`` = Megatron/MindSpeed default
            for bf16 training with fp32 main grads).

        pp_schedule: ``auto`` (interleaved when vpp > 1, else 1F1B), ``1f1b``, ``interleaved`` or
            ``dualpipe`` (DeepSeek-V3's bidirectional schedule: bubble (p/2-1)(F+B/2), EP all-to-all hidden,
            two parameter copies).
        recompute: ``none``; ``selective`` (recompute RMSNorms, RoPE and SwiGLU activations: cheap
            element-wise recompute); ``moe_fine`` (selective + the routed-expert first GEMM and activation,
            without re-running communication; MindSpeed "zero-memory"); ``full`` (store only each layer's input,
            re-run the whole layer forward, communication included); ``auto`` (the fastest of none, selective,
            moe_fine, full whose memory fits, each with its own stage split: the cheapest granularity whose
            time-balanced split fits, unless a cheaper one that fits only with a memory-aware split is faster;
            estimate.run_with_recompute); or a list of modules as ``train.recompute`` takes (one list of
            names for both: ``pangu_ms/config/recompute.py``; the presets are module sets of that list).
        recompute_fraction: fraction of each stage's layers the granularity applies to (1.0 = all).
        swap_activations: fraction of the stored activations offloaded to host memory during the forward
            pass and fetched back for the backward pass (0 = off). Transfer time beyond the compute it can hide
            behind is exposed.
        swap_optimizer: keep fp32 master weights and Adam moments in host memory between steps (MindSpeed
            ``--swap-optimizer``); costs a host round trip of those bytes each step.

        tp_comm_overlap: fuse TP all-gather / reduce-scatter with the adjacent GEMM (Ascend MC2, NVIDIA
            userbuffers); the collective is split into ``tp_overlap_chunks`` pieces.
        tp_overlap_chunks: pieces of a fused TP collective; the first piece stays exposed.
        ep_overlap: overlap of the EP all-to-all with compute (sim/overlap.py: per-phase pairing, dependencies
            and the profile's ``comm_compute_slowdown``).
        ep_overlap_scope: ``cross_micro_batch`` (Pangu "Adaptive Pipe Overlap", MindSpeed ``--moe-fb-overlap``,
            Megatron-Core combined 1F1B: the steady-state forward of one micro-batch runs with the backward of
            another; warm-up / cool-down passes overlap within the layer only) or ``intra_layer`` (MindSpeed
            ``--moe-alltoall-overlap-comm``: every pass overlaps within the layer only: shared expert beside
            dispatch / combine-backward, routed weight gradient beside dispatch-backward).
        dp_overlap: overlap DP gradient reduction (and the ZeRO parameter all-gather) with the last
            micro-batch's backward (and the next step's first forward).
        expert_imbalance: max/mean tokens per device after routing (1.0 = perfect balance). Multiplies the
            routed-expert compute, the all-to-all time and the routed activations of the busiest device.
        attention_causal_skip: the attention kernel skips fully masked blocks (hardware work is half the
            full-square FLOPs that MFU counts).
        fused_kernels: fused RMSNorm / SwiGLU / RoPE / permutation kernels (one read + one write per
            element-wise op); off multiplies element-wise memory traffic by ``unfused_traffic_factor``.
        unfused_traffic_factor: memory-traffic multiplier of unfused element-wise ops.
        moe_impl: ``grouped`` (grouped GEMM over the tokens routed to each expert, as on NPU/GPU) or
            ``training_cpu`` (the project's single-process CPU path chosen by ``moe.dropless_impl``:
            ``masked_dense`` runs every expert on every token, so routed-expert work is E/k times the model's).
        moe_probs_before_fc2: the routing weight scales the SwiGLU output before the expert's second GEMM
            (fc2 is linear, so the result is the same; pangu_ms/moe/experts.py and fused "weighted SwiGLU"
            kernels do this) instead of the expert output, so no per-row expert output is stored for the gate
            gradient (memory.py).
        cp_algorithm: context-parallel K/V exchange (parallel.cp > 1; formulas in sim/comm.py): ``ring``
            (pass-KV ring attention: c-1 p2p steps per attention pass, each overlapped with the attention of one
            chunk; backward passes K/V + dK/dV) or ``allgather`` (Llama 3: all-gather K/V before attention and
            reduce-scatter dK/dV after it, not overlapped).
    """

    # target
    hardware: str = "ascend_910b"
    devices: int = 0
    # precision
    precision: str = _choice("bf16", ("bf16", "fp8", "fp32"))
    grad_reduce_dtype: str = _choice("fp32", ("fp32", "bf16"))
    # schedule
    pp_schedule: str = _choice("auto", ("auto", "1f1b", "interleaved", "dualpipe"))
    # memory
    recompute: Any = "none"
    recompute_fraction: float = 1.0
    swap_activations: float = 0.0
    swap_optimizer: bool = False
    # communication
    tp_comm_overlap: bool = False
    tp_overlap_chunks: int = 4
    ep_overlap: bool = False
    ep_overlap_scope: str = _choice("cross_micro_batch", ("cross_micro_batch", "intra_layer"))
    dp_overlap: bool = True
    expert_imbalance: float = 1.0
    attention_causal_skip: bool = True
    fused_kernels: bool = True
    unfused_traffic_factor: float = 3.0
    moe_impl: str = _choice("grouped", ("grouped", "training_cpu"))
    moe_probs_before_fc2: bool = False
    cp_algorithm: str = _choice("ring", ("ring", "allgather"))
