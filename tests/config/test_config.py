"""Config loading: YAML + base inheritance + overrides, types, and one clear error per violation."""
import pytest

from pangu_ms.config import ConfigError, load_config, parse_overrides


def test_recipes_load_with_published_values():
    cfg = load_config("yaml/pangu_ultra_moe_718b.yaml")
    m, e = cfg.model, cfg.moe
    assert (m.num_layers, m.num_dense_layers, m.hidden_size, m.dense_ffn_hidden) == (61, 3, 7680, 18432)
    assert (m.q_lora_rank, m.kv_lora_rank, m.qk_nope_head_dim, m.qk_rope_head_dim, m.v_head_dim) == \
        (1536, 512, 128, 64, 128)
    assert (m.num_heads, m.vocab_size, m.mtp_depth, m.rope_theta) == (128, 153600, 1, 2.56e7)
    assert (e.num_experts, e.num_shared_experts, e.expert_ffn_hidden, e.top_k) == (256, 1, 2048, 8)
    assert e.router_score == "sigmoid" and e.norm_topk_prob and e.routed_scaling_factor == 2.5
    tiny = load_config("yaml/tiny_cpu.yaml")
    assert tiny.moe.num_experts == 8 and tiny.model.sandwich_norm


def test_overrides_are_typed_and_nested():
    cfg = load_config("yaml/tiny_cpu.yaml", ["moe.top_k=4", "train.lr=1e-2", "model.sandwich_norm=false"])
    assert cfg.moe.top_k == 4 and cfg.train.lr == 1e-2 and cfg.model.sandwich_norm is False
    assert parse_overrides(["a.b.c=3", "a.d=x"]) == {"a": {"b": {"c": 3}, "d": "x"}}


def test_base_inheritance(tmp_path):
    child = tmp_path / "child.yaml"
    (tmp_path / "parent.yaml").write_text("model:\n  hidden_size: 64\n  num_heads: 2\ntrain:\n  steps: 7\n")
    child.write_text("base: parent.yaml\ntrain:\n  steps: 9\n")
    cfg = load_config(str(child))
    assert cfg.model.hidden_size == 64 and cfg.train.steps == 9


@pytest.mark.parametrize("overrides, key", [
    (["model.hiden_size=3"], "model.hiden_size: unknown key"),
    (["moe.top_k=many"], "moe.top_k: expected an integer"),
    (["model.sandwich_norm=3"], "model.sandwich_norm: expected true/false"),
    (["moe.router_score=relu"], "moe.router_score: 'relu' is not one of"),
    (["moe.top_k=9"], "moe.top_k: 9 > moe.num_experts=8"),
    (["parallel.ep=3", "parallel.dp=3", "train.global_batch_size=6"], "parallel.ep: moe.num_experts=8 is not divisible by ep=3"),
    (["parallel.ep=4"], "parallel.ep: ep=4 does not divide dp*cp=1"),
    (["parallel.tp=2", "parallel.ep=2"], "parallel.ep: ep=2 does not divide dp*cp=1"),
    (["train.seq_length=4096"], "train.seq_length: 4096 > model.max_position_embeddings=2048"),
    (["model.num_dense_layers=9"], "model.num_dense_layers: 9 > model.num_layers=4"),
    (["model.qk_rope_head_dim=7"], "model.qk_rope_head_dim: must be even"),
    (["parallel.dp=3"], "train.global_batch_size: 8 is not divisible by parallel.micro_batch_size*dp = 24"),
    (["data.path="], "data.path: required"),
    (["train.phases=[{name: a, steps: 5}]"], "train.steps: 1200 != sum of train.phases steps 5"),
    (["bogus.x=1"], "bogus: unknown key"),
])
def test_each_violation_names_its_key(overrides, key):
    with pytest.raises(ConfigError) as err:
        load_config("yaml/tiny_cpu.yaml", overrides)
    assert key in str(err.value)
    assert "yaml/tiny_cpu.yaml" in str(err.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(str(tmp_path / "nope.yaml"))
