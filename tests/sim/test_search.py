"""Shape-search tests on hand-computed small cases: the expert width solved for a parameter budget, the
activated-parameter filter, the ranking objective, and the MLA sequence-parallel costs the search compares."""
from __future__ import annotations

import pytest

from pangu_ms.config import ConfigError, from_dict
from pangu_ms.model.stats import compute_stats
from pangu_ms.sim import search as S
from pangu_ms.sim.comm import CommModel
from pangu_ms.sim.compute import ComputeModel
from pangu_ms.sim.hardware import profile_from_dict
from pangu_ms.sim.layout import resolve_layout


def flat_hw():
    """Efficiency 1 everywhere, no latency: times are hand-computable."""
    return profile_from_dict({
        "name": "flat", "peak_flops": {"bf16": 1e12, "fp32": 1e12}, "hbm_bytes": 1e11, "usable_hbm_bytes": 1e11,
        "hbm_bandwidth": 1e12, "devices_per_node": 8,
        "intra_node": {"bandwidth": 1e11, "latency": 0.0, "efficiency": [[1.0, 1.0]], "topology": "switch"},
        "inter_node": {"bandwidth": 1e10, "latency": 0.0, "efficiency": [[1.0, 1.0]]},
        "gemm_efficiency": [[1.0, 1.0]], "attention_efficiency": 1.0, "elementwise_efficiency": 1.0})


def tiny(hidden=32, ffn=32, **parallel):
    """3 layers (1 dense + 2 MoE), MHA with 2 heads (4 h^2 per attention), no sandwich norm (2 h per layer),
    4 experts top-2 + 1 shared expert, vocab 100 untied, 1 MTP module."""
    return from_dict({
        "model": {"vocab_size": 100, "hidden_size": hidden, "num_layers": 3, "num_dense_layers": 1,
                  "dense_ffn_hidden": 64, "attention_type": "mha", "num_heads": 2, "sandwich_norm": False,
                  "mtp_depth": 1},
        "moe": {"num_experts": 4, "top_k": 2, "num_shared_experts": 1, "expert_ffn_hidden": ffn},
        "train": {"seq_length": 64, "global_batch_size": 8},
        "parallel": parallel})


# h = 32, by hand:  attention 4*32^2 = 4096, norms 64, dense FFN 3*32*64 = 6144 -> dense layer 10304;
# MoE layer: router 4*32 = 128, routed 4*3*32 f = 384 f, shared 3*32 f = 96 f -> 4288 + 480 f (active 4288 + 288 f);
# total without MTP = embedding 3200 + 10304 + 2 (4288 + 480 f) + final norm 32 + head 3200 = 25312 + 960 f;
# active = 10304 + 2 (4288 + 288 f) + 32 + head 3200 = 22112 + 576 f.
def total_h32(f):
    return 25312 + 960 * f


def active_h32(f):
    return 22112 + 576 * f


def test_hand_counts_match_stats():
    for f in (32, 96, 128):
        st = compute_stats(tiny(ffn=f), 64)
        assert st.total_params_without_mtp == total_h32(f)
        assert st.active_params == active_h32(f)


def test_expert_width_solved_for_budget():
    cfg = tiny()
    # exact budget of f = 96 -> 96; f = 100 rounds down to the multiple of 32 (3.125 -> 3); f = 120 up (3.75 -> 4)
    assert S.solve_expert_ffn(cfg, total_h32(96), 32) == 96
    assert S.solve_expert_ffn(cfg, total_h32(100), 32) == 96
    assert S.solve_expert_ffn(cfg, total_h32(120), 32) == 128


def test_budget_tolerance_drops_rounded_miss():
    budget = total_h32(100)                    # solved f = 96: total 117472, -3.17 % of 121312
    kept = S.shapes(tiny(), S.SearchSpace(hidden=[32], budget=budget, tolerance=0.05, ffn_multiple=32, min_ffn=32))
    assert [(s["hidden"], s["expert_ffn"]) for s, _ in kept] == [(32, 96)]
    assert kept[0][0]["total_params_b"] == pytest.approx(total_h32(96) / 1e9)
    assert kept[0][0]["active_params_b"] == pytest.approx(active_h32(96) / 1e9)
    assert S.shapes(tiny(), S.SearchSpace(hidden=[32], budget=budget, tolerance=0.03, ffn_multiple=32,
                                          min_ffn=32)) == []
    # an expert width below min_ffn is dropped
    assert S.shapes(tiny(), S.SearchSpace(hidden=[32], budget=budget, tolerance=0.05, ffn_multiple=32,
                                          min_ffn=128)) == []


