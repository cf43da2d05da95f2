"""EP all-to-all overlap model (pangu_ms/sim/overlap.py) and the unpaired share of each schedule, hand-computed."""
from __future__ import annotations

import os

import pytest

from pangu_ms.config import load_config
from pangu_ms.sim import schedule
from pangu_ms.sim.estimate import estimate
from pangu_ms.sim.overlap import EPPhases, overlapped

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def test_overlapped_hand_computed():
    assert overlapped(1.0, 0.0, 0.25) == 1.0
    assert overlapped(1.0, 2.0, 0.25) == 2.0                       # 2 >= 1 x 1.25: compute hides under comm
    assert overlapped(2.0, 1.0, 0.25) == pytest.approx(2.2)        # 2 + 1 x 0.25 / 1.25
    assert overlapped(2.0, 1.0, 0.0) == 2.0


PH = EPPhases(attn_fwd=1.0, attn_bwd=2.0, expert_fwd=2.0, expert_bwd=4.0, shared_fwd=0.5, shared_bwd=1.0,
              routed_wgrad=1.5, dispatch_fwd=1.5, combine_fwd=3.0, dispatch_bwd=3.0, combine_bwd=3.0)


def test_paired_and_alone_hand_computed():
    # paired, k = 0: max(1, 3) + max(4, 1.5) + max(2, 3) + max(2, 3) = 3 + 4 + 3 + 3 = 13, minus F + B = 9
    assert PH.exposed_paired(0.0) == pytest.approx(4.0)
    # alone, k = 0: fwd max(.5, 1.5) - .5 + 3 = 4; bwd max(1, 3) - 1 + max(1.5, 3) - 1.5 = 3.5
    assert PH.exposed_alone(0.0) == pytest.approx(7.5)
    assert PH.exposed(False, "cross_micro_batch", 0.3, 0.0) == PH.comm_total == 10.5
    assert PH.exposed(True, "intra_layer", 0.0, 0.0) == pytest.approx(7.5)
    assert PH.exposed(True, "cross_micro_batch", 0.25, 0.0) == pytest.approx(0.75 * 4.0 + 0.25 * 7.5)
    # contention k = 0.25: stage 2 (compute 4 beside comm 1.5 < 4 x 1.25) takes 4 + 1.5 x 0.2 = 4.3; the other
    # stages stay comm-bound (3 >= 1.25, 2.5, 2.5): 3 + 4.3 + 3 + 3 - 9 = 4.3. Of that, the transfer not under
    # (slowed) compute is 3 - 1.25 + 0 + 3 - 2.5 + 3 - 2.5 = 2.75
    assert PH.exposed_paired(0.25) == pytest.approx(4.3)
    assert PH.exposed_comm(True, "cross_micro_batch", 0.0, 0.25) == pytest.approx(1.75 + 0.5 + 0.5)
    # unpaired passes pay the within-layer exposure: all unpaired = intra_layer, a share mixes the two linearly
    alone = PH.exposed_comm(True, "intra_layer", 0.0, 0.25)
    assert alone != pytest.approx(2.75)
    assert PH.exposed_comm(True, "cross_micro_batch", 1.0, 0.25) == pytest.approx(alone)
    assert PH.exposed_comm(True, "cross_micro_batch", 0.25, 0.25) == pytest.approx(0.75 * 2.75 + 0.25 * alone)


def test_recomputed_forward_is_never_paired_hand_computed():
    # full recompute: the recomputed forward runs alone (MindSpeed fb-overlap runs it before the paired F&B),
    # k = 0: max(.5, 1.5) - .5 + 3 = 4 (the forward half of exposed_alone), with or without pairing
    assert PH.exposed_recompute(True, 0.0) == pytest.approx(4.0)
    assert PH.exposed_recompute(False, 0.0) == pytest.approx(1.5 + 3.0)
    # k = 0.25: the shared expert (0.5) beside dispatch 1.5 >= 0.625 is comm-bound: 1.5 - 0.5 + 3 = 4
    assert PH.exposed_recompute(True, 0.25) == pytest.approx(4.0)


