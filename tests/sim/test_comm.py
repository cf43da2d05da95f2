"""Context-parallel communication (comm.py CP section) on hand-computed tiny cases, and the model-family recipes
(Llama 3 405B dense GQA, Mixtral 8x7B GQA + softmax top-2) of yaml/sim/."""
from __future__ import annotations

import dataclasses
import math
import os

import pytest

from pangu_ms.config import ConfigError, from_dict, load_config
from pangu_ms.model.stats import compute_stats
from pangu_ms.sim import comm
from pangu_ms.sim.estimate import estimate
from tests.conftest import flat_hw
from pangu_ms.sim.layout import resolve_layout

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
LLAMA = os.path.join(ROOT, "yaml", "sim", "llama3_405b.yaml")
MIXTRAL = os.path.join(ROOT, "yaml", "sim", "mixtral_8x7b.yaml")


def tiny(attention="gqa", tp=2, cp=4, dp=1, algo="ring", kv_heads=2, validate=True):
    """seq 512, mbs 1: tok = 512 / cp per CP rank; 8 heads, head dim 32 (GQA) or MLA dims 16 + 8 / 16."""
    model = {"vocab_size": 1024, "hidden_size": 256, "num_layers": 2, "num_dense_layers": 2, "dense_ffn_hidden": 512,
             "attention_type": attention, "num_heads": 8, "num_kv_heads": kv_heads, "head_dim": 32,
             "q_lora_rank": 64, "kv_lora_rank": 32, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16,
             "mtp_depth": 0, "sandwich_norm": False}
    cfg = from_dict({"model": model, "moe": {"num_experts": 0},
                     "train": {"seq_length": 512, "global_batch_size": dp},
                     "parallel": {"dp": dp, "tp": tp, "cp": cp}, "sim": {"cp_algorithm": algo}})
    return resolve_layout(cfg, None, 8, validate=validate)


# ------------------------------------------------------------------ volumes
def test_cp_kv_chunk_bytes_gqa_mla_hand_computed():
    cfg, L = tiny(tp=2, cp=4)
    assert L.tokens_per_micro == 128
    # GQA: 2 KV heads over tp=2 -> 1 per rank; K and V, head dim 32, bf16
    assert comm.cp_kv_bytes(cfg, L, 2.0) == pytest.approx(128 * 2 * 1 * 32 * 2)
    # KV heads fewer than TP ranks are replicated: still one head per rank (comm.py's formula; training and
    # the simulator reject this layout, layout_problems: num_kv_heads % tp)
    with pytest.raises(ConfigError, match=r"parallel.tp: model.num_kv_heads=2 is not divisible by tp=4"):
        tiny(tp=4, cp=2, kv_heads=2)
    cfg, L = tiny(tp=4, cp=2, kv_heads=2, validate=False)
    assert comm.cp_kv_bytes(cfg, L, 2.0) == pytest.approx(256 * 2 * 1 * 32 * 2)
    # MLA: full per-head K (nope 16 + rope 8) and V (16) of the 8/2 local heads
    cfg, L = tiny("mla", tp=2, cp=4)
    assert comm.cp_kv_bytes(cfg, L, 2.0) == pytest.approx(128 * 4 * (16 + 8 + 16) * 2)


def test_cp1_gives_zero():
    cfg, L = tiny(cp=1, tp=2)
    c = comm.cp_comm(cfg, L, flat_hw(), 2.0)
    assert c.steps == 0 and c.bytes_sent == 0.0 and c.exposed(1.0) == (0.0, 0.0)
    e = estimate(cfg, flat_hw())
    assert e.breakdown_s["cp_comm_exposed"] == 0.0 and e.details["cp_bytes_sent_per_layer_micro"] == 0.0


# ------------------------------------------------------------------ ring: steps, volume, exposed time
def test_ring_steps_volume_and_exposed_hand_computed():
    cfg, L = tiny(tp=2, cp=4)                       # tp*cp = 8 ranks: one node -> intra-node link 1e11
    c = comm.cp_comm(cfg, L, flat_hw(), 2.0)
    b = 128 * 2 * 32 * 2                            # 16,384 bytes
    assert c.steps == 3                             # cp - 1 ring steps per attention pass
    assert c.step_fwd == pytest.approx(b / 1e11)    # one K/V chunk per step
    assert c.step_bwd == pytest.approx(2 * b / 1e11)  # K/V + dK/dV per step
    assert c.bytes_sent == pytest.approx(3 * b + 3 * 2 * b)
    # attention core forward A = 4e-7 s: per step the chunk's attention is A/4 = 1e-7 fwd, 2.5e-7 bwd
    f, bw = c.exposed(4e-7)
    assert f == pytest.approx(3 * (b / 1e11 - 1e-7))
    assert bw == pytest.approx(3 * (2 * b / 1e11 - 2.5e-7))
    # enough attention per step hides the ring completely
    assert c.exposed(1.0) == (0.0, 0.0)


