"""Communication volumes and times: TP collectives, EP all-to-all (flat / hierarchical), PP p2p, DP reduction.

Cost model (alpha-beta with a message-size efficiency curve per link class, see hardware.py)::

    all-gather / reduce-scatter over n ranks of a total tensor of B bytes:
        t = (n-1)/n * B / bw_eff(B/n) + (n-1) * latency
    all-reduce = reduce-scatter + all-gather                     (ring / mesh algorithm, bus-bandwidth optimal)
    p2p of B bytes:  t = B / bw_eff(B) + latency

``bw_eff`` is the link bandwidth times its efficiency at that message size. A group that fits in one node uses
the intra-node link (for a ``mesh`` node only n-1 of the D-1 links of a device serve an n-rank group); a group
that spans nodes is limited by the per-device NIC (inter-node link).

EP all-to-all (one direction = dispatch *or* combine) for a device that owns ``T`` tokens, each sent to k
experts spread uniformly over the W ranks of the expert-parallel group, n_loc of which share its node::

    flat:          rows = T*k;   intra bytes = rows*(n_loc-1)/W * h*b;   inter bytes = rows*(W-n_loc)/W * h*b
                   t = max(intra / bw_intra, inter / bw_inter) + latency      (the two link classes run in parallel)
    hierarchical:  a token crosses the slow link once per remote node that holds at least one of its experts:
                   D = (N_g - 1) * (1 - P_none),  P_none = prod_{i<k} (E - E_node - i) / (E - i)
                   (N_g nodes in the group, E_node = E / N_g experts per node; group-limited routing bounds D,
                   ``expected_remote_nodes``), then is spread inside the node:
                   inter bytes = T*D*h*b,   intra bytes = T*k*h*b*(n_loc-1)/n_loc,   t = inter/bw + intra/bw
                   (the inter-node AllGather stage precedes the intra-node all-to-all stage)

The busiest device receives ``expert_imbalance`` times the mean; the all-to-all finishes with it.

Context parallelism (CP, ``parallel.cp = c``): the sequence of a micro-batch is split over c ranks (load-balanced
causal chunking, 2c chunks, so every rank does 1/c of the attention work); each rank owns ``tok = mbs*seq/c``
tokens and must see the K/V of all c chunks. Per layer, micro-batch and device, the K/V chunk a rank owns is::

    GQA / MHA:  B_kv = tok * 2 * max(kv_heads / tp, 1) * head_dim * b    (KV heads replicated when kv_heads < tp)
    MLA:        B_kv = tok * (heads / tp) * (qk_nope + qk_rope + v_head_dim) * b
                (choice: the full per-head K and V after the kv_b up-projection, as Megatron-Core /
                TransformerEngine CP do, not the compressed latent + rope key: exchanging the latent
                (kv_lora_rank + qk_rope) * tok * b bytes would be smaller but makes every rank re-run kv_b on
                each received chunk, which is not what those implementations do)

``sim.cp_algorithm: ring`` (pass-KV ring attention; the default): the chunks travel round the ring in c-1 p2p
steps per attention forward; step i sends one chunk to the next rank while the attention of the local queries
against the chunk received at step i-1 runs, so per step the exposed time is the part of the transfer the chunk's
attention does not cover. The backward runs a second ring: K/V again plus the accumulated dK/dV (same dtype and
size), i.e. 2 B_kv per step::

    t_step_f = p2p(B_kv),   t_step_b = p2p(2 B_kv),   A_f = attention-core forward time of the layer, A_b = 2.5 A_f
    cp_exposed_fwd = (c-1) * max(0, t_step_f - A_f / c)
    cp_exposed_bwd = (c-1) * max(0, t_step_b - A_b / c)
    bytes sent per device and layer = (c-1) * B_kv (fwd) + (c-1) * 2 B_kv (bwd)

``sim.cp_algorithm: allgather`` (Llama 3's all-gather based CP, arXiv 2407.21783): all-gather the K/V of the c
chunks before the attention (not overlapped), and in the backward all-gather them again + reduce-scatter dK/dV::

    cp_exposed_fwd = AG(c * B_kv over c ranks),   cp_exposed_bwd = 2 * AG(c * B_kv over c ranks)

Either way the CP group is c ranks at stride tp (rank order tp < cp < dp): inside one node when tp*c <= devices per
node, else the ring / all-gather is limited by the inter-node link (every hop of a synchronous ring waits for the
slowest). c = 1 gives zero. The CP ranks hold the same (dense) parameters, so they join the DP gradient reduction:
``dp_reduce`` reduces dense gradients over dp*c ranks (already so before CP communication was modelled).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..config.schema import Config
from .hardware import HardwareProfile, Link
from ..parallel.dims import ParallelDims


def _group_link(hw: HardwareProfile, n: int, spans_nodes: bool) -> tuple[Link, float]:
    """(link, bandwidth scale) for an n-rank group."""
    if spans_nodes:
        return hw.inter_node, 1.0
    link = hw.intra_node
    if link.topology == "mesh" and hw.devices_per_node > 1:
        return link, min(1.0, (n - 1) / (hw.devices_per_node - 1))
    return link, 1.0


def allgather_time(total_bytes: float, n: int, hw: HardwareProfile, spans_nodes: bool) -> float:
    """All-gather (or reduce-scatter) of a tensor of ``total_bytes`` (the gathered size) over n ranks."""
    if n <= 1 or total_bytes <= 0:
        return 0.0
    link, scale = _group_link(hw, n, spans_nodes)
    bw = link.effective_bandwidth(total_bytes / n) * scale
    return (n - 1) / n * total_bytes / bw + (n - 1) * link.latency


def allreduce_time(total_bytes: float, n: int, hw: HardwareProfile, spans_nodes: bool) -> float:
    return 2.0 * allgather_time(total_bytes, n, hw, spans_nodes)


def p2p_time(nbytes: float, hw: HardwareProfile, spans_nodes: bool) -> float:
    if nbytes <= 0:
        return 0.0
    link = hw.inter_node if spans_nodes else hw.intra_node
    return nbytes / link.effective_bandwidth(nbytes) + link.latency


def ep_group_geometry(layout: ParallelDims, devices_per_node: int) -> tuple[int, int]:
    """(n_loc, n_nodes): EP-group members sharing a node with a given member, and nodes the group spans
    (members are ``etp`` local ranks apart: ``ParallelDims.ep_node_span``)."""
    return layout.ep_node_span(devices_per_node)


def expected_remote_nodes(num_experts: int, top_k: int, n_nodes: int, groups: int = 1, group_topk: int = 0) -> float:
    """Expected number of *other* nodes holding at least one of a token's k experts.

    Uniform routing: ``(N - 1) * (1 - P_none)``, P_none = prod_{i<k} (E - E_node - i) / (E - i).

    Group-limited routing (``moe.router_num_groups`` G, ``router_group_topk`` g; experts in consecutive groups, EP
    ranks and nodes in expert order):

    * G a multiple of N (every group inside one node, G/N per node; DeepSeek-V3: 8 groups on 8 nodes): the g
      groups are taken uniformly, and each of them receives at least one of the k experts (groups are ranked by
      their two best scores, so a chosen group holds some of the token's highest scores; choice, written down):
      a node is touched iff one of its groups is chosen, ``(N - 1) * (1 - C(G - G/N, g) / C(G, g))``, and never
      more than uniform routing of the k experts would touch;
    * N a multiple of G (a group spans N/G nodes): uniform routing over the g*N/G nodes of the chosen groups, the
      own node among them with probability g/G: ``(g N/G - g/G) * (1 - P_none)`` over those g E/G experts;
    * otherwise (groups and nodes not aligned) uniform routing, which over-counts.
    """
    if n_nodes <= 1:
        return 0.0

    def uniform(experts: float, nodes: float) -> float:
        e_node = experts / nodes
        p_none = 1.0
        for i in range(top_k):
            p_none *= max(0.0, (experts - e_node - i) / (experts - i))
        return 1.0 - p_none

    unlimited = (n_nodes - 1) * uniform(num_experts, n_nodes)
    if groups > 1 and 0 < group_topk < groups:
        if groups % n_nodes == 0:
            per_node = groups // n_nodes
            touched = 1.0 - math.comb(groups - per_node, group_topk) / math.comb(groups, group_topk)
            return min((n_nodes - 1) * touched, unlimited)
        if n_nodes % groups == 0:
            chosen_nodes = group_topk * n_nodes // groups
            return (chosen_nodes - group_topk / groups) * uniform(group_topk * num_experts / groups, chosen_nodes)
    return unlimited


@dataclass
class A2AVolume:
    """Bytes one device sends in one all-to-all direction (mean device)."""

    intra_bytes: float
    inter_bytes: float
    hierarchical: bool


def alltoall_volume(tokens: float, hidden: int, top_k: int, num_experts: int, width: int, n_loc: int,
                    bytes_per_elem: float, hierarchical: bool, groups: int = 1, group_topk: int = 0) -> A2AVolume:
    """Per-device dispatch (or combine) volume, flat or hierarchical (formulas in the module docstring; ``groups``
    / ``group_topk``: group-limited routing, see ``expected_remote_nodes``; the flat volume does not change, each
    (token, expert) pair still lands on the own node with probability n_loc / W)."""
    row = hidden * bytes_per_elem
    n_nodes = max(1, width // max(n_loc, 1))
    if hierarchical and n_nodes > 1:
        d = expected_remote_nodes(num_experts, top_k, n_nodes, groups, group_topk)
        inter = tokens * d * row
        intra = tokens * top_k * row * (n_loc - 1) / n_loc
        return A2AVolume(intra, inter, True)
    rows = tokens * top_k
    return A2AVolume(rows * (n_loc - 1) / width * row, rows * (width - n_loc) / width * row, False)


def alltoall_time(vol: A2AVolume, n_loc: int, hw: HardwareProfile) -> float:
    link_i, scale_i = _group_link(hw, n_loc, False)
    t_intra = vol.intra_bytes / (link_i.effective_bandwidth(vol.intra_bytes / max(n_loc, 1)) * scale_i) \
        if vol.intra_bytes > 0 else 0.0
    t_inter = vol.inter_bytes / hw.inter_node.effective_bandwidth(vol.inter_bytes) if vol.inter_bytes > 0 else 0.0
    lat = (hw.intra_node.latency if vol.intra_bytes else 0.0) + (hw.inter_node.latency if vol.inter_bytes else 0.0)
    if vol.hierarchical:
        return t_intra + t_inter + lat
    return max(t_intra, t_inter) + lat


@dataclass
class LayerComm:
    """Communication of one layer for one micro-batch, forward direction (backward moves the same bytes)."""

    tp_attn: float = 0.0      # TP all-gather + reduce-scatter around attention
    tp_mlp: float = 0.0       # ... around the dense FFN / shared expert / MoE input
    ep_a2a: float = 0.0       # dispatch + combine (busiest device)
    ep_dispatch: float = 0.0  # forward dispatch alone (FP8 rows with sim.precision fp8)
    ep_combine: float = 0.0   # forward combine alone; each backward all-to-all moves gradients of this size
    tp_expert: float = 0.0    # expert-TP gather / scatter of routed rows (etp > 1)
    a2a_bytes: float = 0.0    # bytes sent per device (dispatch + combine, mean device)


def cp_kv_bytes(cfg: Config, layout: ParallelDims, bytes_per_elem: float) -> float:
    """B_kv: bytes of the K/V chunk one CP rank (one TP rank of it) owns for one layer and micro-batch."""
    m, tp, tok = cfg.model, layout.tp, layout.tokens_per_micro
    if m.attention_type == "mla":
        return tok * (m.num_heads / tp) * (m.qk_nope_head_dim + m.qk_rope_head_dim + m.v_head_dim) * bytes_per_elem
    kvh = m.num_heads if m.attention_type == "mha" else m.num_kv_heads
    return tok * 2 * max(kvh / tp, 1.0) * m.attn_head_dim * bytes_per_elem


@dataclass
class CPComm:
    """Context-parallel K/V exchange of one layer for one micro-batch on one device (module docstring).

    ``ring``: ``step_fwd`` / ``step_bwd`` are the times of one ring step (p2p of B_kv / 2 B_kv), ``steps`` = c-1.
    ``allgather``: ``step_fwd`` / ``step_bwd`` are the whole (exposed) forward / backward collectives, steps = 1.
    """

    cp: int = 1
    algorithm: str = "ring"
    kv_bytes: float = 0.0
    steps: int = 0
    step_fwd: float = 0.0
    step_bwd: float = 0.0

    @property
    def bytes_sent(self) -> float:
        """Bytes one device sends per layer and micro-batch, forward + backward."""
        if self.cp <= 1:
            return 0.0
        if self.algorithm == "allgather":       # AG fwd, AG + RS bwd: (c-1)/c of the c*B_kv gathered tensor each
            return 3.0 * (self.cp - 1) * self.kv_bytes
        return 3.0 * self.steps * self.kv_bytes  # (c-1) B_kv fwd + (c-1) 2 B_kv bwd

    def exposed(self, attn_fwd: float) -> tuple[float, float]:
        """(forward, backward) exposed seconds given the layer's attention-core forward time ``attn_fwd``."""
        if self.cp <= 1:
            return 0.0, 0.0
        if self.algorithm == "allgather":
            return self.step_fwd, self.step_bwd
        c = self.cp
        return (self.steps * max(0.0, self.step_fwd - attn_fwd / c),
                self.steps * max(0.0, self.step_bwd - 2.5 * attn_fwd / c))


def cp_comm(cfg: Config, layout: ParallelDims, hw: HardwareProfile, bytes_per_elem: float) -> CPComm:
    """K/V exchange of one layer for one micro-batch over the CP group (formulas in the module docstring)."""
    c = layout.cp
    algo = cfg.sim.cp_algorithm
    if c <= 1:
        return CPComm(1, algo)
    b = cp_kv_bytes(cfg, layout, bytes_per_elem)
    spans = layout.tp * c > hw.devices_per_node
    if algo == "allgather":
        ag = allgather_time(c * b, c, hw, spans)
        return CPComm(c, algo, b, 1, ag, 2.0 * ag)
    if algo != "ring":
        raise ValueError(f"sim.cp_algorithm: unknown {algo!r} (ring | allgather)")
    return CPComm(c, algo, b, c - 1, p2p_time(b, hw, spans), p2p_time(2.0 * b, hw, spans))


class CommModel:
    def __init__(self, cfg: Config, layout: ParallelDims, hw: HardwareProfile):
        self.cfg, self.L, self.hw = cfg, layout, hw
        self.act_bytes = 4.0 if cfg.sim.precision == "fp32" else 2.0
        self.dispatch_bytes = 1.0 if cfg.sim.precision == "fp8" else self.act_bytes
        self.gather_bytes = 1.0 if cfg.sim.precision == "fp8" else self.act_bytes   # TP all-gather (tp_pair)

    def tp_pair(self, gather_width: float | None = None) -> float:
        """All-gather of a [tok, gather_width] activation (default: h) + reduce-scatter of the [tok, h] output
        over the TP group (sequence parallel; the backward pass moves the same bytes the other way).

        FP8 runs gather the GEMM input already cast to FP8 (1 byte per element) and, in the backward, the FP8
        output gradient of the row-parallel GEMM (Transformer Engine: ``LayerNormLinear`` / ``Linear`` cast
        before ``gather_along_first_dim``; ``grad_output_preprocess`` "FP8 case with gather"); the
        reduce-scatters carry the BF16 GEMM outputs / input gradients."""
        L = self.L
        if L.tp <= 1:
            return 0.0
        h = self.cfg.model.hidden_size
        g = h if gather_width is None else gather_width
        gb = L.tokens_per_micro * self.gather_bytes
        b = L.tokens_per_micro * self.act_bytes
        spans = L.tp > self.hw.devices_per_node
        return allgather_time(gb * g, L.tp, self.hw, spans) + allgather_time(b * h, L.tp, self.hw, spans)

    def attn_gather_width(self) -> float:
        """Width of what the attention block all-gathers over the TP group (sequence parallel).

        MHA / GQA: the [tok, h] input of the column-parallel QKV projection. MLA: the down-projections run on
        the rank's sequence shard (compute.py), so the gathered tensors are the latents q_c (q_lora_rank; the
        hidden states when q_lora_rank = 0, for the column-parallel q projection), c_kv (kv_lora_rank) and the
        shared k_rope (qk_rope_head_dim), as in MindSpeed-LLM's MLA (ColumnParallelLinear up-projections with
        sequence parallelism + gather of k_pos_emb) and Megatron-Core's MLASelfAttention.
        """
        m = self.cfg.model
        if m.attention_type != "mla":
            return float(m.hidden_size)
        q = m.q_lora_rank if m.q_lora_rank > 0 else m.hidden_size
        return float(q + m.kv_lora_rank + m.qk_rope_head_dim)

    def layer(self, moe_layer: bool) -> LayerComm:
        cfg, L, hw = self.cfg, self.L, self.hw
        c = LayerComm()
        pair = self.tp_pair()
        c.tp_attn = self.tp_pair(self.attn_gather_width())
        if not moe_layer:
            c.tp_mlp = pair
            return c
        e, h = cfg.moe, cfg.model.hidden_size
        c.tp_mlp = pair if (e.num_shared_experts or L.etp > 1) else 0.0
        n_loc, _ = ep_group_geometry(L, hw.devices_per_node)
        owned = L.tokens_per_micro / L.tp                       # tokens this rank routes (sequence parallel)
        if L.ep_width > 1 and cfg.sim.moe_impl == "training_cpu":
            c.ep_dispatch, c.ep_combine, c.a2a_bytes = self.reference_alltoall(owned)
            c.ep_a2a = c.ep_dispatch + c.ep_combine
        elif L.ep_width > 1:
            groups = (e.router_num_groups, e.router_group_topk)
            disp = alltoall_volume(owned, h, e.top_k, e.num_experts, L.ep_width, n_loc, self.dispatch_bytes,
                                   L.hierarchical_alltoall, *groups)
            comb = alltoall_volume(owned, h, e.top_k, e.num_experts, L.ep_width, n_loc, self.act_bytes,
                                   L.hierarchical_alltoall, *groups)
            imb = cfg.sim.expert_imbalance
            c.ep_dispatch = imb * alltoall_time(disp, n_loc, hw)
            c.ep_combine = imb * alltoall_time(comb, n_loc, hw)
            c.ep_a2a = c.ep_dispatch + c.ep_combine
            c.a2a_bytes = disp.intra_bytes + disp.inter_bytes + comb.intra_bytes + comb.inter_bytes
        if L.etp > 1:
            # the ETP group gathers its members' routed rows before the experts and reduce-scatters after
            rows = L.tokens_per_micro * L.routed_rows(e.top_k, e.expert_ffn_hidden)[0] * h * self.act_bytes
            c.tp_expert = cfg.sim.expert_imbalance * 2.0 * allgather_time(rows, L.etp, hw,
                                                                          L.etp > hw.devices_per_node)
        return c

    def reference_alltoall(self, tokens: float) -> tuple[float, float, float]:
        """(dispatch s, combine s, bytes) of one MoE layer's forward on the explicit CPU path (``sim.moe_impl:
        training_cpu``, ``pangu_ms/parallel/ep_dispatcher.py`` + ``comm.py``), where every collective is built
        from AllReduce (AllGather on the world group) and the buffers are static and dropless:

            flat:          dispatch and combine each move the [E*C, h] slot buffer (C = T, the rank's tokens)
                           through a gather over the W EP members: AllGather of W x buffer on the world group,
                           else AllReduce of the W x buffer (one-hot slot r holds the member's buffer);
            hierarchical:  dispatch = gather of [T, h + 2k] (x | weights | ids) over the N nodes + the intra-node
                           gather of the [E*T, h] buffer over the L node members (none when L = 1); combine =
                           the intra-node gather + ReduceScatter (an AllReduce of [N*T, h]) over the nodes.

        Nothing overlaps (the graph waits for each collective); routing imbalance does not change static
        buffers. The backward's collectives move the same bytes (the adjoints in comm.py)."""
        cfg, L, hw = self.cfg, self.L, self.hw
        e, h, b = cfg.moe, cfg.model.hidden_size, self.act_bytes
        w = L.ep_width
        buf = e.num_experts * tokens * h * b

        def gather(each: float, n: int) -> float:
            if n <= 1:
                return 0.0
            spans = n > hw.devices_per_node
            if n == L.world:
                return allgather_time(n * each, n, hw, spans)
            return allreduce_time(n * each, n, hw, spans)

        if not L.hierarchical_alltoall:
            t = gather(buf, w)
            return t, t, 2.0 * w * buf
        n_loc, n_nodes = L.ep_node_span()          # the explicit path's nodes: parallel.ranks_per_node
        inner = gather(buf, n_loc)
        outer = gather(tokens * (h + 2 * e.top_k) * b, n_nodes)
        scatter = allreduce_time(n_nodes * tokens * h * b, n_nodes, hw, n_nodes > 1) if n_nodes > 1 else 0.0
        nbytes = 2.0 * n_loc * buf * (n_loc > 1) + n_nodes * tokens * ((h + 2 * e.top_k) + h) * b
        return outer + inner, inner + scatter, nbytes

    def cp(self) -> CPComm:
        """Context-parallel K/V exchange of one layer (identical for dense and MoE layers: attention only)."""
        return cp_comm(self.cfg, self.L, self.hw, self.act_bytes)

    def pp_p2p(self) -> float:
        """One activation (or gradient) transfer between adjacent virtual stages, sequence-parallel sharded."""
        L = self.L
        if L.pp <= 1:
            return 0.0
        b = L.tokens_per_micro * self.cfg.model.hidden_size * self.act_bytes / L.tp
        spans = L.dp * L.tp * L.cp >= self.hw.devices_per_node
        return p2p_time(b, self.hw, spans)

    def dp_reduce(self, dense_params: float, expert_params: float) -> float:
        """Gradient reduction of the per-device parameter shards (+ ZeRO parameter all-gather).

        all-reduce of the gradients over the DP group (dense params: dp*cp ranks; expert params: the expert-DP
        group). With ``optimizer_shard``: reduce-scatter of gradients + all-gather of bf16 parameters, i.e.
        ``(n-1)/n * (grad + param bytes)`` each way.
        """
        L, hw = self.L, self.hw
        gb = 4.0 if self.cfg.sim.grad_reduce_dtype == "fp32" else 2.0
        pb = self.act_bytes
        total = 0.0
        # DP ranks stride tp (dense; cp folded into the group), expert-DP ranks stride ep_width * etp
        for params, n, stride in ((dense_params, L.dp * L.cp, L.tp), (expert_params, L.edp, L.expert_shards)):
            if n <= 1 or params <= 0:
                continue
            spans = n * stride > hw.devices_per_node
            if L.optimizer_shard:
                total += allgather_time(params * gb, n, hw, spans) + allgather_time(params * pb, n, hw, spans)
            else:
                total += allreduce_time(params * gb, n, hw, spans)
        return total