def test_full_recompute_pays_the_unpaired_forward_exposure():
    """With full recompute, the recompute time of a MoE layer carries the within-layer exposure of its forward
    all-to-all under both scopes, so pairing hides only the original passes' all-to-alls."""
    from pangu_ms.sim.estimate import Simulator
    from pangu_ms.sim.hardware import load_hardware
    from pangu_ms.sim.layout import resolve_layout
    path = os.path.join(ROOT, "yaml", "sim", "deepseek_v3_671b.yaml")
    hw = load_hardware("ascend_910b")
    moe = {}
    for scope in ("cross_micro_batch", "intra_layer"):
        cfg, lay = resolve_layout(load_config(path, ["sim.recompute=full", "sim.precision=bf16",
                                                      f"sim.ep_overlap_scope={scope}"],
                                              validate=False), 2048, hw.devices_per_node)
        b = next(b for b in Simulator(cfg, lay, hw).blocks() if b.name == "moe_layer")
        moe[scope] = b
    cross, intra = moe["cross_micro_batch"], moe["intra_layer"]
    assert cross.ep_paired < intra.ep_paired                       # pairing hides the original passes' a2a ...
    assert cross.recompute == pytest.approx(intra.recompute)        # ... but not the recomputed forward's
    assert cross.recompute > cross.fwd                             # which pays its unhidden dispatch / combine


def dualpipe_paired_passes(p, m, rank):
    """Paired F&B passes of one DualPipe rank, counted from the schedule's steps (deepseek-ai/DualPipe):
    step 4 runs two F&B pairs per iteration, step 5 one."""
    half = min(rank, p - 1 - rank)
    step_4 = m // 2 - p + half + 1
    step_5 = p // 2 - half - 1
    return 2 * step_4 + step_5


@pytest.mark.parametrize("p,m", [(4, 8), (8, 20), (16, 120)])
def test_unpaired_fraction_dualpipe_counts_the_schedule(p, m):
    for rank in range(p):
        assert schedule.unpaired_fraction("dualpipe", p, m, 1, rank) == pytest.approx(
            1 - dualpipe_paired_passes(p, m, rank) / m)


def test_unpaired_fraction_1f1b_interleaved_no_pp():
    assert schedule.unpaired_fraction("1f1b", 1, 8) == 1 / 8               # first forward, last backward
    assert schedule.unpaired_fraction("1f1b", 4, 8, 1, 0) == 4 / 8         # 3 warm-up + 1 extra
    assert schedule.unpaired_fraction("1f1b", 4, 8, 1, 3) == 1 / 8
    assert schedule.unpaired_fraction("interleaved", 2, 4, 2, 0) == 5 / 8  # 2(p-1) + (v-1)p + 1 of m v
    assert schedule.unpaired_fraction("interleaved", 16, 16, 2, 0) == 1.0  # the 718B layout: stage 0 never pairs


def test_estimate_overlap_on_off_and_contention():
    path = os.path.join(ROOT, "yaml", "sim", "deepseek_v3_671b.yaml")
    base = ["sim.pp_schedule=1f1b", "parallel.pipeline_split=balanced", "sim.recompute=selective"]
    off = estimate(load_config(path, base + ["sim.ep_overlap=false"], validate=False))
    on = estimate(load_config(path, base, validate=False))
    assert off.details["ep_alltoall_hidden_fraction"] == pytest.approx(0.0)
    assert off.breakdown_s["ep_alltoall_exposed"] == pytest.approx(off.details["ep_alltoall_total_s"])
    assert 0.0 < on.details["ep_alltoall_hidden_fraction"] < 1.0
    assert on.step_time_s < off.step_time_s
    d = on.details       # exposed = transfer not under compute + contention of the compute beside it
    assert on.breakdown_s["ep_alltoall_exposed"] == pytest.approx(d["ep_alltoall_exposed_comm_s"]
                                                                  + d["ep_overlap_contention_s"])
    assert d["ep_overlap_contention_s"] > 0        # h800 profile: comm_compute_slowdown 0.25


def test_fp8_per_gemm_precision_and_mfu_against_both_peaks():
    """FP8: linear GEMMs at the FP8 peak x fp8_gemm_efficiency_scale plus a quantisation pass; LM head, router and
    attention core BF16; MFU printed against the BF16 and the FP8 peak (ratio = the peaks' ratio)."""
    from pangu_ms.sim.compute import ComputeModel
    from pangu_ms.sim.hardware import load_hardware
    from pangu_ms.sim.layout import resolve_layout
    path = os.path.join(ROOT, "yaml", "sim", "llama3_405b.yaml")
    hw = load_hardware("h100")
    cfg, lay = resolve_layout(load_config(path, ["sim.precision=fp8"], validate=False), 16384, 8)
    cm = ComputeModel(cfg, lay, hw)
    head = dict((op.name, op) for op, _ in cm.head().ops)["head.lm_head"]
    assert head.gemm_dtype == "bf16"
    layer = dict((op.name, (op, t)) for op, t in cm.layer(False).ops)
    op, t = layer["ffn.swiglu"]
    assert op.gemm_dtype == "fp8"
    eff = hw.gemm_efficiency(op.call_flops) * hw.fp8_gemm_efficiency_scale
    gemm = max(op.hw_flops / (hw.peak("fp8") * eff), op.bytes / hw.hbm_bandwidth)
    quant = 4.0 * (op.quant_elems + op.quant_weight_elems / lay.micro_batches) / (hw.hbm_bandwidth
                                                                                * hw.elementwise_efficiency)
    assert t == pytest.approx(gemm + quant + op.launch)
    e = estimate(cfg, hw, 16384)
    assert e.mfu_by_peak["bf16"] == pytest.approx(e.mfu)
    assert e.mfu_by_peak["fp8"] == pytest.approx(e.mfu * hw.peak("bf16") / hw.peak("fp8"))
    assert set(e.as_dict()["mfu_by_peak"]) == {"mfu_vs_bf16_peak", "mfu_vs_fp8_peak"}


