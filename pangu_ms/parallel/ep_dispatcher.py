"""Expert-parallel token dispatchers (the MoE ``dispatcher`` hook): flat and hierarchical all-to-all.

Both have the single-process dispatcher interface ``construct(x [T,d], idx [T,k], w [T,k], experts) ->
(y [T,d], drop_rate)``; ``experts`` is the layer's ``RoutedExperts`` holding this rank's ``El = E/W`` experts
(``W`` = EP width; EP member ``j`` owns experts ``[j*El, (j+1)*El)``, see ``dims.experts_of``).

Flat (Megatron/MindSpeed ``alltoall``), dropless:
    pairs (token, choice) -> slot ``e*C + arrival`` of a static buffer [E, C, d] with C = T (a source rank sends
    an expert at most T pairs: top-k choices are distinct), so nothing is ever dropped
    AllToAll(EP)  -> [W_src, El, C, d] -> [El, W*C, d] -> experts.per_group -> back -> AllToAll(EP)
    combine locally: y_t = sum_c w_tc * out(t, c)        (the same combine as the single-process dispatchers)
Hierarchical (MindSpeed ``moe_hierarchical_alltoallv``), dropless: the EP group spans N nodes of L members
(nodes from ``parallel.ranks_per_node``; ``dims.hierarchical_of``: *outer* = the l-th member of every node,
*inner* = the node's members; EP index j = node * L + l):
    AllGather(outer) of [x | w | idx]  -> the N*T tokens of the same-l members of every node (each token crosses
      the node boundary once, however many of its k experts live on the remote node)
    keep the pairs whose expert lives on my node -> buffer [L, El, C, d], C = N*T (dropless)
    AllToAll(inner) -> [El, L*C, d] -> experts -> AllToAll(inner)
    per-node partial combine  p_t = sum_{c: expert on my node} w_tc * out(t, c)     [N*T, d]
    ReduceScatter(outer)  -> y [T, d] = sum over nodes of the partial sums
With top-2 the two terms are added in the same pairs as the flat combine (x + 0 and a + b are exact and
commutative), so hierarchical equals flat bit-for-bit whenever the expert matmuls do (measured in
tests/distributed).

Expert placement (flat only, ``placement=True``, i.e. ``moe.expert_placement``; otherwise no table and no gather):
``placement`` [E] (int32, a non-trainable Parameter saved with the checkpoint) maps
each logical expert (the router's id) to its physical slot ``member * El + local slot``; pairs are bucketed by
physical slot, so the all-to-all sends them to whichever member holds the expert now. The identity table is the
static layout above; ``pangu_ms/parallel/placement_executor.py`` changes the table together with the weights and
optimizer state of the moved experts, which leaves the math unchanged (same pairs per expert, same arrival order).

``drop_and_pad`` under EP (flat only): per-source capacity C = ceil(capacity_factor*T*k/E) per expert, first come
first served in token-major order -- the local-capacity semantics of Megatron; it is NOT the single-process
capacity (which counts the global batch), so it is not compared with the single-process run.

Communication volume: :func:`comm_volume` counts the bytes of one training step (forward + backward, all MoE
layers) for both dispatchers from the real routing, split into inter-node and intra-node bytes.
"""
from __future__ import annotations

import math

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, ops

from ..moe.dispatcher import _SlotDispatcher, capacity, slots_in_expert
from .comm import AllGather, AllToAll, CommGroup, ReduceScatter


class FlatEPDispatcher(_SlotDispatcher):
    def __init__(self, num_experts: int, top_k: int, ep: CommGroup, capacity_factor: float | None = None,
                 impl: str = "auto", placement: bool = False):
        super().__init__(num_experts, top_k)
        if num_experts % ep.size:
            raise ValueError(f"num_experts={num_experts} is not divisible by the EP width {ep.size}")
        self.w = ep.size
        self.experts_per_rank = num_experts // ep.size
        self.cf = capacity_factor            # None = dropless
        self.a2a_in = AllToAll(ep, impl)
        self.a2a_out = AllToAll(ep, impl)
        self.placement = Parameter(Tensor(np.arange(num_experts, dtype=np.int32)), name="placement",
                                   requires_grad=False) if placement else None

    def construct(self, x, idx, w, experts):
        t, d = x.shape
        cap = t if self.cf is None else capacity(t, self.num_experts, self.top_k, self.cf)
        rows = self.num_experts * cap
        flat = idx.reshape(-1)
        if self.placement is not None:
            flat = ops.gather(self.placement, flat, 0)                          # logical -> physical slot
        _, pos = slots_in_expert(flat, self.num_experts, x.dtype)
        slot_f = flat.astype(x.dtype) * cap + pos
        if self.cf is None:
            slot = slot_f.astype(ms.int32)
            ww = w
            drop = ops.zeros((), x.dtype)
        else:
            keep = (pos < cap).astype(x.dtype)
            slot = (keep * slot_f + (1.0 - keep) * rows).astype(ms.int32)
            ww = w * keep.reshape(w.shape)
            drop = 1.0 - keep.mean()
        buf = self.permute(x, slot, rows)                                        # [E*C, d], expert-major
        recv = self.a2a_in(buf)                                                  # [W_src*El*C, d]
        local = self.experts_per_rank
        xe = recv.reshape(self.w, local, cap, d).transpose(1, 0, 2, 3).reshape(local, self.w * cap, d)
        ye = experts.per_group(xe)
        back = ye.reshape(local, self.w, cap, d).transpose(1, 0, 2, 3).reshape(rows, d)
        out = self.a2a_out(back)                                                 # [E*C, d], my pairs' outputs
        return self.combine(out, slot, ww), drop