def test_ring_across_nodes_uses_inter_node_link():
    cfg, L = tiny(tp=4, cp=4, kv_heads=4)           # 16 ranks > 8 per node
    c = comm.cp_comm(cfg, L, flat_hw(), 2.0)
    b = 128 * 2 * 1 * 32 * 2
    assert c.step_fwd == pytest.approx(b / 1e10)
    assert c.exposed(0.0) == pytest.approx((3 * b / 1e10, 3 * 2 * b / 1e10))


def test_allgather_cp_exposed_hand_computed():
    cfg, L = tiny(tp=2, cp=4, algo="allgather")
    c = comm.cp_comm(cfg, L, flat_hw(), 2.0)
    b = 128 * 2 * 32 * 2
    ag = 3 / 4 * (4 * b) / 1e11                     # all-gather of the 4 chunks over 4 ranks
    assert c.exposed(123.0) == pytest.approx((ag, 2 * ag))   # not overlapped, whatever the attention time
    assert c.bytes_sent == pytest.approx(3 * 3 * b)


def test_cp_ranks_join_dense_gradient_reduction():
    """dp=2, cp=2 reduces dense gradients over 4 ranks, exactly like dp=4, cp=1."""
    hw = flat_hw()
    _, L22 = tiny(tp=1, cp=2, dp=2)
    _, L41 = tiny(tp=1, cp=1, dp=4)
    cfg, _ = tiny(tp=1, cp=2, dp=2)
    assert not (cfg.parallel.optimizer_shard or L22.optimizer_shard or L41.optimizer_shard)
    p = 1e6
    t22 = comm.CommModel(cfg, L22, hw).dp_reduce(p, 0.0)
    assert t22 == pytest.approx(comm.CommModel(cfg, L41, hw).dp_reduce(p, 0.0))
    assert t22 == pytest.approx(2 * 3 / 4 * p * 4 / 1e11)   # fp32 all-reduce over 4 ranks in one node


def test_cp_in_estimate_breakdown():
    """The exposed CP time enters the step: m * layers * (fwd + bwd exposed) on the one stage, and sums up."""
    hw = flat_hw(inter_node={"bandwidth": 1e6, "latency": 0.0, "efficiency": [[1.0, 1.0]]})  # very slow link
    cfg, L = tiny(tp=4, cp=4, algo="ring", kv_heads=4)
    e = estimate(cfg, hw)
    assert sum(e.breakdown_s.values()) == pytest.approx(e.step_time_s)
    b = 128 * 2 * 32 * 2
    # the slow link dwarfs the attention: nearly all 3 fwd + 3 bwd steps are exposed, for 2 layers
    full = 2 * (3 * b / 1e6 + 3 * 2 * b / 1e6)
    assert 0.95 * full < e.breakdown_s["cp_comm_exposed"] <= full
    e_ag = estimate(dataclasses.replace(cfg, sim=dataclasses.replace(cfg.sim, cp_algorithm="allgather")), hw)
    assert e_ag.breakdown_s["cp_comm_exposed"] == pytest.approx(2 * 3 * (3 / 4 * 4 * b / 1e6))


# ------------------------------------------------------------------ model-family recipes
@pytest.mark.parametrize("path", [LLAMA, MIXTRAL])
def test_family_recipes_estimate(path):
    cfg = load_config(path, [], validate=False)
    e = estimate(cfg)
    assert math.isfinite(e.mfu) and 0.0 < e.mfu < 1.0 and e.step_time_s > 0
    assert sum(e.breakdown_s.values()) == pytest.approx(e.step_time_s)


def test_llama_long_context_cp16_estimate():
    cfg = load_config(LLAMA, ["parallel.cp=16", "train.seq_length=131072", "train.global_batch_size=128"],
                      validate=False)
    e = estimate(cfg, None, 16384)
    assert e.layout["dp"] == 8 and e.layout["cp"] == 16 and math.isfinite(e.mfu) and 0 < e.mfu < 1
    assert e.breakdown_s["cp_comm_exposed"] > 0                   # all-gather CP is not overlapped


def test_llama_is_dense_gqa_405b():
    cfg = load_config(LLAMA, [], validate=False)
    m = cfg.model
    assert not cfg.moe.enabled and m.attention_type == "gqa" and m.num_kv_heads == 8 and m.num_heads == 128
    st = compute_stats(cfg)
    assert abs(st.total_params / 405e9 - 1) < 0.02


