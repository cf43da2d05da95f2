"""The config-derived parameter inventory equals the instantiated model's parameters, name by name."""
import pytest

from pangu_ms.config import load_config
from pangu_ms.model.inventory import KINDS, inventory_shapes, parameter_inventory
from pangu_ms.model.stats import compute_stats
from pangu_ms.model.build import build_model
from pangu_ms.sim.kernels import param_tensors
from tests.conftest import tiny_overrides

VARIANTS = {
    "mla_sandwich_mtp1_shared": {},
    "gqa": {"model.attention_type": "gqa", "model.num_kv_heads": 1},
    "mha_no_sandwich": {"model.attention_type": "mha", "model.sandwich_norm": "false"},
    "mtp0_no_shared": {"model.mtp_depth": 0, "moe.num_shared_experts": 0},
    "shared2_expert_bias": {"moe.num_shared_experts": 2, "moe.expert_bias": "true"},
    "dense_only_mtp1_tied": {"moe.num_experts": 0, "model.mtp_depth": 1, "model.tie_embeddings": "true"},
    "mla_no_q_lora_mtp2": {"model.q_lora_rank": 0, "model.mtp_depth": 2},
}


def _cfg(extra):
    return load_config(None, tiny_overrides(**extra))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_inventory_equals_instantiated_model(variant):
    cfg = _cfg(VARIANTS[variant])
    net = build_model(cfg)
    actual = [(name, tuple(p.shape), p.requires_grad) for name, p in net.parameters_and_names()]
    inventory = parameter_inventory(cfg)
    assert [(p.name, p.shape, p.trainable) for p in inventory] == actual      # same names, order, shapes
    assert inventory_shapes(cfg) == {name: shape for name, shape, _ in actual}
    assert all(p.kind in KINDS for p in inventory)
    for p in inventory:
        if p.layer is not None:
            assert p.name.startswith(f"layers.{p.layer}.")
        if p.mtp is not None:
            assert p.name.startswith(f"mtp.{p.mtp}.")
        for dim in (p.tp_dim, p.expert_dim):
            assert dim is None or 0 <= dim < len(p.shape), p
    # the readers: parameter count and the simulator's tensor count
    assert compute_stats(cfg).total_params == sum(p.size for p in net.get_parameters())
    assert param_tensors(cfg) == len(net.trainable_params())


def test_inventory_kinds_and_shardable_dims():
    cfg = _cfg({"moe.expert_bias": "true"})
    by_name = {p.name: p for p in parameter_inventory(cfg)}
    experts = by_name["layers.1.moe.experts.w_gate_up"]
    assert (experts.kind, experts.layer, experts.expert_dim, experts.tp_dim, experts.fused_halves) == \
        ("routed_expert", 1, 0, 2, 2)
    assert by_name["layers.1.moe.router.expert_bias"].trainable is False
    assert by_name["layers.0.attention.o_proj.weight"].tp_dim == 1          # row-parallel
    assert by_name["layers.0.attention.q_b_proj.weight"].tp_dim == 0        # column-parallel
    assert by_name["layers.0.attention.kv_a_proj.weight"].tp_dim is None    # replicated down-projection
    assert by_name["layers.0.mlp.gate_up_proj.weight"].kind == "dense_mlp"
    assert by_name["mtp.0.eh_proj.weight"].kind == "mtp"
    assert by_name["mtp.0.layer.moe.shared_expert.down_proj.weight"].kind == "shared_expert"
    assert by_name["mtp.0.layer.moe.shared_expert.down_proj.weight"].mtp == 0
    assert by_name["embedding.weight"].kind == "embedding" and by_name["embedding.weight"].layer is None
