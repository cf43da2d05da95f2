"""Simulator tests: hand-computed small cases of the time and memory model, FLOP consistency, CLI."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time

import pytest

from pangu_ms.config import ConfigError, from_dict, load_config
from pangu_ms.model.stats import compute_stats
from pangu_ms.parallel import partition
from pangu_ms.sim import comm, memory, schedule
from pangu_ms.sim.compute import model_flops_per_token
from pangu_ms.sim.estimate import estimate
from pangu_ms.sim.hardware import load_hardware, profile_from_dict
from tests.conftest import flat_hw
from pangu_ms.sim.layout import LayoutError, resolve_layout

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
Y718 = os.path.join(ROOT, "yaml", "pangu_ultra_moe_718b.yaml")
PAPER = ["parallel.tp=8", "parallel.pp=16", "parallel.vpp=2", "parallel.ep=4", "parallel.micro_batch_size=2",
         "parallel.tp_extend_ep=true", "parallel.optimizer_shard=true"]


def tiny_moe(**parallel):
    d = {"model": {"vocab_size": 1024, "hidden_size": 256, "num_layers": 4, "num_dense_layers": 1,
                   "dense_ffn_hidden": 512, "num_heads": 8, "q_lora_rank": 64, "kv_lora_rank": 32,
                   "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16, "mtp_depth": 1},
         "moe": {"num_experts": 16, "top_k": 4, "expert_ffn_hidden": 128},
         "train": {"seq_length": 512, "global_batch_size": 64},
         "parallel": parallel}
    return from_dict(d)


# ------------------------------------------------------------------ schedule
@pytest.mark.parametrize("p,m", [(4, 8), (8, 16), (16, 16), (2, 2)])
def test_1f1b_bubble_fraction(p, m):
    assert schedule.bubble_fraction("1f1b", p, m) == pytest.approx((p - 1) / (m + p - 1))


def test_interleaved_bubble_matches_pangu_ultra_report():
    # Pangu Ultra 135B: p=8, m=16: 1F1B 30.4%, VPP 6 -> 6.8% (report: 30.45% -> 6.8%)
    assert schedule.bubble_fraction("1f1b", 8, 16) == pytest.approx(7 / 23)
    assert schedule.bubble_fraction("interleaved", 8, 16, 6) == pytest.approx((7 / 6) / (16 + 7 / 6))
    assert round(100 * schedule.bubble_fraction("interleaved", 8, 16, 6), 1) == 6.8


def test_inflight_microbatches():
    assert schedule.inflight_chunks("1f1b", 4, 8, 1) == 4            # p micro-batches on stage 0
    assert schedule.inflight_chunks("1f1b", 4, 8, 1, stage=3) == 1
    # interleaved stage 0: 2(p-1) + (v-1)p + 1 chunks = p (1 + (p-1)/(p v)) micro-batches of v chunks
    p, v = 4, 2
    assert schedule.inflight_chunks("interleaved", p, 100, v) == 2 * (p - 1) + (v - 1) * p + 1
    assert schedule.inflight_chunks("interleaved", p, 100, v) / v == pytest.approx(p * (1 + (p - 1) / (p * v)))


def test_partition_minimises_largest_stage():
    b = partition.partition([1.0] * 10, 3)
    sums = [10 * 0 + (e - a) for a, e in b]
    assert max(sums) == 4 and len(b) == 3 and b[0][0] == 0 and b[-1][1] == 10
    b = partition.partition([5, 1, 1, 1, 1, 1], 3)
    assert b[0] == (0, 1)


# ------------------------------------------------------------------ communication
def test_alltoall_volume_flat_vs_hierarchical():
    T, h, k, E, b = 1000, 100, 8, 256, 2
    # flat over W=32 ranks, 8 per node: (W - n_loc)/W of the T*k rows cross nodes
    flat = comm.alltoall_volume(T, h, k, E, 32, 8, b, hierarchical=False)
    assert flat.inter_bytes == pytest.approx(T * k * h * b * 24 / 32)
    assert flat.intra_bytes == pytest.approx(T * k * h * b * 7 / 32)
    hier = comm.alltoall_volume(T, h, k, E, 32, 8, b, hierarchical=True)
    # 4 nodes of 64 experts: P(no expert of a token on a given node) = C(192,8)/C(256,8)
    p_none = 1.0
    for i in range(k):
        p_none *= (192 - i) / (256 - i)
    assert hier.inter_bytes == pytest.approx(T * 3 * (1 - p_none) * h * b)
    assert hier.inter_bytes < flat.inter_bytes                      # ~2.7 vs 6 remote copies per token
    assert hier.intra_bytes == pytest.approx(T * k * h * b * 7 / 8)
    # single node: hierarchical degenerates to flat
    one = comm.alltoall_volume(T, h, k, E, 8, 8, b, hierarchical=True)
    assert one.inter_bytes == 0 and not one.hierarchical


def test_collective_times_hand_computed():
    hw = flat_hw()
    # all-gather of 8 MB over 8 ranks in a switch node: 7/8 * 8e6 / 1e11
    assert comm.allgather_time(8e6, 8, hw, False) == pytest.approx(7 / 8 * 8e6 / 1e11)
    assert comm.allreduce_time(8e6, 8, hw, True) == pytest.approx(2 * 7 / 8 * 8e6 / 1e10)
    mesh = flat_hw(intra_node={"bandwidth": 7e11, "efficiency": [[1.0, 1.0]], "topology": "mesh"})
    # a 2-rank group in an 8-device mesh uses 1 of 7 links
    assert comm.allgather_time(1e6, 2, mesh, False) == pytest.approx(0.5 * 1e6 / 1e11)


# ------------------------------------------------------------------ memory
def test_activation_memory_recompute_hand_computed():
    cfg = tiny_moe()
    _, L = resolve_layout(cfg, 1, 8)
    tok, h, f = L.tokens_per_micro, 256, 512
    none = memory.layer_activation_bytes(cfg, L, False, "none")
    # dense FFN, tp=1, sandwich: norm in h, norm out h, gate f, up f, act f, post-norm in h; bf16
    assert none["ffn"] == pytest.approx(tok * 2 * (3 * h + 3 * f))
    sel = memory.layer_activation_bytes(cfg, L, False, "selective")
    assert sel["ffn"] == pytest.approx(tok * 2 * (2 * h + 2 * f))       # norm output and act dropped
    mlp = memory.layer_activation_bytes(cfg, L, False, ["mlp"])
    assert mlp["ffn"] == pytest.approx(tok * 2 * (3 * h))                # gate, up, act dropped
    full = memory.layer_activation_bytes(cfg, L, False, "full", 1.0)
    assert sum(v for k, v in full.items() if not k.startswith("_")) == pytest.approx(tok * 2 * h)
    half = memory.layer_activation_bytes(cfg, L, False, "full", 0.5)
    total_none = sum(none.values())
    assert sum(v for k, v in half.items() if not k.startswith("_")) == pytest.approx(
        0.5 * total_none + 0.5 * tok * 2 * h)
    # MoE routed rows: k rows per token, each dispatched input h + fc1 2f + act f + output h
    moe_none = memory.layer_activation_bytes(cfg, L, True, "none")
    assert moe_none["moe.routed"] == pytest.approx(tok * 2 * 4 * (2 * h + 3 * 128))
    moe_fine = memory.layer_activation_bytes(cfg, L, True, "moe_fine")
    assert moe_fine["moe.routed"] == pytest.approx(tok * 2 * 4 * (2 * h))


def test_reference_path_activation_memory_hand_computed():
    """sim.moe_impl: training_cpu (the CPU reference path): explicit-attention probabilities H*S per token,
    masked-dense rows (E + shared) x (gate/up 2F + silu, SwiGLU, expanded gates and gated outputs 4F), the unfused
    dense SwiGLU (act 2f), every RMSNorm's expanded inverse RMS, normalised input and expanded weight (3 x its
    width), the softmax backward's 4 probability tensors and a re-run core's 3, fp32."""
    cfg = tiny_moe()
    cfg = dataclasses.replace(cfg, moe=dataclasses.replace(cfg.moe, dropless_impl="masked_dense"),
                              sim=dataclasses.replace(cfg.sim, moe_impl="training_cpu", precision="fp32"))
    _, L = resolve_layout(cfg, 1, 8)
    tok, h, heads, s, f, ff, e = L.tokens_per_micro, 256, 8, 512, 512, 128, 16
    attn_fused = 2 * h + heads * (2 * 24 + 16) + heads * 16 + (64 + 32 + 8) + (64 + 32) + h
    layer_norms, latent_norms = 3 * 2 * h, 3 * (64 + 32)     # input + sandwich norm; q_a / kv_a latent norms
    attn = attn_fused + heads * s + layer_norms + latent_norms
    none = memory.layer_activation_bytes(cfg, L, False, "none")
    assert none["attention"] == pytest.approx(4 * tok * attn)
    assert none["ffn"] == pytest.approx(4 * tok * (3 * h + 2 * f + 2 * f + layer_norms))
    norm = memory.layer_activation_bytes(cfg, L, False, ["norm"])
    assert norm["attention"] == pytest.approx(4 * tok * (attn - h - layer_norms))       # - pre-norm output too
    assert norm["ffn"] == pytest.approx(4 * tok * (2 * h + 2 * f + 2 * f))
    # the recomputed norms' tensors exist again while the layer's backward runs: a transient of what they dropped
    assert norm["_recompute_working_set"] == pytest.approx(4 * tok * 2 * (h + layer_norms))
    up = memory.layer_activation_bytes(cfg, L, False, ["mla_up_proj"])["attention"]
    assert up == pytest.approx(4 * tok * (attn - heads * (2 * 24 + 16) - (64 + 32) - latent_norms))
    core = memory.layer_activation_bytes(cfg, L, False, ["core_attn"])
    assert core["attention"] == pytest.approx(4 * tok * (attn - heads * s))
    assert core["_recompute_working_set"] == pytest.approx(3 * 4 * tok * heads * s)
    moe = memory.layer_activation_bytes(cfg, L, True, "none")
    assert moe["moe.routed"] == pytest.approx(4 * tok * (e + 1) * 6 * ff)
    assert memory.layer_activation_bytes(cfg, L, True, ["moe_act"])["moe.routed"] == \
        pytest.approx(4 * tok * (e + 1) * 2 * ff)
    assert memory.backward_working_set_bytes(cfg, L) == pytest.approx(4 * 4 * tok * heads * s)
    fused = memory.layer_activation_bytes(dataclasses.replace(cfg, sim=dataclasses.replace(
        cfg.sim, moe_impl="grouped")), L, False, "none")
    assert fused["attention"] == pytest.approx(4 * tok * (attn_fused + 2 * heads))   # LSE, no norm tensors
    # query-chunked (chunk 128 of S 512): the MLA core's blockwise backward keeps no probabilities, and its
    # softmax backward works on one chunk's scores; inside 'full' the core takes autodiff: the visible triangle
    chunked = dataclasses.replace(cfg, long_context=dataclasses.replace(cfg.long_context, attention_chunk=128))
    assert memory.layer_activation_bytes(chunked, L, False, "none")["attention"] == pytest.approx(4 * tok * (
        attn - heads * s))
    assert memory.backward_working_set_bytes(chunked, L) == pytest.approx(4 * 4 * tok * heads * 128)
    rerun = memory.layer_activation_bytes(chunked, L, False, "full", 1.0)["_recompute_working_set"]
    visible = heads * (s + 128) / 2                                       # probabilities of the kept triangle
    assert rerun == pytest.approx(4 * tok * (attn - heads * s + 3 * visible + 3 * h + 2 * f + 2 * f + layer_norms))


def test_optimizer_sharding_memory():
    cfg = tiny_moe(dp=4)
    _, L = resolve_layout(cfg, None, 8)
    d, x = 1e6, 8e6
    st = memory.model_state_bytes(cfg, L, d, x)
    assert st.weights == pytest.approx(2 * (d + x)) and st.grads == pytest.approx(4 * (d + x))
    assert st.optimizer == pytest.approx(12 * (d + x))
    cfg2 = dataclasses.replace(cfg, parallel=dataclasses.replace(cfg.parallel, optimizer_shard=True))
    _, L2 = resolve_layout(cfg2, None, 8)
    st2 = memory.model_state_bytes(cfg2, L2, d, x)
    assert st2.optimizer == pytest.approx(12 * (d / 4 + x / 4))       # ep=1: expert-DP group = dp = 4
    cfg3 = dataclasses.replace(cfg2, sim=dataclasses.replace(cfg2.sim, swap_optimizer=True))
    assert memory.model_state_bytes(cfg3, L2, d, x).optimizer == 0.0


# ------------------------------------------------------------------ FLOPs
@pytest.mark.parametrize("overrides", [[], ["parallel.tp=8", "parallel.ep=4", "parallel.tp_extend_ep=true"],
                                       ["model.attention_type=gqa", "model.num_kv_heads=8",
                                        "model.head_dim=128"]])
def test_flops_match_stats(overrides):
    cfg = load_config(Y718, overrides, validate=False)
    hw = load_hardware("ascend_910b")
    cfg, L = resolve_layout(cfg, 6144 if "parallel.tp=8" in overrides else None, 8, validate=False)
    st = compute_stats(cfg, L.seq_length)
    assert model_flops_per_token(cfg, L, hw) == pytest.approx(st.train_flops_per_token, rel=1e-12)
    assert model_flops_per_token(cfg, L, hw, with_mtp=False) == pytest.approx(
        st.train_flops_per_token_without_mtp, rel=1e-12)


def test_dense_compute_time_hand_computed():
    """A dense 1-layer model on the flat profile: GEMM time = FLOPs / peak."""
    cfg = from_dict({"model": {"vocab_size": 64, "hidden_size": 128, "num_layers": 1, "num_dense_layers": 1,
                               "dense_ffn_hidden": 256, "attention_type": "mha", "num_heads": 4,
                               "mtp_depth": 0},
                     "moe": {"num_experts": 0}, "train": {"seq_length": 64, "global_batch_size": 1},
                     "sim": {"attention_causal_skip": False}})
    hw = flat_hw(hbm_bandwidth=1e30)                                    # no memory-bound ops
    from pangu_ms.sim.compute import ComputeModel
    _, L = resolve_layout(cfg, 1, 8)
    blk = ComputeModel(cfg, L, hw).layer(False)
    gemm_flops = 2 * 64 * (4 * 128 * 128 + 3 * 128 * 256)
    attn_flops = 64 * 2 * 64 * 4 * 64                                   # 2 S H (dqk + dv) per token
    assert blk.fwd == pytest.approx((gemm_flops + attn_flops) / 1e12)
    assert blk.bwd == pytest.approx((2 * gemm_flops + 2.5 * attn_flops) / 1e12)


# ------------------------------------------------------------------ estimate / CLI
def test_paper_layout_estimate_and_optimisations_help():
    base = load_config(Y718, PAPER, validate=False)
    e0 = estimate(base, "ascend_910b", 6144)
    assert 0 < e0.mfu < 1 and e0.layout["dp"] == 48 and e0.layout["ep_width"] == 32
    assert sum(e0.breakdown_s.values()) == pytest.approx(e0.step_time_s)
    opt = load_config(Y718, PAPER + ["parallel.hierarchical_alltoall=true", "sim.ep_overlap=true"], validate=False)
    e1 = estimate(opt, "ascend_910b", 6144)
    assert e1.breakdown_s["ep_alltoall_exposed"] < e0.breakdown_s["ep_alltoall_exposed"]
    assert e1.mfu > e0.mfu
    rc = load_config(Y718, PAPER + ["sim.recompute=full"], validate=False)
    e2 = estimate(rc, "ascend_910b", 6144)
    assert e2.memory_per_device_gb < e0.memory_per_device_gb and e2.step_time_s > e0.step_time_s


def test_oom_marked():
    cfg = load_config(Y718, ["parallel.tp=2", "parallel.pp=16", "parallel.ep=4", "train.global_batch_size=3072"],
                      validate=False)
    e = estimate(cfg, "ascend_910b", 6144)
    assert not e.fits and e.memory_per_device_gb > e.hbm_usable_gb


def test_impossible_layouts_raise():
    cfg = load_config(Y718, PAPER, validate=False)
    with pytest.raises(LayoutError, match="sim.devices"):
        estimate(cfg, "ascend_910b", 6000)
    bad = load_config(Y718, PAPER + ["parallel.ep=3"], validate=False)
    with pytest.raises(ConfigError, match="parallel.ep"):
        estimate(bad, "ascend_910b", 6144)
    with pytest.raises(ConfigError, match="sim.hardware"):
        estimate(cfg, "no_such_gpu", 6144)


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=os.path.abspath(ROOT))
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", "simulate.py"), *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_cli_estimate_json_and_error():
    r = _cli("estimate", "--config", Y718, "--hardware", "ascend_910b", "--devices", "6144", "--set", *PAPER,
             "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    for k in ("mfu", "peak_flops_per_device", "step_time_s", "tokens_per_s", "memory_per_device_gb", "fits",
              "breakdown"):
        assert k in d
    assert d["peak_flops_per_device"] == 2.56e14
    r = _cli("estimate", "--config", Y718, "--devices", "6000", "--set", *PAPER, "--json")
    assert r.returncode == 2 and "not divisible" in r.stderr
    r = _cli("--help")
    assert r.returncode == 0 and all(c in r.stdout for c in ("estimate", "search", "calibrate"))


def test_search_speed_and_ranking():
    from pangu_ms.sim import search as S
    cfg = load_config(Y718, PAPER, validate=False)
    hw = load_hardware("ascend_910b")
    sp = S.SearchSpace(layers=[58, 61], hidden=[7168, 7680], experts=[256], top_k=[8], tp=[4, 8], pp=[8, 16],
                       vpp=[1, 2], ep=[2, 4], micro_batch=[1, 2], tp_extend_ep=[True], recompute=["none", "full"],
                       budget=718e9)
    t0 = time.perf_counter()
    res = S.run_search(cfg, sp, hw, 6144, workers=1, progress=False)
    dt = time.perf_counter() - t0
    assert res["evaluated"] == 4 * 64
    assert res["evaluated"] / dt * 60 > 5000                            # >= 10k/min on 2 workers
    rows = [r for r in res["rows"] if r["fits"]]
    assert rows and all(a["mfu"] >= b["mfu"] for a, b in zip(rows, rows[1:]))
    # the budget solver reproduces the paper's expert width for the paper's shape
    assert any(s["layers"] == 61 and s["hidden"] == 7680 and s["expert_ffn"] == 2048 for s in res["shapes"])


# ------------------------------------------------------------------ reference-kernel (CPU launch) term
def test_reference_kernel_count_tiny_hand_computed():
    from pangu_ms.sim.kernels import param_tensors, reference_step_kernels
    cfg = load_config(os.path.join(ROOT, "yaml", "tiny_cpu.yaml"), ["model.backend=cpu"])
    # tensors: dense layer 7 MLA + 4 norms + 2 = 13; MoE layer 7 + 4 + router + 2 experts + 2 shared = 16 (x3);
    # MTP 4 + one MoE layer 16; embedding, final norm, LM head 3  ->  13 + 48 + 20 + 3 = 84 (= the model's count)
    assert param_tensors(cfg) == 84
    # forward kernels (norm 7 with the expanded inverse RMS, RoPE 6, core 8 with the expanded mask):
    # MLA attention 2+2+1+8 + (7*3 + 12 + 9 + 1 + 7) = 63; dense FFN 2 + (4 + 15) = 21;
    # MoE 1 + 19 + 2 + 1 + 5 + 3 + 4 + 15 = 50; layers: dense 84, MoE 113 (x3, + 1 in MTP);
    # embedding 1 + head 1 + 35 = 37; MTP extras 1 + 25 + head 8 = 34   ->  607
    fwd = 37 + 84 + 3 * 113 + (113 + 34)
    assert fwd == 607
    # step kernels: per tensor 2 (clip scale, fused AdamW) + STEP_KERNELS 91 (global norm, LR Cell, non-finite guard)
    assert reference_step_kernels(cfg) == pytest.approx(fwd * 2.4 + 2 * 84 + 91)
    # the fused CPU kernels (cpu_fused, the recipe's backend): norm 1, RoPE 1, SwiGLU 1, core 5 (one scaled masked
    # softmax): MLA 2+2+1+5 + (1*3 + 2 + 9 + 1 + 1) = 26; dense FFN 2 + (1 + 3) = 6; MoE 1 + 19 + 2 + 1 + 2 + 3 + 4 + 3
    # = 35; layers: dense 32, MoE 61; embedding 1 + head 1 + 29 = 31; MTP extras 1 + 13 + head 2 = 16  ->  323
    fused = load_config(os.path.join(ROOT, "yaml", "tiny_cpu.yaml"))
    assert fused.model.backend == "cpu_fused"
    fwd = 31 + 32 + 3 * 61 + (61 + 16)
    assert fwd == 323
    assert reference_step_kernels(fused) == pytest.approx(fwd * 2.30 + 2 * 84 + 91)


def test_kernel_overhead_term_in_step_time():
    """With a zero-FLOP-cost profile, the reference step time is kernels x op_overhead (fwd + 1.4x bwd + optimizer)."""
    from pangu_ms.sim.kernels import reference_step_kernels
    cfg = load_config(os.path.join(ROOT, "yaml", "tiny_cpu.yaml"),
                      ["sim.precision=fp32", "sim.moe_impl=training_cpu", "model.compute_dtype=float32",
                       "model.backend=cpu"])
    big = 1e30
    hw = flat_hw(peak_flops={"bf16": big, "fp32": big, "fp8": big}, hbm_bandwidth=big, op_overhead=1e-5,
                 devices_per_node=1)
    e = estimate(cfg, hw, 1)
    assert e.step_time_s == pytest.approx(reference_step_kernels(cfg) * 1e-5, rel=1e-6)
    # the grouped (NPU) implementation launches far fewer kernels
    cfg2 = load_config(os.path.join(ROOT, "yaml", "tiny_cpu.yaml"), ["sim.precision=fp32"])
    assert estimate(cfg2, hw, 1).step_time_s < 0.5 * e.step_time_s


# ------------------------------------------------------------------ DualPipe memory
def test_dualpipe_inflight_pairs_mirror_stages():
    # every device holds p + 1 stage-micro-batches: (p - i) of its own stage and (i + 1) of the mirror stage
    p, m = 8, 64
    for i in range(p):
        a, b = schedule.dualpipe_inflight(p, m, i)
        assert (a, b) == (p - i, i + 1)
        assert schedule.dualpipe_pair(p, i) == p - 1 - i
    # few micro-batches: each direction carries m/2
    assert schedule.dualpipe_inflight(8, 4, 0) == (2.0, 1.0)


def test_dualpipe_memory_hand_computed():
    """DualPipe device memory = states of stage i + stage p-1-i, activations (p-i) x act_i + (i+1) x act_{p-1-i}."""
    cfg = tiny_moe(pp=4, tp=1, ep=1, micro_batch_size=1, dp=1)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, mtp_depth=0, num_layers=8,
                                                             num_dense_layers=8),
                              moe=dataclasses.replace(cfg.moe, num_experts=0),
                              sim=dataclasses.replace(cfg.sim, pp_schedule="dualpipe", precision="bf16"))
    hw = flat_hw()
    e = estimate(cfg, hw, 4)
    from pangu_ms.sim.estimate import Simulator
    cfg_r, lay = resolve_layout(cfg, 4, hw.devices_per_node)
    sim = Simulator(cfg_r, lay, hw)
    blocks = sim.blocks()
    _, bounds = sim.split(blocks)
    act = [sum(blocks[j].act_bytes for j in range(a, b)) for a, b in bounds]
    dense = [sum(blocks[j].dense_params for j in range(a, b)) for a, b in bounds]
    m = lay.micro_batches
    w = e.memory_gb["worst_stage"]
    j = 3 - w
    n_i, n_j = min(m / 2, 4 - w), min(m / 2, w + 1)
    assert e.memory_gb["activations"] * 1024 ** 3 == pytest.approx(n_i * act[w] + n_j * act[j], rel=1e-9)
    # bf16: 2 B weights + 4 B grads per parameter of both stages; optimizer 12 B (dp = 1, no sharding gain)
    assert e.memory_gb["weights"] * 1024 ** 3 == pytest.approx(2 * (dense[w] + dense[j]), rel=1e-9)


def test_moe_probs_before_fc2_drops_expert_output():
    cfg = tiny_moe(tp=1, ep=1, micro_batch_size=1)
    _, lay = resolve_layout(cfg, 1, 8)
    a = memory.layer_activation_bytes(cfg, lay, True)["moe.routed"]
    cfg2 = dataclasses.replace(cfg, sim=dataclasses.replace(cfg.sim, moe_probs_before_fc2=True))
    b = memory.layer_activation_bytes(cfg2, lay, True)["moe.routed"]
    tok, k, h = lay.tokens_per_micro, cfg.moe.top_k, cfg.model.hidden_size
    assert a - b == pytest.approx(tok * k * h * 2.0)      # one bf16 row of h per routed copy


def test_calibration_combine_and_profile_hand_computed():
    """Medians over passes; GEMM efficiency pooled per 4x-FLOPs bin; op_overhead from the training-step probe."""
    from pangu_ms.sim.calibrate import build_profile, combine
    def meas(scale, ovh):
        return {"gemm": [(4.0e6, 40e9 * scale, (1, 1, 1)), (5.0e6, 60e9 * scale, (1, 1, 2)),
                         (1.0e9, 200e9 * scale, (1, 1, 3))],
                "peak": 0.0, "attention_rate": 100e9 * scale, "bandwidth": 20e9 * scale, "op_overhead": ovh,
                "chain_kernel": 1e-5, "step_overhead": 10 * ovh, "per_kernel": [], "threads": 2,
                "broadcast_efficiency": 0.2 * scale}
    m = combine([meas(1.0, 3e-4), meas(0.5, 1e-4), meas(1.0, 2e-4)])
    assert m["op_overhead"] == pytest.approx(2e-4) and m["peak"] == pytest.approx(200e9)
    prof = build_profile(m)
    assert prof["op_overhead"] == pytest.approx(2e-4) and prof["step_overhead"] == pytest.approx(2e-3)
    # bins floor(log4 F): 4e6 -> 10, 5e6 -> 11, 1e9 -> 14; efficiencies 0.2, 0.3, 1.0 (median over passes)
    curve = prof["gemm_efficiency"]
    assert [round(e, 6) for _, e in curve] == [0.2, 0.3, 1.0]
    assert [f for f, _ in curve] == pytest.approx([4.0e6, 5.0e6, 1.0e9])
    assert all(0 < e <= 1 for _, e in curve)
    hw = profile_from_dict(prof, "cpu_test")
    assert hw.gemm_efficiency(1.0e9) == pytest.approx(1.0)
    assert hw.gemm_efficiency(4.0e6) < 0.35
    assert hw.broadcast_efficiency == pytest.approx(0.2)                   # median of 0.2, 0.1, 0.2


# ------------------------------------------------------------------ expert grid (parallel.etp)
@pytest.mark.parametrize("path,legacy,folded", [
    ("yaml/sim/pangu_ultra_moe_718b_6k.yaml", [], ["parallel.tp_extend_ep=false", "parallel.ep=32", "parallel.etp=1"]),
    ("yaml/sim/mixtral_8x7b.yaml", [], ["parallel.etp=2"]),
])
def test_tp_extend_ep_and_etp_estimate_identically(path, legacy, folded):
    """tp_extend_ep=true is etp=1 with EP width ep*tp, no tp_extend_ep is etp=tp: every reader (comm incl. node
    spans, compute, memory, DP reduction) sees the same grid, so the estimates are equal to the last bit."""
    a = estimate(load_config(os.path.join(ROOT, path), legacy, validate=False))
    b = estimate(load_config(os.path.join(ROOT, path), folded, validate=False))
    assert (a.layout["ep_width"], a.layout["etp"]) == (b.layout["ep_width"], b.layout["etp"])
    assert a.step_time_s == b.step_time_s and a.memory_per_device_gb == b.memory_per_device_gb
    assert a.breakdown_s == b.breakdown_s and a.memory_gb == b.memory_gb


def test_etp_changes_expert_costs_like_the_grid_says():
    """Same 718B run: ETP 1 over EP 32 (tp_extend_ep) vs ETP 8 over EP 4: expert weights are cut 32 ways either
    way, but ETP 8 pays the expert-TP gather / scatter of routed rows (exposed TP time)."""
    a = estimate(load_config(os.path.join(ROOT, "yaml/sim/pangu_ultra_moe_718b_6k.yaml"), [], validate=False))
    b = estimate(load_config(os.path.join(ROOT, "yaml/sim/pangu_ultra_moe_718b_6k.yaml"),
                             ["parallel.tp_extend_ep=false", "parallel.ep=4", "parallel.etp=8",
                              "moe.dispatcher=dropless"], validate=False))
    assert (b.layout["ep_width"], b.layout["etp"], b.layout["expert_dp"]) == (4, 8, 12)
    assert b.breakdown_s["tp_comm_exposed"] > 1.5 * a.breakdown_s["tp_comm_exposed"]
    assert b.step_time_s > a.step_time_s


def test_group_limited_routing_bounds_the_remote_nodes_hand_computed():
    from math import comb
    T, h, k, E, b = 1000, 100, 8, 256, 2
    unlimited = comm.expected_remote_nodes(E, k, 8)
    # DeepSeek-V3: 8 groups on 8 nodes, 4 groups per token: a remote node is touched iff its group is chosen
    assert comm.expected_remote_nodes(E, k, 8, groups=8, group_topk=4) == pytest.approx(7 * 4 / 8)
    assert 7 * 4 / 8 < unlimited                                                  # 3.5 vs 4.6
    # 16 groups on 8 nodes (2 per node), 4 chosen: P(node touched) = 1 - C(14, 4) / C(16, 4)
    assert comm.expected_remote_nodes(E, k, 8, 16, 4) == pytest.approx(7 * (1 - comb(14, 4) / comb(16, 4)))
    # 4 groups over 8 nodes (2 nodes each), 2 chosen: uniform over the 4 chosen nodes' 128 experts
    p_none = 1.0
    for i in range(k):
        p_none *= (128 - 32 - i) / (128 - i)
    assert comm.expected_remote_nodes(E, k, 8, 4, 2) == pytest.approx((4 - 2 / 4) * (1 - p_none))
    # all groups allowed, or groups not aligned with nodes: uniform routing
    assert comm.expected_remote_nodes(E, k, 8, 8, 0) == comm.expected_remote_nodes(E, k, 8, 8, 8) == unlimited
    assert comm.expected_remote_nodes(E, k, 8, 32, 1) == pytest.approx(min(7 * (1 - comb(28, 1) / comb(32, 1)),
                                                                          unlimited))
    # the hierarchical all-to-all moves that many copies per token; the flat one is unchanged
    hier = comm.alltoall_volume(T, h, k, E, 64, 8, b, True, groups=8, group_topk=4)
    assert hier.inter_bytes == pytest.approx(T * 3.5 * h * b)
    assert comm.alltoall_volume(T, h, k, E, 64, 8, b, False, 8, 4) == comm.alltoall_volume(T, h, k, E, 64, 8, b, False)
