"""The Ascend shard plan tested as data on CPU (nothing here imports MindSpore parallel or compiles a graph)."""
import json
import subprocess
import sys
from math import prod

import pytest

from pangu_ms.config import load_config as _load_config
from pangu_ms.config import ConfigError
from pangu_ms.parallel.dims import ParallelDims
from pangu_ms.parallel.plan import (MESHES, build_plan, fused_shard_permutation, local_slice, plan_problems,
                                    validate_plan)
from pangu_ms.parallel.stages import assign_stages, chunk_sizes


def _load(path, sets=()):
    """The tiny recipe trains with micro-batch 8 (no accumulation); layout tests use micro-batch 1."""
    pre = ["parallel.micro_batch_size=1"] if path.endswith("tiny_cpu.yaml") else []
    return _load_config(path, pre + list(sets))


TINY = "yaml/tiny_cpu.yaml"
BIG = "yaml/pangu_ultra_moe_718b_pretrain.yaml"

TINY_LAYOUTS = [
    [],
    ["parallel.dp=2", "parallel.ep=2"],
    ["parallel.dp=4", "parallel.ep=2", "parallel.optimizer_shard=true"],
    ["parallel.dp=2", "parallel.tp=2", "parallel.ep=2"],
    ["parallel.dp=2", "parallel.tp=2", "parallel.ep=2", "parallel.tp_extend_ep=true"],
    ["parallel.dp=2", "parallel.tp=4", "parallel.ep=2", "parallel.tp_extend_ep=true", "parallel.optimizer_shard=true"],
    ["parallel.dp=2", "parallel.tp=2", "parallel.pp=2", "parallel.ep=2", "train.global_batch_size=8"],
    ["parallel.dp=2", "parallel.cp=2", "parallel.ep=2", "train.global_batch_size=4"],
    ["parallel.pp=2", "parallel.vpp=2", "parallel.dp=2", "parallel.ep=2", "train.global_batch_size=8"],
    # expert grid decoupled from tp (parallel.etp): EP 4 x ETP 1 x EDP 2 at tp 2; EP 2 x ETP 2 x EDP 2 at tp 4
    ["parallel.dp=4", "parallel.tp=2", "parallel.ep=4", "parallel.etp=1", "train.global_batch_size=4"],
    ["parallel.dp=2", "parallel.tp=4", "parallel.ep=2", "parallel.etp=2"],
]
CASES = [(TINY, s) for s in TINY_LAYOUTS] + [(BIG, [])]


@pytest.fixture(scope="module")
def big_plan():
    return build_plan(_load(BIG))


def _plan(path, sets):
    return build_plan(_load(path, sets))


def _all_specs(plan):
    return [p.spec for p in plan.params] + [t for o in plan.ops for t in o.inputs]


@pytest.mark.parametrize("path,sets", CASES)
def test_strategies_products_and_divisibility(path, sets):
    plan = _plan(path, sets)
    assert plan_problems(plan) == []
    world, stage = plan.dims.world, plan.dims.stage_size
    for mesh in MESHES.values():
        assert prod(plan.axis_sizes[a] for a in mesh) == stage
    for s in _all_specs(plan):
        f = s.factors(plan.axis_sizes)
        used = s.axes()
        assert len(used) == len(set(used)), s
        assert prod(f) == prod(plan.axis_sizes[a] for a in used), s  # product = devices of the dims used
        assert prod(f) <= stage <= world
        for dim, k in zip(s.shape, f):
            assert dim % k == 0, (s.name, s.shape, f)
    for o in plan.ops:
        st = plan.strategy(o)
        assert len(st) == len(o.inputs) and all(len(a) == len(t.shape) for a, t in zip(st, o.inputs))


