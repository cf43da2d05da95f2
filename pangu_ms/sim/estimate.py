"""End-to-end estimate of one training step: time, breakdown, MFU and per-device memory.

Assembly (every term's formula is in the module named):

1. The model is a sequence of blocks: embedding, the decoder layers, final norm + LM head, and per MTP depth the
   MTP projection, its decoder layer and its (shared) head. Each block type is costed once per micro-batch on
   one device: compute (compute.py), communication (comm.py), stored activations (memory.py).
2. Per block and micro-batch, the time on the critical path is
       fwd + bwd compute + recompute + exposed TP collectives + exposed EP all-to-all + exposed CP K/V exchange
   * TP collectives (fwd and bwd): exposed unless ``tp_comm_overlap``, then max(c / chunks, c - gemm) where
     gemm is the GEMM time the collective is fused with.
   * EP all-to-all (dispatch + combine, forward and backward): overlap.py. Without ``ep_overlap`` all of it is
     exposed; with it, passes paired with another micro-batch's (steady state) hide it behind that pass's compute
     (four stages, each slowed by the profile's ``comm_compute_slowdown`` while communication runs), unpaired
     passes (warm-up / cool-down: schedule.unpaired_fraction, per stage) only behind the shared expert and the
     routed weight gradient. DualPipe always overlaps.
   * CP K/V exchange (comm.py, CP section): ``ring`` hides each of the c-1 p2p steps behind the attention of one
     chunk (exposed = (c-1) max(0, step - attention/c), fwd and bwd); ``allgather`` is exposed.
   * recompute: ``selective`` re-runs element-wise ops, ``moe_fine`` also the routed-expert fc1, ``full``
     re-runs the whole forward incl. its communication (for ``recompute_fraction`` of the layers).
   * activation swap: 2 x swapped bytes / host bandwidth per micro-batch, exposed beyond the block's compute.
3. Blocks are split into pp * vpp virtual stages by ``parallel.pipeline_split``, the function training's plan
   uses (parallel/split.py): balanced layer counts, explicit ``parallel.layers_per_virtual_stage``, or from this
   simulator's per-item costs (``Simulator.item_costs``: a decoder layer or MTP module, the embedding folded
   into layer 0 and the head into the last item before MTP) time-balanced / memory-aware (the fastest split
   whose every device fits, as a team sets ``num_layer_list``).
   Physical stage s holds chunks s, s+p, ... and adds 2 PP p2p transfers per chunk and micro-batch.
4. step = m * T_max + bubble_units * T_mean + exposed DP reduction + optimizer step + optimizer swap, where T is
   the per-micro-batch time of a physical stage. DP reduction (comm.dp_reduce) overlaps, with ``dp_overlap``,
   the last micro-batch's backward (and, with ZeRO, the next step's first forward).
5. MFU = model FLOPs per token (stats.py ``train_flops_per_token``, MTP included, full-square attention, no
   recompute) x tokens per step / (step time x devices x peak). The peak is the profile's ``mfu_peak_dtype``
   dense peak and is printed with every MFU.
6. Memory per device = max over devices of model states + in-flight activations (x (1 - swap)) + transients +
   the profile's reserve, over the chunks the device holds (schedule.device_chunks); ``fits`` = memory <= usable
   HBM.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..config.recompute import AUTO_ORDER, FULL, parse_recompute, recompute_label
from ..config.schema import Config
from ..model.stats import attention_params, compute_stats, dense_mlp_params, layer_norm_params, moe_params
from .comm import CommModel
from .compute import ComputeModel, module_recompute_time
from .hardware import HardwareProfile, load_hardware
from .kernels import optimizer_step_kernels
from ..parallel.dims import ParallelDims
from ..parallel.split import ItemCosts, pipeline_split
from .layout import resolve_layout
from .memory import (a2a_buffer_bytes, backward_working_set_bytes, head_transient_bytes, layer_activation_bytes,
                     model_state_bytes, norm_kept_elems)
from .overlap import EPPhases
from .schedule import bubble_units, device_chunks, stage_sums, unpaired_fraction

GB = 1024 ** 3


@dataclass
class Block:
    """Cost of one block for one micro-batch on one device."""

    name: str
    fwd: float = 0.0
    bwd: float = 0.0
    recompute: float = 0.0
    tp_exposed: float = 0.0
    ep_exposed: float = 0.0
    ep_total: float = 0.0
    ep_paired: float = 0.0          # exposed EP all-to-all per micro-batch when its passes are paired / alone
    ep_alone: float = 0.0
    ep_comm_paired: float = 0.0     # the transfer part of those (without the contention cost)
    ep_comm_alone: float = 0.0
    ep_recompute: float = 0.0       # exposed EP all-to-all of one recomputed forward (never paired, overlap.py)
    swap_exposed: float = 0.0
    cp_exposed: float = 0.0         # context-parallel K/V exchange (fwd + bwd) not hidden behind attention
    act_bytes: float = 0.0          # stored per micro-batch
    transient: float = 0.0          # one micro-batch working set
    dense_params: float = 0.0
    expert_params: float = 0.0
    model_flops: float = 0.0
    act_modules: dict = field(default_factory=dict)

    @property
    def time(self) -> float:
        return (self.fwd + self.bwd + self.recompute + self.tp_exposed + self.ep_exposed + self.swap_exposed
                + self.cp_exposed)


@dataclass
class Estimate:
    """Result of :func:`estimate`; ``as_dict()`` is the CLI's JSON."""

    mfu: float
    peak_flops_per_device: float
    peak_dtype: str
    step_time_s: float
    tokens_per_s: float
    tokens_per_s_per_device: float
    memory_per_device_gb: float
    hbm_usable_gb: float
    fits: bool
    model_flops_per_token: float
    devices: int
    layout: dict
    breakdown_s: dict
    memory_gb: dict
    stage_times_s: list
    details: dict
    config: Config | None = None    # the resolved recipe estimated (sim/recipe.py writes it for training)
    mfu_by_peak: dict = field(default_factory=dict)   # {dtype: MFU against that dtype's dense peak}

    def as_dict(self) -> dict:
        return {
            "mfu": self.mfu,
            "mfu_by_peak": {f"mfu_vs_{d}_peak": v for d, v in self.mfu_by_peak.items()},
            "peak_flops_per_device": self.peak_flops_per_device,
            "peak_dtype": self.peak_dtype,
            "step_time_s": self.step_time_s,
            "tokens_per_s": self.tokens_per_s,
            "tokens_per_s_per_device": self.tokens_per_s_per_device,
            "memory_per_device_gb": self.memory_per_device_gb,
            "hbm_usable_gb": self.hbm_usable_gb,
            "fits": self.fits,
            "model_flops_per_token": self.model_flops_per_token,
            "devices": self.devices,
            "layout": self.layout,
            "breakdown": self.breakdown_s,
            "memory_breakdown_gb": self.memory_gb,
            "stage_times_s": self.stage_times_s,
            "details": self.details,
        }


