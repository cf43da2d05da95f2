"""Expert-parallel all-to-all overlap: what can run concurrently with what, per schedule phase.

One MoE layer, one micro-batch, one device. Dependencies inside a micro-batch (forward; the backward runs them in
reverse)::

    attention / router / permute (A)  ->  dispatch (d)  ->  experts (X)  ->  combine (c)  ->  next layer

so inside one micro-batch an all-to-all can only run alongside work that does not depend on it: the shared expert
(it reads the layer input, not the dispatched tokens) and, in the backward, the routed experts' weight gradient
(which needs the expert input and the output gradient, not the dispatch gradient).

Concurrency cost. While a communication kernel runs, the compute beside it is slower by the profile's
``comm_compute_slowdown`` k (GPUs: the all-to-all kernels occupy SMs; Ascend: the collectives are driven by the
AI-CPU and leave the cube units alone but share HBM). Running compute t next to communication c takes::

    ov(t, c) = c                        if c >= t (1 + k)      (compute finishes under the transfer)
             = t + c * k / (1 + k)      otherwise               (compute slowed while the transfer runs)

Phases (FWD-BWD pairing of MindSpeed ``--moe-fb-overlap``, Megatron-Core combined 1F1B and DualPipe): in the
steady state the forward of micro-batch i+1 runs with the backward of micro-batch i, which are independent, in
four stages (the issue order of those implementations)::

    T_pair = ov(A_f, c_b) + ov(X_b, d_f) + ov(X_f, d_b) + ov(A_b, c_f)
    exposed_pair = T_pair - (F + B)

(F = A_f + X_f, B = A_b + X_b; c_b / d_b are the backward of combine / dispatch: gradients, sent in the activation
dtype). In warm-up and cool-down a pass has no partner and only the within-micro-batch work can hide it::

    exposed_alone = ov(S_f, d_f) - S_f + c_f  +  ov(S_b, c_b) - S_b + ov(W_x, d_b) - W_x

(S = shared-expert compute, W_x = the routed experts' weight-gradient GEMMs, half of their backward GEMM time).
``sim.ep_overlap_scope: intra_layer`` (MindSpeed ``--moe-alltoall-overlap-comm``, Megatron
``--moe-shared-expert-overlap``) uses ``exposed_alone`` for every pass; ``cross_micro_batch`` (default) pairs
the steady-state passes. Without ``sim.ep_overlap`` the whole d_f + c_f + c_b + d_b is exposed (DualPipe always
pairs). Which fraction of a stage's passes is unpaired is ``schedule.unpaired_fraction``.

Full recompute. The recomputed forward of a checkpointed layer runs, inside that micro-batch's backward, as a
plain forward before the paired F&B function (MindSpeed fb-overlap, mindspeed/core/pipeline_parallel/fb_overlap/
transformer_layer.py: ``if bwd_layer_graph.checkpointed: ... transformer_layer_forward(...)``), so its dispatch and
combine have no partner pass whatever the scope: only the shared expert hides its dispatch
(:meth:`EPPhases.exposed_recompute`)::

    exposed_recompute = ov(S_f, d_f) - S_f + c_f
"""
from __future__ import annotations

from dataclasses import dataclass


def overlapped(compute: float, comm: float, slowdown: float) -> float:
    """Time of ``compute`` seconds of compute running beside ``comm`` seconds of communication."""
    if comm <= 0:
        return compute
    if comm >= compute * (1.0 + slowdown):
        return comm
    return compute + comm * slowdown / (1.0 + slowdown)


@dataclass
class EPPhases:
    """Compute groups and all-to-all times of one MoE layer for one micro-batch (seconds)."""

    attn_fwd: float           # A_f: attention, router, permutation, norms (everything but the experts)
    attn_bwd: float
    expert_fwd: float         # X_f: routed + shared experts
    expert_bwd: float
    shared_fwd: float         # S_f (part of X_f)
    shared_bwd: float
    routed_wgrad: float       # W_x (part of X_b)
    dispatch_fwd: float
    combine_fwd: float
    dispatch_bwd: float
    combine_bwd: float

    @property
    def comm_total(self) -> float:
        return self.dispatch_fwd + self.combine_fwd + self.dispatch_bwd + self.combine_bwd

    def exposed_paired(self, slowdown: float) -> float:
        """Exposed all-to-all (and contention) per micro-batch when its forward and backward are each paired."""
        t = (overlapped(self.attn_fwd, self.combine_bwd, slowdown)
             + overlapped(self.expert_bwd, self.dispatch_fwd, slowdown)
             + overlapped(self.expert_fwd, self.dispatch_bwd, slowdown)
             + overlapped(self.attn_bwd, self.combine_fwd, slowdown))
        return max(0.0, t - (self.attn_fwd + self.expert_fwd + self.attn_bwd + self.expert_bwd))

    def exposed_alone(self, slowdown: float) -> float:
        """Exposed per micro-batch when forward and backward run without a partner (within-layer overlap only)."""
        fwd = overlapped(self.shared_fwd, self.dispatch_fwd, slowdown) - self.shared_fwd + self.combine_fwd
        bwd = (overlapped(self.shared_bwd, self.combine_bwd, slowdown) - self.shared_bwd
               + overlapped(self.routed_wgrad, self.dispatch_bwd, slowdown) - self.routed_wgrad)
        return fwd + bwd

    def exposed_recompute(self, overlap: bool, slowdown: float) -> float:
        """Exposed all-to-all of one recomputed forward (full recompute): never paired, within-layer overlap only."""
        if not overlap:
            return self.dispatch_fwd + self.combine_fwd
        return overlapped(self.shared_fwd, self.dispatch_fwd, slowdown) - self.shared_fwd + self.combine_fwd

    def exposed_comm(self, overlap: bool, scope: str, unpaired: float, slowdown: float) -> float:
        """The communication part of :meth:`exposed` (transfer time not under compute), without the contention
        cost of the compute beside it: what a profiler trace shows as exposed all-to-all."""
        if not overlap:
            return self.comm_total

        def bare(t, c):
            return max(0.0, c - t * (1.0 + slowdown))

        alone = (bare(self.shared_fwd, self.dispatch_fwd) + self.combine_fwd + bare(self.shared_bwd, self.combine_bwd)
                 + bare(self.routed_wgrad, self.dispatch_bwd))
        if scope == "intra_layer":
            return alone
        paired = (bare(self.attn_fwd, self.combine_bwd) + bare(self.expert_bwd, self.dispatch_fwd)
                  + bare(self.expert_fwd, self.dispatch_bwd) + bare(self.attn_bwd, self.combine_fwd))
        return (1.0 - unpaired) * paired + unpaired * alone

    def exposed(self, overlap: bool, scope: str, unpaired: float, slowdown: float) -> float:
        """Exposed seconds per micro-batch: no overlap, within-layer only, or paired for 1 - ``unpaired``."""
        if not overlap:
            return self.comm_total
        alone = self.exposed_alone(slowdown)
        if scope == "intra_layer":
            return alone
        return (1.0 - unpaired) * self.exposed_paired(slowdown) + unpaired * alone