@pytest.mark.parametrize("path,sets", CASES)
def test_ep_strategy_matches_dispatcher(path, sets):
    """Each EP rank r holds experts [r*E/W, (r+1)*E/W) under the plan's Layout semantics, as in dims."""
    plan = _plan(path, sets)
    d = plan.dims
    E = d.num_experts
    for pat in ("layers.{i}.moe.experts.w_gate_up", "layers.{i}.moe.experts.w_down"):
        spec = plan.param(pat).spec
        assert spec.factors(plan.axis_sizes)[0] == d.ep_width
        ranks = range(d.world) if d.world <= 64 else list(range(0, d.world, 97)) + [d.world - 1]
        for r in ranks:
            lo, hi = local_slice(plan, spec, r)[0]
            assert range(lo, hi) == d.experts_of(r), (pat, r)
            ep_rank = d.group_of("ep", r).index(r)
            assert (lo, hi) == (ep_rank * E // d.ep_width, (ep_rank + 1) * E // d.ep_width)
            if d.etp > 1:  # the FFN dim is split over the expert-TP group (etp; = tp without tp_extend_ep)
                fdim = 2 if pat.endswith("w_gate_up") else 1
                k = local_slice(plan, spec, r)[fdim]
                assert (k[1] - k[0]) * d.etp == spec.shape[fdim]
                assert k[0] // (k[1] - k[0]) == d.coord(r).etp == d.group_of("expert_tp", r).index(r)


@pytest.mark.parametrize("path,sets", CASES[:3] + CASES[-1:])
def test_dense_slices_follow_tp_rank(path, sets):
    plan = _plan(path, sets)
    d = plan.dims
    spec = plan.param("layers.{i}.attention.o_proj.weight").spec  # row-parallel [H, nh*v]
    for r in range(0, d.world, max(1, d.world // 50)):
        (r0, r1), (c0, c1) = local_slice(plan, spec, r)
        assert (r0, r1) == (0, spec.shape[0])
        assert c0 == d.coord(r).tp * (c1 - c0)


def test_718b_plan(big_plan):
    p = big_plan
    assert p.dims.world == 6144 and plan_problems(p) == []
    assert p.strategy(p.op("attention.q_b_proj")) == ((48, 1), (8, 1))
    assert p.strategy(p.op("attention.o_proj")) == ((48, 8), (1, 8))
    assert p.strategy(p.op("moe.experts.gate_up")) == ((32, 12, 1), (32, 1, 1))
    assert p.strategy(p.op("embedding")) == ((8, 1), (48,))  # token ids flattened to [B*S]
    assert p.layout(p.op("moe.experts.gate_up"))["inputs"][1] == ("ep", "None", "None")   # ep = width 32, etp 1
    assert p.layout(p.op("moe.experts.gate_up"))["device_matrix"] == (12, 32, 1)
    semi, auto = p.context["semi_auto"], p.context["auto"]
    assert semi["parallel_mode"] == "semi_auto_parallel" and semi["pipeline_stages"] == 16
    assert semi["pipeline_config"]["pipeline_interleave"] is True
    assert auto["parallel_mode"] == "auto_parallel" and auto["search_mode"] == "sharding_propagation"
    assert semi["enable_parallel_optimizer"] and semi["device_num"] == 6144
    assert p.num_micro_batches == 64 and p.context["pipeline"]["micro_size"] == 64
    # seeds of the sharding-propagation mode include the explicit EP strategies
    seeds = {o.name for o in p.ops if o.seed}
    assert {"moe.experts.gate_up", "moe.experts.down"} <= seeds
    # optimizer sharding: experts' 8 local experts can be cut 4 ways over their 12 replicas
    ex = p.param("layers.{i}.moe.experts.w_gate_up")
    assert ex.replicas == 12 and ex.opt_shard == 4
    assert p.param("layers.{i}.attention.q_b_proj.weight").replicas == 48
    json.dumps(p.as_dict(), default=list)


def test_718b_stage_assignment(big_plan):
    st = big_plan.stages
    assert (st.pp, st.vpp, len(st.chunks)) == (16, 2, 32)
    assert [len(c) for c in st.chunks] == [1] + [2] * 30 + [1]
    assert st.chunks[0] == ["layers.0"] and st.chunks[-1] == ["mtp.0"]
    assert st.stage_of["mtp.0"] == 15 and st.stage_of["lm_head"] == 15 and st.stage_of["embedding"] == 0
    per_stage = [sum(len(c) for c in st.stage_items(s)) for s in range(16)]
    assert per_stage == [3] + [4] * 14 + [3]  # stage 15: 2 layers + MTP


@pytest.mark.parametrize("L,D,pp,vpp", [(61, 1, 16, 2), (4, 1, 2, 1), (4, 1, 2, 2), (4, 0, 4, 1), (7, 2, 3, 1),
                                        (10, 1, 1, 1), (61, 1, 8, 4), (30, 3, 4, 2)])
def test_stage_assignment_covers_layers_in_order(L, D, pp, vpp):
    st = assign_stages(L, D, pp, vpp)
    flat = [it for c in st.chunks for it in c]
    assert flat == [f"layers.{i}" for i in range(L)] + [f"mtp.{j}" for j in range(D)]
    assert all(c for c in st.chunks) and len(st.chunks) == pp * vpp
    for c, items in enumerate(st.chunks):
        for it in items:
            assert st.stage_of[it] == c % pp and st.chunk_of[it] == c
    assert all(st.stage_of[f"mtp.{j}"] == pp - 1 for j in range(D))
    sizes = [len(c) for c in st.chunks]
    assert max(sizes) - min(sizes) <= 1
    # lighter chunks sit at the ends
    if max(sizes) > min(sizes):
        assert sizes[-1] == min(sizes)


def test_chunk_sizes_errors():
    with pytest.raises(ValueError):
        chunk_sizes(3, 4)
    with pytest.raises(ValueError, match="fewer than mtp_depth"):
        assign_stages(5, 3, 2, 2)  # 8 items in 4 chunks of 2 < 3 MTP modules
    with pytest.raises(ValueError):
        assign_stages(4, 1, 2, 1, sizes=[4, 2])


def test_param_patterns_cover_the_contract():
    plan = _plan(TINY, ["parallel.dp=2", "parallel.ep=2"])
    m = _load(TINY).model
    names = ["embedding.weight", "final_norm.weight", "lm_head.weight"]
    layer = ["input_norm.weight", "post_attn_norm.weight", "pre_mlp_norm.weight", "post_mlp_norm.weight",
             "attention.q_a_proj.weight", "attention.q_a_norm.weight", "attention.q_b_proj.weight",
             "attention.kv_a_proj.weight", "attention.kv_a_norm.weight", "attention.kv_b_proj.weight",
             "attention.o_proj.weight"]
    dense = ["mlp.gate_up_proj.weight", "mlp.down_proj.weight"]
    moe = ["moe.router.weight", "moe.experts.w_gate_up", "moe.experts.w_down",
           "moe.shared_expert.gate_up_proj.weight", "moe.shared_expert.down_proj.weight"]
    for i in range(m.num_layers):
        names += [f"layers.{i}.{n}" for n in layer + (dense if i < m.num_dense_layers else moe)]
    names += ["mtp.0.enorm.weight", "mtp.0.hnorm.weight", "mtp.0.eh_proj.weight", "mtp.0.final_norm.weight"]
    names += [f"mtp.0.layer.{n}" for n in layer + moe]
    for n in names:
        assert plan.match_param(n) is not None, n
    assert plan.match_param("layers.0.attention.nonexistent.weight") is None
    assert plan.match_param("layers.3.moe.experts.w_down").spec.shape == (8, 64, 128)


def test_fused_shard_permutation():
    F, tp = 6, 3
    rows = [f"g{i}" for i in range(F)] + [f"u{i}" for i in range(F)]
    perm = fused_shard_permutation(2 * F, tp)
    new = [rows[i] for i in perm]
    blk = 2 * F // tp
    assert new[:blk] == ["g0", "g1", "u0", "u1"]
    for k in range(tp):
        sl = new[k * blk:(k + 1) * blk]
        assert sl == [f"g{2 * k}", f"g{2 * k + 1}", f"u{2 * k}", f"u{2 * k + 1}"]
    assert sorted(perm) == list(range(2 * F))
    with pytest.raises(ValueError):
        fused_shard_permutation(10, 3)


def test_plan_problems_catch_bad_specs():
    plan = _plan(TINY, ["parallel.dp=2", "parallel.tp=2", "parallel.ep=2"])
    spec = plan.param("layers.{i}.attention.q_b_proj.weight").spec
    spec.shape = (spec.shape[0] + 1, spec.shape[1])
    spec.dims = (("tp", "tp"), ())
    probs = plan_problems(plan)
    assert any("not divisible" in p for p in probs) and any("shards two dimensions" in p for p in probs)
    with pytest.raises(ConfigError, match="^shard plan:"):
        validate_plan(plan)


def test_build_plan_rejects_bad_layout():
    with pytest.raises(ConfigError, match="ep=2 does not divide dp\\*cp=1"):
        build_plan(_load(TINY, ["parallel.tp=2", "parallel.ep=2"]))


def test_apply_plan_refuses_cpu_and_resolves_real_cells():
    pytest.importorskip("mindspore")
    from pangu_ms.model.build import build_model
    from pangu_ms.parallel.apply_ascend import AscendOnlyError, apply_plan, resolve_targets
    sets = ["parallel.dp=2", "parallel.ep=2", "model.hidden_size=32", "model.vocab_size=64"]
    cfg = _load(TINY, sets)
    plan = build_plan(cfg)
    net = build_model(cfg)
    with pytest.raises(AscendOnlyError, match="Ascend-only"):
        apply_plan(net, plan, cfg)
    cells = dict(net.cells_and_names())
    targets, missing = resolve_targets(plan, cells, cfg)
    assert missing == []
    paths = {(path, attr) for path, _, attr, _ in targets}
    assert {("layers.0.attention.q_b_proj", "matmul"), ("mtp.0.layer.moe.experts", "bmm_gate_up"),
            ("layers.1.attention.core", "attention"), ("embedding", "gather"), ("final_norm", "norm")} <= paths
    assert ("layers.0.moe.experts", "bmm_gate_up") not in paths   # layer 0 is dense in the tiny model
    assert not any(op.root == "loss" for _, _, _, op in targets)  # no loss Cell given: loss op not resolved


def _cli(*args, timeout=60):
    return subprocess.run([sys.executable, "tools/show_plan.py", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_show_plan_cli():
    r = _cli("--config", BIG)
    assert r.returncode == 0, r.stderr
    assert "validates for 6144 devices" in r.stderr and "stage  15" in r.stdout
    r = _cli("--config", TINY, "--set", "parallel.dp=2", "--set", "parallel.ep=2", "--set",
             "parallel.micro_batch_size=4", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["problems"] == [] and d["layout"]["world"] == 2
    r = _cli("--config", TINY, "--set", "parallel.tp=2", "--set", "parallel.ep=2")
    assert r.returncode == 2 and "ep=2 does not divide dp*cp=1" in r.stderr
    r = _cli("--config", TINY, "--set", "parallel.ep=3")
    assert r.returncode == 2 and "moe.num_experts=8 is not divisible by ep=3" in r.stderr
    assert _cli("--help").returncode == 0


def test_show_plan_dry_run_cli():
    small = ["--set", "parallel.micro_batch_size=1", "--set", "model.hidden_size=32", "--set", "model.vocab_size=64", "--set", "train.seq_length=16",
             "--set", "model.num_layers=2"]
    r = _cli("--config", TINY, "--set", "parallel.dp=2", "--set", "parallel.ep=2", *small, "--dry-run", timeout=600)
    assert r.returncode == 0, r.stderr
    assert "dry run: " in r.stderr and "training step ran" in r.stderr
    r = _cli("--config", TINY, "--set", "parallel.dp=2", "--set", "parallel.cp=2", "--set", "parallel.ep=2",
             "--set", "train.global_batch_size=4", *small, "--dry-run", timeout=600)
    assert r.returncode == 2 and "mtp.0.layer.attention.core.score_matmul" in r.stderr