def _tp_exposed(c: float, gemm: float, cfg: Config) -> float:
    if c <= 0:
        return 0.0
    if not cfg.sim.tp_comm_overlap:
        return c
    n = max(1, cfg.sim.tp_overlap_chunks)
    return max(c / n, c - gemm)


class Simulator:
    """Costs blocks once per (config, layout, hardware) and assembles the step."""

    def __init__(self, cfg: Config, layout: ParallelDims, hw: HardwareProfile):
        hw = hw.per_rank(min(layout.world, hw.devices_per_node))     # ranks sharing a CPU host (hardware.py)
        self.cfg, self.L, self.hw = cfg, layout, hw
        self.cm = ComputeModel(cfg, layout, hw)
        self.comm = CommModel(cfg, layout, hw)
        L = layout
        self.unpaired = [unpaired_fraction(L.pipeline_schedule, L.pp, L.micro_batches, L.vpp, st)
                         for st in range(L.pp)]
        # the stage split sees one time per block: the largest unpaired share (stage 0, whose time the
        # time-balanced split then equalises with the others'); run() corrects every stage to its own share
        self.unpaired_split = max(self.unpaired)

    # --------------------------------------------------------------- blocks
    def _layer_block(self, moe_layer: bool, name: str, recompute=None, full_fraction=None) -> Block:
        """``recompute`` / ``full_fraction``: this block's granularity (default ``sim.recompute`` and its
        fraction; the MTP layer under a module list containing ``mtp``: ``full``, 1.0)."""
        cfg, s = self.cfg, self.cfg.sim
        c = self.cm.layer(moe_layer)
        lc = self.comm.layer(moe_layer)
        b = Block(name, fwd=c.fwd, bwd=c.bwd, model_flops=c.model_flops)
        # TP collectives: forward pair + backward pair around each sub-block
        tp_f = (_tp_exposed(lc.tp_attn, c.gemm_time_attn, cfg) + _tp_exposed(lc.tp_mlp, c.gemm_time_mlp, cfg)
                + _tp_exposed(lc.tp_expert, c.gemm_time_mlp, cfg))
        tp_b = (_tp_exposed(lc.tp_attn, 2 * c.gemm_time_attn, cfg) + _tp_exposed(lc.tp_mlp, 2 * c.gemm_time_mlp, cfg)
                + _tp_exposed(lc.tp_expert, 2 * c.gemm_time_mlp, cfg))
        b.tp_exposed = tp_f + tp_b
        # context parallelism: K/V ring (or all-gather) around the attention core (comm.py, CP section)
        attn_core = sum(t for op, t in c.ops if op.name == "attn.core")
        cp_f, cp_b = self.comm.cp().exposed(attn_core)
        b.cp_exposed = cp_f + cp_b
        # EP all-to-all (overlap.py): exposed per micro-batch when paired and when alone; run() applies each
        # stage's own unpaired share (schedule.unpaired_fraction), the block time uses the largest
        if lc.ep_a2a > 0:
            ph = EPPhases(attn_fwd=c.fwd - c.expert_fwd, attn_bwd=c.bwd - c.expert_bwd, expert_fwd=c.expert_fwd,
                          expert_bwd=c.expert_bwd, shared_fwd=c.shared_fwd, shared_bwd=c.shared_bwd,
                          routed_wgrad=c.routed_wgrad, dispatch_fwd=lc.ep_dispatch, combine_fwd=lc.ep_combine,
                          dispatch_bwd=lc.ep_combine, combine_bwd=lc.ep_combine)
            on = s.ep_overlap or self.L.pipeline_schedule == "dualpipe"
            k = self.hw.comm_compute_slowdown
            b.ep_total = ph.comm_total
            b.ep_paired = ph.exposed(on, s.ep_overlap_scope, 0.0, k)
            b.ep_alone = ph.exposed(on, s.ep_overlap_scope, 1.0, k)
            b.ep_comm_paired = ph.exposed_comm(on, s.ep_overlap_scope, 0.0, k)
            b.ep_comm_alone = ph.exposed_comm(on, s.ep_overlap_scope, 1.0, k)
            b.ep_exposed = (1.0 - self.unpaired_split) * b.ep_paired + self.unpaired_split * b.ep_alone
            b.ep_recompute = ph.exposed_recompute(on, k)
        # recompute
        spec = parse_recompute(s.recompute if recompute is None else recompute, "sim.recompute", allow_auto=False)
        rc = recompute_label(spec)
        frac = s.recompute_fraction if full_fraction is None else full_fraction
        if rc not in ("none", "selective", "moe_fine", FULL):             # a module list: per module
            b.recompute = frac * module_recompute_time(c, spec)
        elif rc == "selective":
            b.recompute = c.recompute_selective
        elif rc == "moe_fine":
            b.recompute = c.recompute_selective + c.recompute_expert
        elif rc == "full":
            b.recompute = frac * (c.fwd + tp_f + cp_f + b.ep_recompute)
        # activations
        mods = layer_activation_bytes(cfg, self.L, moe_layer, recompute, full_fraction)
        b.transient = (mods.pop("_recompute_working_set", 0.0) + backward_working_set_bytes(cfg, self.L)
                       + (a2a_buffer_bytes(cfg, self.L) if moe_layer else 0.0))
        b.act_modules = mods
        b.act_bytes = sum(mods.values())
        if s.swap_activations > 0:
            move = 2.0 * s.swap_activations * b.act_bytes / self.hw.host_bandwidth
            b.swap_exposed = max(0.0, move - (c.fwd + c.bwd))
        # parameters
        attn = attention_params(cfg) + layer_norm_params(cfg)
        if moe_layer:
            p = moe_params(cfg)
            b.dense_params = attn + p["router"] + p["expert_bias"] + p["shared_experts"]
            b.expert_params = p["routed_experts"]
        else:
            b.dense_params = attn + dense_mlp_params(cfg)
        return b

    def _simple_block(self, cost, name: str, dense_params: float, act_per_token: float = 0.0,
                      transient: float = 0.0) -> Block:
        b = Block(name, fwd=cost.fwd, bwd=cost.bwd, model_flops=cost.model_flops, dense_params=dense_params,
                  transient=transient)
        bpe = 4.0 if self.cfg.sim.precision == "fp32" else 2.0
        b.act_bytes = act_per_token * self.L.tokens_per_micro * bpe
        b.act_modules = {name: b.act_bytes}
        if self.cfg.sim.recompute in ("selective", "moe_fine", "full"):
            b.recompute = cost.recompute_selective
        return b

    def blocks(self) -> list:
        cfg, m = self.cfg, self.cfg.model
        h, v, t = m.hidden_size, m.vocab_size, self.L.tp
        n_moe = (m.num_layers - m.num_dense_layers) if cfg.moe.enabled else 0
        dense = self._layer_block(False, "dense_layer") if m.num_layers - n_moe else None
        moe = self._layer_block(True, "moe_layer") if n_moe else None
        emb = self._simple_block(self.cm.embedding(), "embedding", v * h, act_per_token=0.0)
        head_t = head_transient_bytes(cfg, self.L)
        norm_kept = norm_kept_elems(cfg, h / t)        # per RMSNorm outside the layers (reference path)
        head = self._simple_block(self.cm.head(), "head", (0 if m.tie_embeddings else v * h) + h,
                                  act_per_token=2 * h / t + norm_kept, transient=head_t)
        out = [emb] + [dense] * (m.num_layers - n_moe) + [moe] * n_moe + [head]
        if m.mtp_depth:
            # MTP keeps its own copy of the input embedding on the last stage (DeepSeek-V3 / Megatron); its
            # head shares the LM head weights
            # ... except under DualPipe, which puts the embedding and the deepest layers on the same device and
            # shares them physically (DeepSeek-V3 sec. 3.2.1)
            emb_copy = 0 if self.L.pipeline_schedule == "dualpipe" else v * h
            proj = self._simple_block(self.cm.mtp_extra(), "mtp_proj", 2 * h + 2 * h * h + h + emb_copy,
                                      act_per_token=4 * h / t + 2 * norm_kept)
            mtp_layer = moe if cfg.moe.enabled else (dense or self._layer_block(False, "dense_layer"))
            rc = parse_recompute(cfg.sim.recompute, "sim.recompute", allow_auto=False)
            if rc != FULL and "mtp" in rc:                                # the whole MTP layer re-run
                mtp_layer = self._layer_block(cfg.moe.enabled, "mtp_layer", FULL, 1.0)
            mtp_head = self._simple_block(self.cm.head("mtp_head"), "mtp_head", 0.0,
                                          act_per_token=2 * h / t + norm_kept, transient=head_t)
            out += [proj, mtp_layer, mtp_head] * m.mtp_depth
        return out

    # --------------------------------------------------------------- stage split and memory
    def _memory_rows(self, blocks: list, bounds: list) -> list:
        """Per device: (total bytes, StateBytes, activation bytes, transient bytes, micro-batches in flight) for the
        blocks split into the chunks ``bounds``; which chunks a device holds, and how many micro-batches of each,
        is schedule.device_chunks."""
        cfg, L, s = self.cfg, self.L, self.cfg.sim

        def per_chunk(attr):
            return [sum(getattr(blocks[i], attr) for i in range(a, e)) for a, e in bounds]

        dense, expert, act = per_chunk("dense_params"), per_chunk("expert_params"), per_chunk("act_bytes")
        trans = [max((blocks[i].transient for i in range(a, e)), default=0.0) for a, e in bounds]
        rows = []
        for held in device_chunks(L.pipeline_schedule, L.pp, L.micro_batches, L.vpp):
            states = model_state_bytes(cfg, L, sum(dense[c] for c, _ in held), sum(expert[c] for c, _ in held))
            a = sum(n * act[c] for c, n in held) * (1.0 - s.swap_activations)
            tr = max(trans[c] for c, _ in held)
            rows.append((states.total + a + tr + self.hw.reserved_bytes, states, a, tr, sum(n for _, n in held)))
        return rows

    def item_of_block(self, blocks: list) -> list:
        """The split item (parallel/split.py ``split_items``: decoder layer i, then MTP module j) of every block:
        the embedding goes with layer 0, final norm + LM head with the last layer (no MTP) or with mtp.0."""
        n_layers, depth = self.cfg.model.num_layers, self.cfg.model.mtp_depth
        out = [0] + list(range(n_layers)) + [n_layers if depth else n_layers - 1]
        out += [n_layers + j for j in range(depth) for _ in range(3)]
        assert len(out) == len(blocks), (len(out), len(blocks))
        return out

    def item_costs(self, blocks: list) -> ItemCosts:
        """Per-item costs for the split: time per micro-batch, model-state, activation and transient bytes."""
        cfg, L, hw = self.cfg, self.L, self.hw
        owner = self.item_of_block(blocks)
        n = owner[-1] + 1
        time, state, act, trans = [0.0] * n, [0.0] * n, [0.0] * n, [0.0] * n
        keep = 1.0 - cfg.sim.swap_activations
        for b, u in zip(blocks, owner):
            time[u] += b.time
            state[u] += model_state_bytes(cfg, L, b.dense_params, b.expert_params).total
            act[u] += b.act_bytes * keep
            trans[u] = max(trans[u], b.transient)
        return ItemCosts(time=time, state_bytes=state, act_bytes=act, transient_bytes=trans,
                         devices=device_chunks(L.pipeline_schedule, L.pp, L.micro_batches, L.vpp),
                         budget=hw.usable_hbm_bytes - hw.reserved_bytes)

    def split(self, blocks: list) -> tuple:
        """(PipelineSplit, block bounds of each virtual stage): ``parallel.pipeline_split`` evaluated by
        parallel/split.py with this simulator's per-item costs, mapped back to blocks."""
        split = pipeline_split(self.cfg, self.item_costs(blocks))
        owner = self.item_of_block(blocks)
        first = {}
        for i, u in enumerate(owner):
            first.setdefault(u, i)
        first[owner[-1] + 1] = len(blocks)
        return split, [(first[a], first[e]) for a, e in split.bounds]

    # --------------------------------------------------------------- step
    def run(self) -> Estimate:
        cfg, L, hw, s = self.cfg, self.L, self.hw, self.cfg.sim
        blocks = self.blocks()
        p, v, m = L.pp, L.vpp, L.micro_batches
        k = p * v
        split, bounds = self.split(blocks)
        p2p = self.comm.pp_p2p()

        def chunk_sum(attr):
            return [sum(getattr(blocks[i], attr) for i in range(a, e)) for a, e in bounds]

        chunk_time = [x + 2.0 * p2p * (p > 1) for x in chunk_sum("time")]
        st_time = stage_sums(chunk_time, p, v)
        st_parts = {a: stage_sums(chunk_sum(a), p, v) for a in
                    ("fwd", "bwd", "recompute", "tp_exposed", "ep_exposed", "swap_exposed", "cp_exposed",
                     "act_bytes", "dense_params", "expert_params", "ep_total", "ep_paired", "ep_alone",
                     "ep_comm_paired", "ep_comm_alone")}
        # each stage's own share of unpaired (warm-up / cool-down) passes for the EP all-to-all
        st_parts["ep_comm"] = [0.0] * p
        for i in range(p):
            ep = ((1.0 - self.unpaired[i]) * st_parts["ep_paired"][i] + self.unpaired[i] * st_parts["ep_alone"][i])
            st_time[i] += ep - st_parts["ep_exposed"][i]
            st_parts["ep_exposed"][i] = ep
            st_parts["ep_comm"][i] = ((1.0 - self.unpaired[i]) * st_parts["ep_comm_paired"][i]
                                      + self.unpaired[i] * st_parts["ep_comm_alone"][i])
        slow = max(range(p), key=lambda i: st_time[i])
        t_max, t_mean = st_time[slow], sum(st_time) / p
        bubble = bubble_units(L.pipeline_schedule, p, v) * t_mean

        # data-parallel reduction, optimizer step, optimizer swap (worst stage by parameters)
        dp_times, opt_times, swap_times = [], [], []
        for i in range(p):
            d, x = st_parts["dense_params"][i], st_parts["expert_params"][i]
            t_dp = self.comm.dp_reduce(d / L.tp, x / L.expert_shards)
            window = st_parts["bwd"][i] / m if s.dp_overlap else 0.0
            if s.dp_overlap and L.optimizer_shard:
                window += st_parts["fwd"][i] / m
            dp_times.append(max(0.0, t_dp - window))
            shard_params = (d / L.tp / ((L.dp * L.cp) if L.optimizer_shard else 1)
                            + x / L.expert_shards / (L.edp if L.optimizer_shard else 1))
            t_opt = 30.0 * shard_params / (hw.hbm_bandwidth * hw.elementwise_efficiency)
            if s.moe_impl == "training_cpu":     # per-tensor AdamW / clip kernels + step glue (kernels.py)
                t_opt += optimizer_step_kernels(cfg) * hw.op_overhead
            opt_times.append(t_opt)
            swap_times.append(2 * 12.0 * shard_params / hw.host_bandwidth if s.swap_optimizer else 0.0)
        tail = max(dp + o + w for dp, o, w in zip(dp_times, opt_times, swap_times)) + hw.step_overhead
        step = m * t_max + bubble + tail

        # MFU
        stats = compute_stats(cfg, L.seq_length)
        fpt = stats.train_flops_per_token
        tokens = L.global_batch_size * L.seq_length
        peak = hw.mfu_peak
        mfu = fpt * tokens / (step * L.world * peak)
        # MFU against both the BF16 peak and the peak of the precision the linear GEMMs use (labelled)
        mfu_by_peak = {d: fpt * tokens / (step * L.world * hw.peak(d)) for d in dict.fromkeys(("bf16", s.precision))
                       if d in hw.peak_flops}

        # memory per device (pipeline stage; DualPipe devices hold stage i and its mirror p-1-i)
        mem_rows = self._memory_rows(blocks, bounds)
        worst = max(range(p), key=lambda i: mem_rows[i][0])
        total, states, act, transient, inflight = mem_rows[worst]
        fits = total <= hw.usable_hbm_bytes

        # breakdown along the slowest stage (sums to the step time)
        sp = {a: st_parts[a][slow] for a in st_parts}
        i_tail = max(range(p), key=lambda i: dp_times[i] + opt_times[i] + swap_times[i])
        breakdown = {
            "compute_fwd_bwd": m * (sp["fwd"] + sp["bwd"]),
            "recompute": m * sp["recompute"],
            "tp_comm_exposed": m * sp["tp_exposed"],
            "cp_comm_exposed": m * sp["cp_exposed"],
            "ep_alltoall_exposed": m * sp["ep_exposed"],
            "pp_p2p": m * 2.0 * p2p * v * (p > 1),
            "swap_exposed": m * sp["swap_exposed"],
            "pipeline_bubble": bubble,
            "dp_reduce_exposed": dp_times[i_tail],
            "optimizer_step": opt_times[i_tail],
            "optimizer_swap": swap_times[i_tail],
            "step_overhead": hw.step_overhead,
        }
        act_modules: dict = {}
        for c in range(worst, k, p):
            for bi in range(*bounds[c]):
                for name, val in blocks[bi].act_modules.items():
                    act_modules[name] = act_modules.get(name, 0.0) + val / GB
        blocks_per_chunk = [e - a for a, e in bounds]
        return Estimate(
            mfu=mfu, peak_flops_per_device=peak, peak_dtype=hw.mfu_peak_dtype, step_time_s=step,
            tokens_per_s=tokens / step, tokens_per_s_per_device=tokens / step / L.world,
            memory_per_device_gb=total / GB, hbm_usable_gb=hw.usable_hbm_bytes / GB, fits=fits,
            model_flops_per_token=fpt, devices=L.world,
            layout={"dp": L.dp, "tp": L.tp, "pp": L.pp, "vpp": L.vpp, "ep": L.ep, "cp": L.cp,
                    "micro_batch_size": L.micro_batch_size, "micro_batches": m, "seq_length": L.seq_length,
                    "global_batch_size": L.global_batch_size, "schedule": L.pipeline_schedule,
                    "ep_width": L.ep_width if cfg.moe.enabled else 1, "etp": L.etp if cfg.moe.enabled else 1,
                    "expert_dp": L.edp if cfg.moe.enabled else L.dp * L.cp, "tp_extend_ep": L.tp_extend_ep,
                    "hierarchical_alltoall": L.hierarchical_alltoall, "optimizer_shard": L.optimizer_shard,
                    "precision": s.precision, "recompute": s.recompute, "hardware": hw.name},
            breakdown_s=breakdown,
            memory_gb={"weights": states.weights / GB, "gradients": states.grads / GB,
                       "optimizer": states.optimizer / GB, "activations": act / GB,
                       "transient": transient / GB, "reserved": hw.reserved_bytes / GB,
                       "worst_stage": worst, "inflight_chunks": inflight,
                       "activations_per_micro_batch_by_module": act_modules},
            stage_times_s=st_time, config=cfg, mfu_by_peak=mfu_by_peak,
            details={"bubble_fraction": bubble / step, "slowest_stage": slow,
                     "layers_per_virtual_stage": list(split.counts), "stage_split": split.method,
                     "blocks_per_virtual_stage": blocks_per_chunk,
                     "decoder_layers_per_virtual_stage": [len(range(max(a, 1), min(e, cfg.model.num_layers + 1)))
                                                          for a, e in bounds],
                     "ep_alltoall_total_s": m * sp["ep_total"],
                     "ep_alltoall_hidden_fraction": (1.0 - sp["ep_comm"] / sp["ep_total"]) if sp["ep_total"] else None,
                     "ep_alltoall_exposed_comm_s": m * sp["ep_comm"],
                     "ep_overlap_contention_s": m * (sp["ep_exposed"] - sp["ep_comm"]),
                     "ep_unpaired_fraction_slowest_stage": self.unpaired[slow],
                     "cp_algorithm": s.cp_algorithm if L.cp > 1 else None,
                     "cp_bytes_sent_per_layer_micro": self.comm.cp().bytes_sent,
                     "total_params": stats.total_params, "active_params": stats.active_params,
                     "flop_convention": "train_flops_per_token (3x fwd, full-square attention, MTP included, "
                                        "recompute not counted)"},
        )