def test_fp8_quantisation_passes_follow_transformer_engine():
    """FP8 cast traffic of a dense SwiGLU FFN and a GQA attention block against hand counts (TE's fused
    cast-transpose = 4 bytes per element): forward = fc1 input [tok, h] once (gate and up share it) + fc2 input
    [tok, F/t]; backward = output gradients [tok, 2F/t] + [tok, h], not 2x the forward's; the weight once per
    optimizer step (TE caches the FP8 weight between micro-batches), so the forward's cost falls as the
    micro-batches grow; TP all-gathers carry FP8 (1 byte), reduce-scatters BF16."""
    from pangu_ms.sim.comm import CommModel, allgather_time
    from pangu_ms.sim.compute import ComputeModel
    from pangu_ms.sim.hardware import load_hardware
    from pangu_ms.sim.layout import resolve_layout
    path = os.path.join(ROOT, "yaml", "sim", "llama3_70b.yaml")
    hw = load_hardware("h100")
    bw = hw.hbm_bandwidth * hw.elementwise_efficiency
    h, f, tp, tok = 8192, 28672, 4, 8192 // 2           # recipe: tp 4, cp 2, seq 8192, micro-batch 1
    fwd = {}
    for gbs in (128, 512):
        cfg, lay = resolve_layout(load_config(path, ["sim.precision=fp8", f"train.global_batch_size={gbs}"],
                                              validate=False), 64, 8)
        assert lay.micro_batches == gbs // 2 and lay.tokens_per_micro == tok
        cm = ComputeModel(cfg, lay, hw)
        blk = cm.layer(False)
        ops = dict((op.name, (op, t)) for op, t in blk.ops)
        op, t = ops["ffn.swiglu"]
        w = 3 * h * f / tp
        assert op.quant_fwd == pytest.approx(4.0 * (tok * (h + f / tp) + w / lay.micro_batches) / bw)
        assert op.quant_bwd == pytest.approx(4.0 * tok * (2 * f / tp + h) / bw)
        fwd[gbs] = op.quant_fwd
        # the backward of the layer = 2x the non-quantisation forward + the gradient casts (+ kernel launches)
        expect = sum((2.5 if o.kind == "attn" else 2.0) * (tt - o.launch - o.quant_fwd) + o.quant_bwd
                     + o.bwd_launch * o.launch for o, tt in blk.ops)
        assert blk.bwd == pytest.approx(expect)
        qkv, _ = ops["attn.qkv_o_proj"]
        assert qkv.quant_elems == pytest.approx(tok * (h + 64 * 128 / tp))
        assert qkv.quant_grad_elems == pytest.approx(tok * ((64 / tp + 2 * 8 / tp) * 128 + h))
    assert fwd[512] < fwd[128]                          # the weight cast is spread over more micro-batches
    bf_cfg, bf_lay = resolve_layout(load_config(path, ["sim.precision=bf16"], validate=False), 64, 8)
    bf = ComputeModel(bf_cfg, bf_lay, hw).layer(False)
    assert all(o.quant_fwd == 0.0 and o.quant_bwd == 0.0 for o, _ in bf.ops)
    # TP pair: FP8 all-gather (1 byte) + BF16 reduce-scatter (2 bytes) vs 2 + 2 in BF16
    spans = tp > hw.devices_per_node
    assert CommModel(cfg, lay, hw).tp_pair() == pytest.approx(
        allgather_time(tok * h * 1.0, tp, hw, spans) + allgather_time(tok * h * 2.0, tp, hw, spans))
    assert CommModel(bf_cfg, bf_lay, hw).tp_pair() == pytest.approx(
        2 * allgather_time(tok * h * 2.0, tp, hw, spans))
