"""Token dispatchers (stages 2 and 4 of the MoE forward: permute tokens to experts, combine them back).

All run on one process (expert parallelism wraps them with all-to-all in ``pangu_ms.parallel``). The (token,
choice) pairs are taken in token-major order: pair j = t*k + c is token t's c-th choice.

* :class:`MaskedDenseDispatcher` (dropless): no permutation; the combine weights are scattered to a dense
  [T, E] gate matrix and the experts run ``all_experts``. Exact, padding-free, E/k x routed FLOPs.
* :class:`SortedBlockDispatcher` (dropless): pairs are grouped by expert into a buffer where each expert's
  segment is padded to a multiple of ``block`` rows (MegaBlocks-style). The buffer has the static size
  R = ceil((T*k + E*(block-1)) / block) * block >= sum_e ceil(n_e / block) * block, so no token is ever dropped;
  each block of rows runs through the expert that owns it.
* :class:`CapacityDispatcher` (drop-and-pad): each expert takes at most C = ceil(capacity_factor * T * k / E)
  pairs, first come first served in token-major order; pairs past capacity are dropped (their expert output is
  zero; the shared expert and the residual still carry the token) and the drop rate is reported.

Every dispatcher returns (y [T, d], drop_rate scalar).
"""
from __future__ import annotations

import math

import mindspore as ms
from mindspore import nn, ops

from ..kernels.ops import embedding_primitives, weighted_scatter_primitives
from ..layers.explicit_broadcast import expand_as


def one_hot(ids, n, dtype):
    """One-hot in ``dtype`` (the OneHot kernel has no fp64 variant: build in fp32 and cast)."""
    if dtype == ms.float64:
        return ops.one_hot(ids, n, ops.ones((), ms.float32), ops.zeros((), ms.float32)).astype(dtype)
    return ops.one_hot(ids, n, ops.ones((), dtype), ops.zeros((), dtype))


def slots_in_expert(flat_ids, num_experts, dtype):
    """one-hot [P, E] of each pair's expert and its 0-based arrival position within that expert [P]."""
    onehot = one_hot(flat_ids, num_experts, dtype)
    pos = ((ops.cumsum(onehot, 0) - 1.0) * onehot).sum(1)
    return onehot, pos


class _SlotDispatcher(nn.Cell):
    """Shared permute / combine through a slot index (one trash slot at the end for dropped pairs)."""

    def __init__(self, num_experts: int, top_k: int):
        super().__init__()
        self.num_experts, self.top_k = num_experts, top_k

    def permute(self, x, slot, rows):
        x_rep = ops.repeat_elements(x, self.top_k, 0)                       # [T*k, d], token-major
        return ops.unsorted_segment_sum(x_rep, slot, rows + 1)[:rows]

    def combine(self, out_rows, slot, w):
        t = w.shape[0]
        pad = ops.zeros((1, out_rows.shape[-1]), out_rows.dtype)
        gathered = ops.gather(ops.concat((out_rows, pad), 0), slot, 0)   # [T*k, d]
        return (gathered * expand_as(w.reshape(-1, 1), gathered)).reshape(t, self.top_k, -1).sum(1)


class MaskedDenseDispatcher(nn.Cell):
    def __init__(self, num_experts: int, top_k: int):
        super().__init__()
        self.num_experts = num_experts

    def construct(self, x, idx, w, experts, shared=None):
        """``shared``: optional shared-expert MLP folded into the expert matmuls (see ``all_experts``)."""
        chosen = one_hot(idx, self.num_experts, w.dtype)
        gates = (chosen * expand_as(w.reshape(w.shape[0], w.shape[1], 1), chosen)).sum(1)
        return experts.all_experts(x, gates, shared), ops.zeros((), x.dtype)