def estimate(cfg: Config, hardware: HardwareProfile | str | None = None, devices: int | None = None) -> Estimate:
    """Estimate one training step of ``cfg`` on ``devices`` devices of ``hardware`` (default ``cfg.sim``)."""
    hw = hardware if isinstance(hardware, HardwareProfile) else load_hardware(hardware or cfg.sim.hardware)
    cfg, layout = resolve_layout(cfg, devices, hw.devices_per_node)
    return run_with_recompute(cfg, layout, hw)


def run_with_recompute(cfg: Config, layout: ParallelDims, hw: HardwareProfile) -> Estimate:
    """Run the simulator; ``sim.recompute: auto`` takes the fastest granularity (of AUTO_ORDER, config/recompute.py) that fits.

    Granularities are tried cheapest first. The first whose split is not ``memory_aware`` (time-balanced or
    user-set) and fits ends the search: a later granularity only adds recompute time on the same blocks and
    cannot have a faster split (assumption: recompute never makes a block faster). One that fits only with a
    memory-aware split may be slower than the next granularity's balanced split, so the search goes on and keeps
    the fastest that fits. When none fits, the last one tried (full) is returned.
    """
    if cfg.sim.recompute != "auto":
        return Simulator(cfg, layout, hw).run()
    best = est = None
    for rc in AUTO_ORDER:
        c = dataclasses.replace(cfg, sim=dataclasses.replace(cfg.sim, recompute=rc))
        est = Simulator(c, layout, hw).run()
        if est.fits and (best is None or est.step_time_s < best.step_time_s):
            best = est
        if est.fits and est.details["stage_split"] != "memory_aware":
            break
    return best or est
