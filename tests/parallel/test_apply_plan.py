"""The Ascend plan applied to the instantiated model on CPU (dry run): targets resolve, strategies fit the
primitives' actual input shapes, and a training step still compiles and runs with the strategies attached."""
import math

import mindspore as ms
import numpy as np
import pytest

from pangu_ms.backend import FusedCpuRMSNormKernel
from pangu_ms.config import ConfigError, load_config
from pangu_ms.model.build import build_model
from pangu_ms.model.loss import CausalLMLoss
from pangu_ms.parallel.apply_ascend import PlanError, apply_plan, check_plan
from pangu_ms.parallel.plan import build_plan

TINY = "yaml/tiny_cpu.yaml"
SMALL = ["parallel.micro_batch_size=1", "train.seq_length=16", "model.hidden_size=32", "model.vocab_size=64",
         "model.num_heads=2", "model.q_lora_rank=16", "model.kv_lora_rank=8", "model.dense_ffn_hidden=32",
         "moe.expert_ffn_hidden=16"]
LAYOUTS = {
    "tp2": ["parallel.tp=2"],
    "tp2_reference_ops": ["parallel.tp=2", "model.backend=cpu"],      # the composite norm's primitives
    "ep2": ["parallel.dp=2", "parallel.ep=2"],
    "ep2_tp2_extend": ["parallel.dp=2", "parallel.tp=2", "parallel.ep=2", "parallel.tp_extend_ep=true"],
    "ep4_tp2_etp1": ["parallel.dp=4", "parallel.tp=2", "parallel.ep=4", "parallel.etp=1"],   # MoE folding
    "pp2_vpp2": ["parallel.pp=2", "parallel.vpp=2", "parallel.dp=2", "parallel.ep=2", "train.global_batch_size=8"],
    # MTP predicts S-1 positions: 15 is not divisible by cp=2 (see test_cp_with_mtp_is_reported)
    "cp2": ["parallel.dp=2", "parallel.cp=2", "parallel.ep=2", "train.global_batch_size=4", "model.mtp_depth=0"],
}
# the 718B pre-training layout (dp 48, tp 8, pp 16, vpp 2, ep 4, tp_extend_ep, 61 layers + MTP) at tiny width
TINY_718B = ["model.hidden_size=32", "model.vocab_size=64", "model.num_heads=8", "model.q_lora_rank=16",
             "model.kv_lora_rank=8", "model.qk_nope_head_dim=4", "model.qk_rope_head_dim=4", "model.v_head_dim=4",
             "model.dense_ffn_hidden=32", "moe.num_experts=32", "moe.expert_ffn_hidden=32", "moe.top_k=2",
             "moe.dropless_impl=masked_dense", "train.seq_length=8", "model.max_position_embeddings=64",
             "model.compute_dtype=float32", "model.param_dtype=float32"]


def _setup(path, sets):
    """(config, the loss Cell wrapping the model, plan): loss-op targets resolve on the loss Cell."""
    cfg = load_config(path, sets)
    return cfg, CausalLMLoss(build_model(cfg), cfg.model.mtp_loss_weight), build_plan(cfg)


def _strategies(report) -> dict:
    """(cell path, primitive attr) -> the integer strategy the dry run attached."""
    return {(path, attr): strategy for path, attr, _, strategy in report.sharded}


def _attached(prim) -> bool:
    return bool(prim.attrs.get("in_strategy") or prim.attrs.get("in_layout"))


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_dry_run_binds_every_target(layout):
    cfg, net, plan = _setup(TINY, SMALL + LAYOUTS[layout])
    report = check_plan(net, plan, cfg)
    assert report.problems == []
    p = cfg.parallel
    # every decoder-layer linear of the model got its strategy, checked against a real call
    linears = [path for path, cell in net.model.cells_and_names() if type(cell).__name__ == "Linear"]
    assert linears and all(path.startswith(("layers.", "mtp.", "lm_head")) for path in linears)
    sharded = {(path, attr) for path, attr, _, _ in report.sharded}
    assert all((path, "matmul") in sharded for path in linears)
    assert report.checked == len(report.sharded) - len(report.unexecuted)
    # not executed: the per-group expert matmuls and the shared expert's own matmuls (the masked-dense
    # dispatcher folds the shared expert into the experts' two matmuls)
    assert {u.split(".moe.", 1)[1] for u in report.unexecuted if ".moe." in u} == {
        "experts.bmm_gate_up", "experts.bmm_down", "shared_expert.gate_up_proj.matmul",
        "shared_expert.down_proj.matmul"}
    # and with the fused CPU kernels (cpu_fused) the embedding's Gather: its C++ lookup runs instead
    fused = cfg.model.backend == "cpu_fused"
    assert {u for u in report.unexecuted if ".moe." not in u} == ({"embedding.gather"} if fused else set())
    # strategies as set on the primitives (the values the plan computes, by hand here)
    tokens = p.dp * p.cp
    got = _strategies(report)
    assert got["layers.1.attention.o_proj", "matmul"] == ((tokens, p.tp), (1, p.tp))
    assert got["layers.1.attention.q_b_proj", "matmul"] == ((tokens, 1), (p.tp, 1))
    assert got["layers.1.attention.core", "score_matmul"] == ((p.dp, p.tp, p.cp, 1), (p.dp, p.tp, 1, 1))
    norm = net.model.layers[1].input_norm.kernel
    if isinstance(norm, FusedCpuRMSNormKernel):     # the recipe's cpu_fused backend: one kernel (x, weight, eps)
        assert got["layers.1.input_norm.kernel", "fused_norm"] == ((tokens, 1), (1,), (1,))
        norm_prims = (norm.fused_norm, net.model.final_norm.kernel.fused_norm)
    else:                                           # reference: the weight expanded to x
        assert got["layers.1.input_norm.kernel", "scale"] == ((tokens, 1), (tokens, 1))
        norm_prims = (norm.scale, net.model.final_norm.kernel.mean)
    width, ffn_split, edp = plan.dims.ep_width, plan.dims.etp, plan.dims.edp      # config/expert_grid.py
    assert edp == tokens * p.tp // (width * ffn_split)
    assert got["layers.1.moe.experts", "bmm_gate_up"] == ((width, edp, 1), (width, 1, ffn_split))
    assert got["layers.1.moe.experts", "dense_gate_up"] == ((edp, 1), (width * ffn_split, 1))
    assert got["embedding", "gather"] == ((p.tp, 1), (tokens,))
    assert got["cross_entropy", "fused"] == ((tokens, p.tp), (tokens,))      # on the loss Cell
    model = net.model
    for prim in (model.embedding.gather, model.layers[1].attention.o_proj.matmul, *norm_prims,
                 model.layers[1].moe.experts.dense_down, net.cross_entropy.fused):
        assert _attached(prim)