class HierarchicalEPDispatcher(_SlotDispatcher):
    def __init__(self, num_experts: int, top_k: int, inner: CommGroup, outer: CommGroup, impl: str = "auto"):
        super().__init__(num_experts, top_k)
        width = inner.size * outer.size
        if num_experts % width:
            raise ValueError(f"num_experts={num_experts} is not divisible by the EP width {width}")
        self.n_nodes, self.local = outer.size, inner.size
        self.node, self.l = outer.index, inner.index
        self.experts_per_rank = num_experts // width
        self.node_experts = self.local * self.experts_per_rank          # experts per node
        self.first = self.node * self.node_experts        # first expert on my node
        self.gather = AllGather(outer, impl)
        self.a2a_in = AllToAll(inner, impl)
        self.a2a_out = AllToAll(inner, impl)
        self.scatter = ReduceScatter(outer, impl)

    def construct(self, x, idx, w, experts):
        t, d = x.shape
        k = self.top_k
        packed = ops.concat((x, w.astype(x.dtype), ops.stop_gradient(idx.astype(x.dtype))), 1)   # [T, d+2k]
        allp = self.gather(packed)                                                  # [N*T, d+2k]
        xa = allp[:, :d]
        wa = allp[:, d:d + k]
        ia = ops.stop_gradient(allp[:, d + k:]).astype(ms.int32)
        cap = self.n_nodes * t                                                      # dropless
        rows = self.node_experts * cap
        flat = ia.reshape(-1)
        _, pos = slots_in_expert(flat, self.num_experts, x.dtype)
        local_e = flat - self.first
        keep = ops.logical_and(local_e >= 0, local_e < self.node_experts).astype(x.dtype)
        slot = (keep * (local_e.astype(x.dtype) * cap + pos) + (1.0 - keep) * rows).astype(ms.int32)
        buf = self.permute(xa, slot, rows)                                          # [L*El*C, d]
        recv = self.a2a_in(buf)                                                     # [L_src*El*C, d]
        xe = recv.reshape(self.local, self.experts_per_rank, cap, d).transpose(1, 0, 2, 3).reshape(
            self.experts_per_rank, self.local * cap, d)
        ye = experts.per_group(xe)
        back = ye.reshape(self.experts_per_rank, self.local, cap, d).transpose(1, 0, 2, 3).reshape(rows, d)
        out = self.a2a_out(back)
        partial = self.combine(out, slot, wa * keep.reshape(wa.shape))             # [N*T, d]
        return self.scatter(partial), ops.zeros((), x.dtype)