def test_active_budget_filter():
    # expert width kept (no total budget). h = 32: active 22112 + 576*32 = 40544.
    # h = 64 by hand: attention 16384 + norms 128 + dense FFN 12288 = 28800; MoE active 16384 + 128 + router 256
    # + routed 2*3*64*32 = 12288 + shared 6144 = 35200; + final norm 64 + head 6400 -> 105664.
    assert compute_stats(tiny(hidden=64), 64).active_params == 105664
    target = active_h32(32) * 1.01             # h = 32 misses it by -0.99 %, h = 64 by +158 %
    sp = S.SearchSpace(hidden=[32, 64], active_budget=target, active_tolerance=0.02)
    assert [s["hidden"] for s, _ in S.shapes(tiny(), sp)] == [32]
    sp.active_tolerance = 0.005
    assert S.shapes(tiny(), sp) == []
    # default: the same relative band as the total budget's tolerance
    assert [s["hidden"] for s, _ in S.shapes(tiny(), S.SearchSpace(hidden=[32, 64], active_budget=target,
                                                                    tolerance=0.02))] == [32]
    assert S.shapes(tiny(), S.SearchSpace(hidden=[32, 64], active_budget=target, tolerance=0.005)) == []
    # no target: both kept
    assert len(S.shapes(tiny(), S.SearchSpace(hidden=[32, 64]))) == 2


def _row(layers, mfu, tok, fits=True):
    return {"layers": layers, "hidden": 32, "experts": 4, "top_k": 2, "expert_ffn": 32, "mfu": mfu,
            "tokens_per_s": tok, "fits": fits}


def test_shape_ranking_by_objective():
    rows = [_row(2, 0.40, 100.0), _row(2, 0.30, 300.0), _row(3, 0.35, 200.0), _row(4, 0.90, 900.0, fits=False)]
    by_mfu = S.shape_ranking(rows)
    assert [(r["layers"], r["mfu"]) for r in by_mfu] == [(2, 0.40), (3, 0.35)]      # OOM shape 4 excluded
    by_tok = S.shape_ranking(rows, "tokens_per_s")
    assert [(r["layers"], r["tokens_per_s"]) for r in by_tok] == [(2, 300.0), (3, 200.0)]
    rows = [_row(2, 0.40, 100.0), _row(3, 0.35, 200.0)]
    assert [r["layers"] for r in S.shape_ranking(rows)] == [2, 3]
    assert [r["layers"] for r in S.shape_ranking(rows, "tokens_per_s")] == [3, 2]
    with pytest.raises(ConfigError, match="rank_by"):
        S.shape_ranking(rows, "loss")


def test_run_search_sorts_by_objective():
    hw = flat_hw()
    for key in ("mfu", "tokens_per_s"):
        sp = S.SearchSpace(hidden=[32, 64], tp=[1, 2], pp=[1], vpp=[1], ep=[1, 2], micro_batch=[1],
                           tp_extend_ep=[False], recompute=["none"], rank_by=key)
        res = S.run_search(tiny(), sp, hw, 4, workers=1, progress=False)
        rows = [r for r in res["rows"] if r["fits"]]
        assert len(rows) >= 4
        assert all(a[key] >= b[key] for a, b in zip(rows, rows[1:]))