def test_training_step_runs_with_strategies_attached():
    from pangu_ms.train.optim import build_optimizer
    from pangu_ms.train.step import TrainStep, compile_step
    cfg, net, plan = _setup(TINY, SMALL + LAYOUTS["ep2_tp2_extend"] + ["model.num_layers=2", "train.warmup_steps=0"])
    ids = np.random.default_rng(1).integers(0, cfg.model.vocab_size, (2, cfg.train.seq_length + 1))
    x, y = ms.Tensor(ids[:, :-1], ms.int32), ms.Tensor(ids[:, 1:], ms.int32)
    ms.set_context(mode=ms.PYNATIVE_MODE)
    before = float(net(x, y)[0].asnumpy())
    assert apply_plan(net, plan, cfg, dry_run=True) is net
    assert net.model.layers[1].moe.experts.dense_down.attrs["in_strategy"] == ((1, 4), (4, 1))
    step = compile_step(TrainStep(net, build_optimizer(net.trainable_params(), cfg.train), 1.0), "graph")
    first = step(x, y)[0].asnumpy()
    assert math.isclose(float(first), before, rel_tol=1e-5)     # strategies change nothing in stand-alone mode
    assert float(step(x, y)[0].asnumpy()) < float(first)


def test_718b_layout_at_tiny_width():
    cfg, net, plan = _setup("yaml/pangu_ultra_moe_718b_pretrain.yaml", TINY_718B)
    assert (cfg.parallel.dp, cfg.parallel.tp, cfg.parallel.pp, cfg.parallel.ep) == (48, 8, 16, 4)
    assert [len(c) for c in plan.stages.chunks] == [1] + [2] * 30 + [1]
    report = check_plan(net, plan, cfg)
    assert report.problems == [] and report.checked > 900
    # masked-dense experts: [T, d] x [(E+1) 2F, d]^T with the shared expert folded in; (32+1)*64 rows split
    # over the EP width 32 (expert_ffn_hidden=8 would make it 33*16, indivisible: the check reports that)
    got = _strategies(report)
    assert got["layers.3.moe.experts", "bmm_gate_up"] == ((32, 12, 1), (32, 1, 1))
    assert got["layers.3.moe.experts", "dense_gate_up"] == ((12, 1), (32, 1))
    assert got["lm_head", "matmul"] == ((48, 1), (8, 1))


def test_cp_with_mtp_is_reported():
    cfg, net, plan = _setup(TINY, SMALL + LAYOUTS["cp2"][:-1])
    problems = check_plan(net, plan, cfg).problems
    assert any(p.startswith("mtp.0.layer.attention.core.score_matmul") and "(15 of" in p for p in problems)
    assert not any(p.startswith("layers.") for p in problems)


def test_wrong_target_and_wrong_rank_are_reported():
    cfg, net, plan = _setup(TINY, SMALL + LAYOUTS["tp2"])
    plan.op("attention.o_proj").cell = "layers.{i}.attention.out_proj"
    with pytest.raises(PlanError, match="missing cell 'layers.0.attention.out_proj'"):
        apply_plan(net, plan, cfg, dry_run=True)
    cfg, net, plan = _setup(TINY, SMALL + LAYOUTS["tp2"])
    spec = plan.op("attention.kv_b_proj").inputs[0]                 # x [T, kvl] declared as 3-D
    spec.shape, spec.dims = (1,) + spec.shape, ((),) + spec.dims
    plan.op("mlp.gate_up_proj").attr = "matmul_gate_up"
    problems = check_plan(net, plan, cfg).problems
    assert "layers.0.mlp.gate_up_proj: no primitive 'matmul_gate_up' for op mlp.gate_up_proj (cell Linear)" in problems
    plan.op("mlp.gate_up_proj").attr = "matmul"
    problems = check_plan(net, plan, cfg).problems
    assert any(p.startswith("layers.0.attention.kv_b_proj.matmul") and "rank 2" in p for p in problems)


def test_ascend_backend_on_cpu_is_one_clear_error():
    from pangu_ms import backend
    assert backend.AscendBackend.name == "ascend"                    # importing it is harmless on CPU
    cfg = load_config(TINY, SMALL + ["model.backend=ascend"])
    with pytest.raises(ConfigError, match="model.backend=ascend needs an Ascend device"):
        build_model(cfg)
    with pytest.raises(ConfigError, match="model.backend"):
        load_config(TINY, ["model.backend=npu"])