# ------------------------------------------------------------------------------------------- communication volume
def comm_volume(idx_by_member, num_experts: int, hidden: int, node_of_member, bytes_per_elem: int = 4,
                n_layers: int = 1, backward: bool = True) -> dict:
    """Bytes moved by one EP group in one training step, flat vs hierarchical, from the real routing.

    ``idx_by_member``: per EP member (EP order), a list over MoE layers of top-k expert ids ``[T, k]`` (or one
    ``[T, k]`` array, then repeated ``n_layers`` times). ``node_of_member[j]``: node of EP member j.
    Counted: payload bytes each rank sends to *other* ranks (self-chunks are free), split by whether the peer is
    on another node; the backward pass moves the same bytes again (the adjoint of AlltoAll is AlltoAll, of
    AllGather ReduceScatter), so ``backward=True`` doubles the forward count.

    ``flat_exact`` / ``hier_exact``: AlltoAllV with exact counts (what the Ascend implementation sends):
      flat: each (token, expert) pair is sent to the expert's rank and its output returned (Megatron permute);
      hier: AllGather(outer) of T rows of d + 2k elements (x, gate weights, expert ids), intra-node AlltoAllV
            of the pairs routed to the node, and ReduceScatter(outer) of the [N*T, d] partial sums.
    ``flat_static`` / ``hier_static``: the padded static buffers of this module's dropless CPU graphs
      (C = T rows per expert and source; C = N*T for hierarchical), before the CPU emulation's own overhead
      (AllGather/AllReduce-based collectives move a further O(group size) more).
    Each entry: {"inter_node": bytes, "intra_node": bytes, "total": bytes}, summed over the group's ranks.
    """
    members = len(idx_by_member)
    nodes = sorted(set(node_of_member))
    node_idx = {n: i for i, n in enumerate(nodes)}
    n_nodes = len(nodes)
    local = members // n_nodes
    el = num_experts // members
    per_layer = []
    for j in range(members):
        v = idx_by_member[j]
        per_layer.append(list(v) if isinstance(v, (list, tuple)) else [np.asarray(v)] * n_layers)
    n_layers = len(per_layer[0])
    d, b = hidden, bytes_per_elem
    acc = {key: {"inter_node": 0, "intra_node": 0} for key in ("flat_exact", "flat_static", "hier_exact",
                                                                 "hier_static")}

    def add(key, src, dst, elems):
        if src == dst or elems == 0:
            return
        where = "inter_node" if node_of_member[src] != node_of_member[dst] else "intra_node"
        acc[key][where] += int(elems) * b

    for layer in range(n_layers):
        idx = [np.asarray(per_layer[j][layer]) for j in range(members)]
        t, k = idx[0].shape
        for s in range(members):
            owner = idx[s].reshape(-1) // el
            for dst in range(members):
                pairs = int((owner == dst).sum())
                add("flat_exact", s, dst, 2 * pairs * d)                     # dispatch + combine
                add("flat_static", s, dst, 2 * el * t * d)                   # [El, C=T, d] chunk each way
        # hierarchical: member j = node_idx * L + l; outer(l) = {node * L + l}
        for s in range(members):
            sn, sl = divmod(s, local)
            for on in range(n_nodes):                                        # AllGather + ReduceScatter (outer)
                peer = on * local + sl
                add("hier_exact", s, peer, t * (d + 2 * k) + t * d)
                add("hier_static", s, peer, t * (d + 2 * k) + t * d)
            # intra-node AlltoAllV: the gathered N*T tokens of outer(sl), pairs routed to node sn
            gathered = np.concatenate([idx[on * local + sl] for on in range(n_nodes)], 0).reshape(-1)
            owner = gathered // el
            for dl in range(local):
                dst = sn * local + dl
                pairs = int((owner == dst).sum())
                add("hier_exact", s, dst, 2 * pairs * d)
                add("hier_static", s, dst, 2 * el * n_nodes * t * d)
    mult = 2 if backward else 1
    out = {}
    for key, v in acc.items():
        inter, intra = v["inter_node"] * mult, v["intra_node"] * mult
        out[key] = {"inter_node": inter, "intra_node": intra, "total": inter + intra}
    out["meta"] = {"members": members, "nodes": n_nodes, "per_node": local, "experts": num_experts,
                   "top_k": int(np.asarray(per_layer[0][0]).shape[1]), "tokens_per_rank": int(
                       np.asarray(per_layer[0][0]).shape[0]), "hidden": d, "bytes_per_elem": b,
                   "moe_layers": n_layers, "backward_included": backward}
    return out


def expected_comm_volume(tokens: int, hidden: int, num_experts: int, top_k: int, members: int, per_node: int,
                         bytes_per_elem: int = 2) -> dict:
    """Expected bytes one rank sends per MoE layer (forward only, exact counts) under uniform random routing
    (k distinct experts per token). Useful for real layouts (e.g. the 718B: EP 32 = 4 nodes x 8)."""
    n_nodes = members // per_node
    d, k, t, b = hidden, top_k, tokens, bytes_per_elem
    remote_node_frac = (members - per_node) / members
    same_node_other_rank = (per_node - 1) / members
    flat_inter = 2 * t * k * remote_node_frac * d * b
    flat_intra = 2 * t * k * same_node_other_rank * d * b
    hier_inter = (n_nodes - 1) * t * ((d + 2 * k) + d) * b
    # intra: of the N*T gathered tokens, pairs on my node owned by another local rank
    hier_intra = 2 * n_nodes * t * k * (per_node - 1) / members * d * b
    return {"flat": {"inter_node": flat_inter, "intra_node": flat_intra},
            "hierarchical": {"inter_node": hier_inter, "intra_node": hier_intra},
            "inter_node_ratio_hier_over_flat": hier_inter / flat_inter if flat_inter else math.nan}


__all__ = ["FlatEPDispatcher", "HierarchicalEPDispatcher", "comm_volume", "expected_comm_volume"]