def test_mixtral_is_gqa_softmax_top2_without_shared_expert():
    cfg = load_config(MIXTRAL, [], validate=False)
    e, m = cfg.moe, cfg.model
    assert m.attention_type == "gqa" and e.num_experts == 8 and e.top_k == 2 and e.router_score == "softmax"
    assert e.num_shared_experts == 0 and m.num_dense_layers == 0
    st = compute_stats(cfg)
    assert abs(st.total_params / 46.7e9 - 1) < 0.02 and abs(st.active_params / 12.9e9 - 1) < 0.03


# ------------------------------------------------------------------ expert grid (parallel.etp) in the comm model
QWEN3 = os.path.join(ROOT, "yaml", "sim", "qwen3_235b_a22b.yaml")


def tiny_moe(etp=None, tp=2, dp=4, ep=4, extend=False):
    cfg = from_dict({"model": {"vocab_size": 1024, "hidden_size": 256, "num_layers": 2, "num_dense_layers": 0,
                               "num_heads": 8, "mtp_depth": 0, "q_lora_rank": 64, "kv_lora_rank": 32,
                               "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16},
                     "moe": {"num_experts": 16, "top_k": 4, "expert_ffn_hidden": 128, "num_shared_experts": 0},
                     "train": {"seq_length": 512, "global_batch_size": dp},
                     "parallel": {"dp": dp, "tp": tp, "ep": ep, "etp": etp, "tp_extend_ep": extend}})
    return resolve_layout(cfg, None, 8)


def test_ep_group_node_span_follows_the_expert_grid():
    """EP members are etp local ranks apart: W 32 ETP 1 on 8-rank nodes = 4 nodes x 8; W 8 ETP 2 = 2 x 4."""
    from pangu_ms.parallel.dims import ParallelDims
    assert comm.ep_group_geometry(ParallelDims(dp=16, tp=2, ep=32, etp=1, num_experts=128), 8) == (8, 4)
    assert comm.ep_group_geometry(ParallelDims(dp=8, tp=2, ep=8, etp=2, num_experts=128), 8) == (4, 2)
    assert comm.ep_group_geometry(ParallelDims(dp=8, tp=8, ep=4, tp_extend_ep=True, num_experts=128), 8) == (8, 4)
    assert comm.ep_group_geometry(ParallelDims(dp=2, tp=2, ep=2, num_experts=16), 8) == (2, 1)


def test_expert_tp_gather_only_with_etp_above_one():
    """ETP > 1: the ETP group all-gathers its members' routed rows (etp * tok * k / tp rows of h) and
    reduce-scatters them after the experts; ETP = 1 pays neither (and no TP collective around the experts)."""
    hw = flat_hw()
    cfg1, L1 = tiny_moe(etp=1)
    cfg2, L2 = tiny_moe(etp=2)
    c1, c2 = comm.CommModel(cfg1, L1, hw).layer(True), comm.CommModel(cfg2, L2, hw).layer(True)
    assert (L1.ep_width, L1.etp, L1.edp) == (4, 1, 2) and (L2.ep_width, L2.etp, L2.edp) == (4, 2, 1)
    assert c1.tp_expert == 0.0 and c1.tp_mlp == 0.0
    rows = 512 * (4 * 2 / 2) * 256 * 2                                     # tok * k * etp / tp * h * bf16
    assert c2.tp_expert == pytest.approx(2 * comm.allgather_time(rows, 2, hw, False))
    assert L2.routed_rows(4, 128) == (4.0, 64.0) and L1.routed_rows(4, 128) == (2.0, 128.0)


def test_published_tp2_ep32_etp1_layout_validates_and_estimates():
    """Megatron-Bridge's Qwen3-235B-A22B layout on 256 H100 (TP2 PP8 VP4 EP32 over DP16, ETP1): rejected before
    etp existed (ep 32 does not divide dp*cp 16); now EP 32 x ETP 1 x expert-DP 1 = the 32 ranks of a stage."""
    cfg = load_config(QWEN3, [], validate=False)
    st = compute_stats(cfg)
    assert abs(st.total_params / 235e9 - 1) < 0.01 and abs(st.active_params / 22e9 - 1) < 0.03
    e = estimate(cfg)
    assert (e.layout["dp"], e.layout["ep_width"], e.layout["etp"], e.layout["expert_dp"]) == (16, 32, 1, 1)
    assert e.fits and abs(e.tokens_per_s_per_device / 1575 - 1) < 0.15     # published 1575 tokens/s/GPU
    with pytest.raises(ConfigError, match=r"ep=32 does not divide dp\*cp=16.*parallel\.etp=1"):
        estimate(load_config(QWEN3, ["parallel.etp=null"], validate=False))