# ------------------------------------------------------------------ MLA under TP + sequence parallelism
def tiny_mla(tp):
    return from_dict({
        "model": {"vocab_size": 1024, "hidden_size": 256, "num_layers": 4, "num_dense_layers": 1,
                  "dense_ffn_hidden": 512, "num_heads": 8, "q_lora_rank": 64, "kv_lora_rank": 32,
                  "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16, "mtp_depth": 0},
        "moe": {"num_experts": 16, "top_k": 4, "expert_ffn_hidden": 128},
        "train": {"seq_length": 512, "global_batch_size": 8},
        "parallel": {"tp": tp, "micro_batch_size": 1}})


def test_mla_down_projection_runs_on_sequence_shard():
    """q_a / kv_a (256 x (64 + 32 + 8) = 26624 weights) on tok / tp = 256 rows: executed = model FLOPs."""
    hw = flat_hw()
    cfg, L = resolve_layout(tiny_mla(2), 2, 8)
    blk = ComputeModel(cfg, L, hw).layer(False)
    op = next(o for o, _ in blk.ops if o.name == "attn.down_proj")
    assert op.model_flops == pytest.approx(2.0 * 512 * 26624 / 2)
    assert op.hw_flops == pytest.approx(op.model_flops)


def test_mla_tp_collectives_gather_latents():
    """Attention SP all-gather moves [tok, q_lora + kv_lora + rope] = [512, 104]; reduce-scatter [512, 256]."""
    hw = flat_hw()
    cfg, L = resolve_layout(tiny_mla(2), 2, 8)
    cm = CommModel(cfg, L, hw)
    assert cm.attn_gather_width() == 104
    lc = cm.layer(False)
    ag = 0.5 * 512 * 104 * 2 / 1e11
    rs = 0.5 * 512 * 256 * 2 / 1e11
    assert lc.tp_attn == pytest.approx(ag + rs)
    assert lc.tp_mlp == pytest.approx(2 * rs)              # dense FFN: gather and scatter of h


def test_cli_active_budget_and_rank_by():
    import json
    import os
    import subprocess
    import sys
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    env = dict(os.environ, PYTHONPATH=os.path.abspath(root))
    r = subprocess.run([sys.executable, os.path.join(root, "tools", "simulate.py"), "search", "--config",
                        os.path.join(root, "yaml", "sim", "pangu_ultra_moe_718b_6k.yaml"), "--budget", "718e9",
                        "--tolerance", "0.02", "--ffn-multiple", "64", "--layers", "58", "61",
                        "--hidden", "6144", "7680", "--experts", "256", "--tp", "8", "--pp", "16", "--vpp", "2",
                        "--ep", "8", "32", "--etp", "auto", "1", "--mbs", "1", "--extend", "true", "false",
                        "--recompute", "none",
                        "--active-budget", "39e9", "--rank-by", "tokens_per_s", "--workers", "1",
                        "--mark-shape", "61,7680,256", "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    # 58 x 6144 (36.3B) and 61 x 6144 (36.9B activated) miss 39B by more than 2 %; 58 x 7680 (38.8B) and
    # 61 x 7680 (39.2B) stay
    assert sorted((s["layers"], s["hidden"]) for s in d["shapes"]) == [(58, 7680), (61, 7680)]
    assert all(abs(s["active_params_b"] / 39 - 1) <= 0.02 for s in d["shapes"])
    tok = [s["tokens_per_s"] for s in d["shapes"]]
    assert tok == sorted(tok, reverse=True)
    assert d["summary"]["marked_shape"]["of"] == 2
    # etp: ep 32 with etp 1 (EP width 32, ETP 1) is searched next to the tp_extend_ep and derived layouts
    assert any((c["ep"], c["etp"], c["tp_extend_ep"], c["etp_size"]) == (32, 1, False, 1) for c in d["top"])
    assert any((c["ep"], c["etp"], c["tp_extend_ep"]) == (8, None, True) for c in d["top"])   # EP width 64
    # uncertainty band from the stored validation residuals; ties = within the band of the best
    from pangu_ms.sim.residuals import uncertainty_band
    band = d["summary"]["uncertainty_band"]
    assert band == pytest.approx(uncertainty_band()[0]) and band > 0
    best = d["shapes"][0]["tokens_per_s"]
    assert all(s["tie"] == (s["tokens_per_s"] >= best * (1 - band)) for s in d["shapes"])
    assert d["summary"]["shape_ties"] == sum(s["tie"] for s in d["shapes"]) >= 1