class SortedBlockDispatcher(nn.Cell):
    """Buffer row r holds pair ``row_pair``: its token ``row_token[r]`` and combine weight ``row_w[r]`` (0 on the
    padding rows, which point at token 0 and so add an exact 0 there). Permute = one gather of x by row_token,
    combine = one scatter-add of the weighted expert rows onto their tokens; no [T*k, d] copies."""

    def __init__(self, num_experts: int, top_k: int, block: int, fused_cpu_kernels: bool = False):
        """``fused_cpu_kernels`` (the ``cpu_fused`` backend): the permute (row gather) and the combine
        (weighted scatter-add) and their gradients as C++ kernels (``kernels/cpu/embedding.cc``,
        ``weighted_scatter.cc``) instead of Gather / BroadcastTo / Mul / UnsortedSegmentSum; same values."""
        super().__init__()
        self.num_experts, self.top_k, self.block = num_experts, top_k, block
        self.fused_cpu_kernels = fused_cpu_kernels
        if fused_cpu_kernels:
            self.fused_gather, self.fused_gather_backward = embedding_primitives()
            self.fused_combine, self.fused_combine_backward = weighted_scatter_primitives()

    def construct(self, x, idx, w, experts):
        t = x.shape[0]
        rows = sorted_block_rows(t, self.num_experts, self.top_k, self.block)
        flat = idx.reshape(-1)
        onehot, pos = slots_in_expert(flat, self.num_experts, x.dtype)
        counts = onehot.sum(0)
        padded = ops.ceil(counts / self.block) * self.block
        ends = ops.cumsum(padded, 0)
        starts = ends - padded
        slot = ((onehot * starts).sum(1) + pos).astype(ms.int32)                  # [T*k], all < rows
        pair_token = ops.arange(0, t * self.top_k, 1, dtype=ms.int32) // self.top_k
        row_token = ops.unsorted_segment_sum(pair_token, slot, rows)               # padding rows: token 0
        row_w = ops.unsorted_segment_sum(w.reshape(-1), slot, rows)                # padding rows: weight 0
        nb = rows // self.block
        block_start = ops.arange(0, rows, self.block).astype(x.dtype).reshape(nb, 1)
        owner = (block_start >= ends.reshape(1, -1)).astype(ms.int32).sum(1)
        owner = ops.minimum(owner, self.num_experts - 1)
        if self.fused_cpu_kernels:
            buf = self.fused_gather(x, row_token).reshape(nb, self.block, -1)
            out = experts.per_group(buf, owner).reshape(rows, -1)
            return self.fused_combine(out, row_token, row_w, x), ops.zeros((), x.dtype)
        buf = ops.gather(x, row_token, 0).reshape(nb, self.block, -1)
        out = experts.per_group(buf, owner).reshape(rows, -1)
        return ops.unsorted_segment_sum(out * expand_as(row_w.reshape(rows, 1), out), row_token, t), ops.zeros((), x.dtype)


class CapacityDispatcher(_SlotDispatcher):
    def __init__(self, num_experts: int, top_k: int, capacity_factor: float):
        super().__init__(num_experts, top_k)
        self.capacity_factor = capacity_factor

    def construct(self, x, idx, w, experts):
        cap = capacity(x.shape[0], self.num_experts, self.top_k, self.capacity_factor)
        flat = idx.reshape(-1)
        onehot, pos = slots_in_expert(flat, self.num_experts, x.dtype)
        keep = (pos < cap).astype(x.dtype)
        rows = self.num_experts * cap
        slot_f = flat.astype(x.dtype) * cap + pos
        slot = (keep * slot_f + (1.0 - keep) * rows).astype(ms.int32)
        buf = self.permute(x, slot, rows).reshape(self.num_experts, cap, -1)
        out = experts.per_group(buf).reshape(rows, -1)
        y = self.combine(out, slot, w * keep.reshape(w.shape))
        return y, 1.0 - keep.mean()


def capacity(num_tokens: int, num_experts: int, top_k: int, capacity_factor: float) -> int:
    """C = ceil(capacity_factor * T * k / E), at least 1 (static: T is known when the graph is built)."""
    return max(1, math.ceil(capacity_factor * num_tokens * top_k / num_experts))


def sorted_block_rows(num_tokens: int, num_experts: int, top_k: int, block: int) -> int:
    """Static buffer rows R of the sorted-block dispatcher (a multiple of ``block``)."""
    return (num_tokens * top_k + num_experts * (block - 1) + block - 1) // block * block


def build_dispatcher(cfg, fused_cpu_kernels: bool = False) -> nn.Cell:
    """From ``MoEConfig``. Buffer sizes follow the token count of each call (static per compiled graph).
    ``fused_cpu_kernels``: the backend's ``fused_cpu_kernels`` (the sorted-block permute / combine in C++)."""
    if cfg.dispatcher == "drop_and_pad":
        return CapacityDispatcher(cfg.num_experts, cfg.top_k, cfg.capacity_factor)
    if cfg.resolved_dropless_impl() == "sorted_block":
        return SortedBlockDispatcher(cfg.num_experts, cfg.top_k, cfg.sorted_block_size, fused_cpu_kernels)
    return MaskedDenseDispatcher(cfg.num_experts, cfg.top_k)
