"""The converter against the independent oracle: HF transformers' ``DeepseekV3ForCausalLM``.

A random pre-norm DeepSeek-V3 (every tensor random, norms and the router's ``e_score_correction_bias``
included) is saved with ``save_pretrained``; pangu_ms imports that directory and its logits equal HF's. The
imported checkpoint exported back (sharded) loads with ``from_pretrained``: the same tensors bit for bit, the
same logits.
torch and transformers are test dependencies (pyproject.toml ``[test]``); CI installs them, so this never skips
there.
"""
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is a test dependency: pip install -e '.[test]'")
transformers = pytest.importorskip("transformers", reason="transformers is a test dependency: pip install -e '.[test]'")


def _hf_model(experts=4, top_k=2, groups=1, group_topk=1):
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM
    cfg = DeepseekV3Config(vocab_size=96, hidden_size=32, intermediate_size=48, moe_intermediate_size=16,
                           num_hidden_layers=3, first_k_dense_replace=1, num_attention_heads=2,
                           num_key_value_heads=2, n_shared_experts=1, n_routed_experts=experts,
                           num_experts_per_tok=top_k, n_group=groups, topk_group=group_topk, routed_scaling_factor=2.5, kv_lora_rank=12, q_lora_rank=16,
                           qk_rope_head_dim=4, v_head_dim=8, qk_nope_head_dim=8, max_position_embeddings=64,
                           rms_norm_eps=1e-5, rope_theta=10000.0, norm_topk_prob=True, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = DeepseekV3ForCausalLM(cfg).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:                      # norms away from 1
                p.copy_(torch.rand_like(p) + 0.5)
            else:
                p.normal_(0.0, 0.3)
        for layer in model.model.layers[1:]:     # a selection bias that changes which experts are chosen
            layer.mlp.gate.e_score_correction_bias.copy_(torch.randn(experts) * 0.5)
    return model


def test_group_limited_routing_gives_hf_logits(tmp_path):
    """n_group / topk_group (DeepSeek-V3's node-limited routing): 8 experts in 4 groups, top-3 inside the best 2
    groups. Imported as moe.router_num_groups / router_group_topk, the logits equal HF's, and differ from the
    same weights routed over all experts (so the limit binds); exported back, config.json keeps the groups."""
    import json
    from pangu_ms.config import load_config
    from pangu_ms.interop.hf_export import export_hf
    from pangu_ms.interop.hf_import import import_hf
    from pangu_ms.interop.logits import checkpoint_logits
    model = _hf_model(experts=8, top_k=3, groups=4, group_topk=2)
    hf_dir = str(tmp_path / "hf")
    model.save_pretrained(hf_dir, safe_serialization=True)
    ids = np.random.default_rng(1).integers(0, 96, (2, 12))
    with torch.no_grad():
        ref = model(input_ids=torch.from_numpy(ids)).logits.numpy()
        for layer in model.model.layers[1:]:
            layer.mlp.gate.n_group, layer.mlp.gate.topk_group = 1, 1
        ungrouped = model(input_ids=torch.from_numpy(ids)).logits.numpy()
    assert np.abs(ref - ungrouped).max() > 1e-2
    run = str(tmp_path / "run")
    import_hf(hf_dir, run, "auto", log=lambda m: None)
    cfg = load_config(os.path.join(run, "config.yaml"))
    assert (cfg.moe.router_num_groups, cfg.moe.router_group_topk, cfg.moe.top_k) == (4, 2, 3)
    np.testing.assert_allclose(checkpoint_logits(run, ids), ref, rtol=1e-4, atol=1e-4)
    out = str(tmp_path / "exported")
    export_hf(run, out, "deepseek_v3", log=lambda m: None)
    exported = json.load(open(os.path.join(out, "config.json")))
    assert (exported["n_group"], exported["topk_group"]) == (4, 2)


def test_import_gives_hf_logits_and_export_loads_in_hf(tmp_path):
    from transformers import DeepseekV3ForCausalLM
    from pangu_ms.config import load_config
    from pangu_ms.interop.hf_export import export_hf
    from pangu_ms.interop.hf_import import import_hf
    from pangu_ms.interop.logits import checkpoint_logits
    model = _hf_model()
    hf_dir = str(tmp_path / "hf")
    model.save_pretrained(hf_dir, safe_serialization=True)
    ids = np.random.default_rng(0).integers(0, 96, (2, 12))
    with torch.no_grad():
        ref = model(input_ids=torch.from_numpy(ids)).logits.numpy()
    notes = []
    run = str(tmp_path / "run")
    import_hf(hf_dir, run, "auto", log=notes.append)
    cfg = load_config(os.path.join(run, "config.yaml"))
    assert cfg.model.sandwich_norm is False and cfg.moe.expert_bias is True and cfg.model.mtp_depth == 0
    assert cfg.model.latent_norm_eps == 1e-6 and cfg.model.norm_eps == 1e-5
    ours = checkpoint_logits(run, ids)
    assert np.abs(ref).max() > 1.0
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)
    out = str(tmp_path / "exported")
    export_hf(run, out, "deepseek_v3", shard_size=100_000, log=notes.append)
    assert len([f for f in os.listdir(out) if f.endswith(".safetensors")]) > 1
    back = DeepseekV3ForCausalLM.from_pretrained(out).float().eval()
    mine, theirs = model.state_dict(), back.state_dict()
    assert sorted(mine) == sorted(theirs)
    for name, value in mine.items():                                   # every HF tensor back bit for bit
        assert torch.equal(value, theirs[name]), name
    with torch.no_grad():
        again = back(input_ids=torch.from_numpy(ids)).logits.numpy()
    np.testing.assert_allclose(again, ref, rtol=1e-5, atol=1e-5)   # from_pretrained picks another attention kernel
