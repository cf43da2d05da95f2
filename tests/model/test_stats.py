"""Parameter / FLOP counter: the published 718B / 39B figures, exact agreement with instantiated models, and a
hand-computed small case."""
import numpy as np
import pytest

from pangu_ms.config import load_config
from pangu_ms.model import build_model
from pangu_ms.model.stats import compute_stats
from tests.conftest import tiny_overrides


def test_718b_matches_published_totals():
    s = compute_stats(load_config("yaml/pangu_ultra_moe_718b.yaml"))
    assert abs(s.total_params_without_mtp / 718e9 - 1) < 0.01
    assert abs(s.active_params / 39e9 - 1) < 0.03
    assert s.total_params > s.total_params_without_mtp          # MTP counted only in the total
    # 6 N_active + attention is the order of magnitude of the training FLOPs per token
    assert 6 * s.active_params < s.train_flops_per_token_without_mtp < 6 * s.active_params * 1.5


def test_hand_computed_dense_gqa_model():
    cfg = load_config(None, ["model.attention_type=gqa", "model.vocab_size=10", "model.hidden_size=4",
                             "model.num_layers=1", "model.num_heads=2", "model.num_kv_heads=1",
                             "model.head_dim=2", "model.dense_ffn_hidden=6", "model.sandwich_norm=false",
                             "model.mtp_depth=0", "moe.num_experts=0", "train.seq_length=8",
                             "model.max_position_embeddings=8"])
    s = compute_stats(cfg)
    # embed 40 + attn 4*2*(2*2 + 2*1)=48 + norms 8 + ffn 3*4*6=72 + final norm 4 + head 40
    assert s.total_params == 212 and s.total_params_without_mtp == 212
    assert s.active_params == 212 - 40
    # forward: 2*(48 + 72 + 40) matmul + attention 2*S*heads*(hd+hd) = 2*8*2*4 ; train = 3x
    assert s.train_flops_per_token == 3 * (2 * 160 + 2 * 8 * 2 * 4)


VARIANTS = [
    {},
    {"model.mtp_depth": 0, "model.sandwich_norm": "false"},
    {"model.q_lora_rank": 0, "model.tie_embeddings": "true", "model.mtp_depth": 2},
    {"moe.expert_bias": "true", "moe.num_shared_experts": 2},
    {"moe.num_experts": 0},
    {"model.attention_type": "gqa", "model.num_kv_heads": 1, "model.head_dim": 8},
]


@pytest.mark.parametrize("extra", VARIANTS)
def test_counts_equal_instantiated_model(extra):
    cfg = load_config(None, tiny_overrides(**extra))
    net = build_model(cfg)
    n = sum(int(np.prod(p.shape)) for p in net.get_parameters())
    n_mtp = sum(int(np.prod(p.shape)) for p in net.get_parameters() if p.name.startswith("mtp."))
    s = compute_stats(cfg)
    assert s.total_params == n
    assert s.total_params_without_mtp == n - n_mtp


def test_tiny_recipe_size():
    s = compute_stats(load_config("yaml/tiny_cpu.yaml"))
    assert 1e6 <= s.total_params <= 5e6
