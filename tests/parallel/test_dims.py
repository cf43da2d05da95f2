"""ParallelDims: coordinates, groups, experts, hierarchical split, layout validation (pure Python, fast)."""
import itertools

import pytest

from pangu_ms.config import load_config as _load_config
from pangu_ms.config import ConfigError
from pangu_ms.parallel.dims import (GROUP_KINDS, ParallelDims, group_name, layout_problems, partitions_world,
                                    validate_layout)


def _load(path, sets=()):
    """The tiny recipe trains with micro-batch 8 (no accumulation); layout tests use micro-batch 1."""
    pre = ["parallel.micro_batch_size=1"] if path.endswith("tiny_cpu.yaml") else []
    return _load_config(path, pre + list(sets))

TINY = "yaml/tiny_cpu.yaml"
BIG = "yaml/pangu_ultra_moe_718b_pretrain.yaml"

LAYOUTS = [
    dict(dp=1),
    dict(dp=2, ep=2),
    dict(dp=4, ep=2),
    dict(dp=2, tp=2, ep=2),
    dict(dp=2, tp=2, ep=2, tp_extend_ep=True),
    dict(dp=2, tp=2, pp=2, cp=2, ep=2, vpp=2),
    dict(dp=4, tp=2, pp=2, cp=1, ep=4, tp_extend_ep=True, ranks_per_node=4),
    dict(dp=2, tp=1, pp=1, cp=2, ep=4, ranks_per_node=2),
]


def _dims(**kw):
    kw.setdefault("num_experts", 16)
    return ParallelDims(**kw)


@pytest.mark.parametrize("kw", LAYOUTS)
def test_rank_coord_bijection(kw):
    d = _dims(**kw)
    seen = set()
    for r in range(d.world):
        c = d.coord(r)
        assert d.rank_of(c.pp, c.dp, c.cp, c.tp) == r
        assert d.expert_rank_of(c.pp, c.edp, c.ep, c.etp) == r
        seen.add((c.pp, c.dp, c.cp, c.tp))
    assert len(seen) == d.world
    grid = itertools.product(range(d.pp), range(d.dp), range(d.cp), range(d.tp))
    assert sorted(d.rank_of(*g) for g in grid) == list(range(d.world))


@pytest.mark.parametrize("kw", LAYOUTS)
def test_groups_partition_world(kw):
    d = _dims(**kw)
    expect = {"dp": d.dp, "tp": d.tp, "pp": d.pp, "cp": d.cp, "dp_cp": d.dp * d.cp, "ep": d.ep_width,
              "expert_dp": d.edp, "expert_tp": d.etp}
    for kind, size in expect.items():
        gs = d.groups(kind)
        assert partitions_world(gs, d.world), kind
        assert {len(g) for g in gs} == {size}, kind
    # each rank's groups intersect exactly in itself (orthogonality)
    for r in range(d.world):
        g = d.rank_groups(r)
        assert set(g["dp"]) & set(g["tp"]) == {r}
        assert set(g["ep"]) & set(g["expert_dp"]) == {r}
        assert set(g["pp"]) & set(g["dp_cp"]) == {r}
        # the EP group and expert-DP group live inside one pipeline stage
        assert {d.coord(x).pp for x in g["ep"] + g["expert_dp"]} == {d.coord(r).pp}


def test_dense_groups_coordinates():
    d = _dims(dp=2, tp=2, pp=2, cp=2, ep=2)
    for g in d.groups("tp"):
        assert len({(d.coord(r).pp, d.coord(r).dp, d.coord(r).cp) for r in g}) == 1
        assert g == tuple(range(g[0], g[0] + d.tp))  # TP is the fastest axis: contiguous
    for g in d.groups("pp"):
        assert [d.coord(r).pp for r in g] == list(range(d.pp))
    # a stage is a contiguous block of stage_size ranks (MindSpore's pipeline_stages split)
    for r in range(d.world):
        assert d.coord(r).pp == r // d.stage_size


@pytest.mark.parametrize("kw", LAYOUTS)
def test_expert_ownership(kw):
    d = _dims(**kw)
    W, E = d.ep_width, d.num_experts
    for g in d.groups("ep"):
        owned = []
        for pos, r in enumerate(g):  # ranks of an EP group in order are EP ranks 0..W-1
            assert d.coord(r).ep == pos
            ex = d.experts_of(r)
            assert ex == range(pos * E // W, (pos + 1) * E // W)
            owned += list(ex)
        assert owned == list(range(E))  # every expert exactly once per EP group
    for g in d.groups("expert_dp"):  # replicas hold the same experts
        assert len({tuple(d.experts_of(r)) for r in g}) == 1
    for e in range(E):
        assert d.expert_owner(e) == e // (E // W)


def test_tp_extend_ep_folds_tp_into_ep():
    d = _dims(dp=2, tp=2, ep=2, tp_extend_ep=True)
    assert d.ep_width == 4 and d.etp == 1 and d.edp == 1
    assert d.groups("ep") == [(0, 1, 2, 3)]
    assert d.group_of("tp", 0) == (0, 1)
    d2 = _dims(dp=2, tp=2, ep=2)
    assert d2.ep_width == 2 and d2.etp == 2
    assert d2.groups("ep") == [(0, 2), (1, 3)]
    assert d2.groups("expert_tp") == [(0, 1), (2, 3)]


@pytest.mark.parametrize("kw", [
    dict(dp=4, ep=4, ranks_per_node=2),
    dict(dp=4, ep=2, ranks_per_node=2),
    dict(dp=8, ep=8, ranks_per_node=4),
    dict(dp=4, tp=2, ep=4, tp_extend_ep=True, ranks_per_node=2),
    dict(dp=2, ep=2, ranks_per_node=8),
])
def test_hierarchical_groups(kw):
    d = _dims(**kw)
    h = d.hierarchical_groups()
    assert partitions_world(h["inner"], d.world) and partitions_world(h["outer"], d.world)
    for g in h["inner"]:
        assert len({d.node_of(r) for r in g}) == 1  # inner = one node
    for g in h["outer"]:
        assert len({d.node_of(r) for r in g}) == len(g)  # outer = one rank per node
    for r in range(d.world):
        inner, outer = d.hierarchical_of(r)
        ep = d.group_of("ep", r)
        assert set(inner) <= set(ep) and set(outer) <= set(ep)
        assert set(inner) & set(outer) == {r}
        assert len(inner) * len(outer) == len(ep)
        assert d.ranks_per_node % len(inner) == 0 or len(inner) == d.ranks_per_node


def test_hierarchical_718b_is_tp_inside_node():
    d = validate_layout(_load(BIG))
    inner, outer = d.hierarchical_of(0)
    assert inner == tuple(range(8)) == d.group_of("tp", 0)
    assert outer == (0, 8, 16, 24)


def test_hierarchical_unequal_nodes_rejected():
    d = _dims(dp=6, ep=6, ranks_per_node=4)  # EP group of 6 on nodes of 4: 4 + 2
    with pytest.raises(ConfigError, match="unequal number of members per node"):
        d.hierarchical_split(d.groups("ep")[0])


def test_group_name_deterministic_and_distinct():
    d = _dims(dp=4, tp=2, ep=2)
    names = {group_name(k, g) for k in ("dp", "tp", "ep") for g in d.groups(k)}
    assert len(names) == sum(len(d.groups(k)) for k in ("dp", "tp", "ep"))
    big = tuple(range(0, 384, 8))
    assert group_name("dp", big) == group_name("dp", list(big)) and len(group_name("dp", big)) < 64


def test_718b_layout_validates_for_6144():
    cfg = _load(BIG)
    p = cfg.parallel
    assert (p.tp, p.pp, p.vpp, p.ep, p.micro_batch_size, p.dp) == (8, 16, 2, 4, 2, 48)
    assert p.device_num == 6144 and p.tp_extend_ep and p.hierarchical_alltoall
    assert layout_problems(cfg, world_size=6144) == []
    d = validate_layout(cfg, world_size=6144)
    assert d.world == 6144 and d.ep_width == 32 and d.experts_per_rank == 8 and d.edp == 12
    assert sorted(GROUP_KINDS) == sorted(d.rank_groups(6000))  # last stage: has an embedding group
    assert d.rank_groups(6000)["embedding"] == (240, 6000)
    assert "embedding" not in d.rank_groups(5000)  # middle stage


BAD = [
    (TINY, ["parallel.dp=2", "parallel.tp=2", "parallel.ep=2", "model.dense_ffn_hidden=255"],
     "dense_ffn_hidden=255 is not divisible by tp=2"),
    (TINY, ["parallel.dp=2", "parallel.tp=2", "parallel.ep=2", "model.vocab_size=513"],
     "vocab_size=513 is not divisible by tp=2"),
    (TINY, ["parallel.dp=2", "parallel.tp=2", "parallel.ep=2", "moe.expert_ffn_hidden=63"],
     "expert_ffn_hidden=63 is not divisible by tp=2"),
    (TINY, ["parallel.dp=2", "parallel.tp=2", "parallel.ep=1", "parallel.tp_extend_ep=true",
            "moe.dispatcher=drop_and_pad"], "needs moe.dispatcher=dropless"),
    (TINY, ["parallel.dp=6", "parallel.ep=2", "parallel.hierarchical_alltoall=true", "parallel.ranks_per_node=4",
            "train.global_batch_size=6"], "not a multiple of ranks_per_node=4"),
    (TINY, ["parallel.dp=6", "parallel.ep=6", "moe.num_experts=12", "parallel.hierarchical_alltoall=true",
            "parallel.ranks_per_node=3", "train.global_batch_size=6", "parallel.ranks_per_node=4"],
     "not a multiple of ranks_per_node"),
    (TINY, ["parallel.pp=2", "parallel.vpp=2", "train.global_batch_size=3"],
     "3 micro-batches per step is not a multiple of pp=2"),
    (TINY, ["parallel.pp=5", "model.mtp_depth=2", "model.num_layers=6", "train.global_batch_size=5"],
     "MTP modules do not fit the last virtual stage"),
    (TINY, ["parallel.dp=2", "parallel.tp=2", "parallel.ranks_per_node=1"],
     "parallel.tp: 2 > parallel.ranks_per_node=1; a TP group must lie inside one node"),
    (TINY, ["parallel.pp=2", "parallel.vpp=2", "sim.pp_schedule=dualpipe"], "dualpipe needs an even pp and vpp=1"),
    (TINY, ["parallel.pp=2", "parallel.layers_per_virtual_stage=[1,4]"],
     "parallel.layers_per_virtual_stage: [1, 4] is set, but parallel.pipeline_split is 'balanced'"),
]


@pytest.mark.parametrize("path,sets,msg", BAD)
def test_bad_layouts_one_line_error(path, sets, msg):
    cfg = _load(path, sets)  # the basic checks pass ...
    problems = layout_problems(cfg)  # ... the layout checks do not
    assert problems and msg in problems[0], problems
    assert all("\n" not in p for p in problems)
    with pytest.raises(ConfigError, match="^parallel|^model|^train|^sim"):
        validate_layout(cfg)


def test_from_config_carries_the_run_shape():
    """The one layout type holds what the simulator costs: micro-batches, tokens per micro-batch, schedule."""
    d = ParallelDims.from_config(_load(BIG))
    assert (d.micro_batch_size, d.seq_length, d.global_batch_size) == (2, 4096, 6144)
    assert d.micro_batches == 64 and d.tokens_per_micro == 2 * 4096
    assert d.pipeline_schedule == "interleaved" and d.expert_shards == 32 and d.optimizer_shard
    tiny = ParallelDims.from_config(_load(TINY, ["parallel.pp=2", "parallel.cp=2", "train.seq_length=64"]))
    assert tiny.pipeline_schedule == "1f1b" and tiny.tokens_per_micro == 32


def test_world_size_mismatch():
    cfg = _load(TINY, ["parallel.dp=2"])
    assert layout_problems(cfg, world_size=2) == []
    assert "launched with 4 ranks but dp*tp*pp*cp" in layout_problems(cfg, world_size=4)[0]


def test_hierarchical_unequal_via_config():
    cfg = _load(TINY, ["parallel.dp=6", "parallel.ep=6", "moe.num_experts=12",
                             "parallel.hierarchical_alltoall=true", "parallel.ranks_per_node=3",
                             "train.global_batch_size=6", "parallel.pp=1"])
    # 6 ranks on nodes of 3: equal (3 + 3) -> valid; nodes of 4 are rejected above
    assert layout_problems(cfg) == []
    d = ParallelDims.from_config(cfg)
    assert d.hierarchical_of(4) == ((3, 4, 5), (1, 4))


# ------------------------------------------------------------------ expert grid (parallel.etp, MoE parallel folding)
# hand-computed: rank -> (edp, ep, etp) with local index l = (edp * W + ep) * ETP + etp
GRID_TABLES = [
    # dp4 tp2 ep4 etp1: S = 8, W = 4, ETP = 1, EDP = 2
    (dict(dp=4, tp=2, ep=4, etp=1), (4, 1, 2),
     [(0, 0, 0), (0, 1, 0), (0, 2, 0), (0, 3, 0), (1, 0, 0), (1, 1, 0), (1, 2, 0), (1, 3, 0)],
     {"ep": [(0, 1, 2, 3), (4, 5, 6, 7)], "expert_dp": [(0, 4), (1, 5), (2, 6), (3, 7)],
      "expert_tp": [(r,) for r in range(8)]}),
    # dp2 tp2 ep2 etp2: S = 4, W = 2, ETP = 2, EDP = 1
    (dict(dp=2, tp=2, ep=2, etp=2), (2, 2, 1),
     [(0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1)],
     {"ep": [(0, 2), (1, 3)], "expert_dp": [(r,) for r in range(4)], "expert_tp": [(0, 1), (2, 3)]}),
    # dp2 tp4 ep2 etp2 (1 < etp < tp): S = 8, W = 2, ETP = 2, EDP = 2
    (dict(dp=2, tp=4, ep=2, etp=2), (2, 2, 2),
     [(0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1), (1, 0, 0), (1, 0, 1), (1, 1, 0), (1, 1, 1)],
     {"ep": [(0, 2), (1, 3), (4, 6), (5, 7)], "expert_dp": [(0, 4), (1, 5), (2, 6), (3, 7)],
      "expert_tp": [(0, 1), (2, 3), (4, 5), (6, 7)]}),
    # dp4 tp1 ep2 etp2 (etp > tp: experts tensor-parallel over data ranks): S = 4, W = 2, ETP = 2, EDP = 1
    (dict(dp=4, tp=1, ep=2, etp=2), (2, 2, 1),
     [(0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1)],
     {"ep": [(0, 2), (1, 3)], "expert_dp": [(r,) for r in range(4)], "expert_tp": [(0, 1), (2, 3)]}),
]


@pytest.mark.parametrize("kw,sizes,coords,groups", GRID_TABLES)
def test_expert_grid_hand_table(kw, sizes, coords, groups):
    d = _dims(**kw)
    assert (d.ep_width, d.etp, d.edp) == sizes
    assert [(c.edp, c.ep, c.etp) for c in map(d.coord, range(d.world))] == coords
    for kind, want in groups.items():
        assert d.groups(kind) == want, kind
    for r in range(d.world):
        c = d.coord(r)
        assert d.expert_rank_of(c.pp, c.edp, c.ep, c.etp) == r
        assert d.experts_of(r) == range(c.ep * 16 // d.ep_width, (c.ep + 1) * 16 // d.ep_width)


@pytest.mark.parametrize("kw", [dict(dp=4, tp=2, ep=4, etp=1), dict(dp=2, tp=4, ep=2, etp=2, pp=2),
                                dict(dp=4, tp=2, cp=2, ep=8, etp=2, ranks_per_node=4),
                                dict(dp=16, tp=2, ep=32, etp=1, num_experts=128)])
def test_expert_groups_partition_each_stage(kw):
    """ep x expert_tp x expert_dp partition the world; inside a stage each pair of them meets in one rank."""
    d = _dims(**kw)
    sizes = {"ep": d.ep_width, "expert_tp": d.etp, "expert_dp": d.edp}
    assert d.ep_width * d.etp * d.edp == d.stage_size
    for kind, n in sizes.items():
        gs = d.groups(kind)
        assert partitions_world(gs, d.world) and {len(g) for g in gs} == {n}, kind
        assert all(len({d.coord(r).pp for r in g}) == 1 for g in gs)        # never across stages
    for r in range(d.world):
        ep, tp_, dp_ = (set(d.group_of(k, r)) for k in ("ep", "expert_tp", "expert_dp"))
        assert ep & tp_ == ep & dp_ == tp_ & dp_ == {r}


@pytest.mark.parametrize("legacy,folded", [
    (dict(dp=4, tp=2, ep=2, tp_extend_ep=True), dict(dp=4, tp=2, ep=4, etp=1)),      # extend == etp 1, W = ep*tp
    (dict(dp=4, tp=2, ep=2, tp_extend_ep=True), dict(dp=4, tp=2, ep=2, etp=1, tp_extend_ep=True)),
    (dict(dp=2, tp=2, ep=2), dict(dp=2, tp=2, ep=2, etp=2)),                         # no extend == etp tp
    (dict(dp=4, tp=2, pp=2, ep=4, tp_extend_ep=True, ranks_per_node=4),
     dict(dp=4, tp=2, pp=2, ep=8, etp=1, ranks_per_node=4)),
])
def test_tp_extend_ep_is_a_special_case_of_etp(legacy, folded):
    a, b = _dims(**legacy), _dims(**folded)
    assert (a.ep_width, a.etp, a.edp, a.expert_shards) == (b.ep_width, b.etp, b.edp, b.expert_shards)
    assert [a.coord(r) for r in range(a.world)] == [b.coord(r) for r in range(b.world)]
    for kind in GROUP_KINDS:
        assert a.groups(kind) == b.groups(kind), kind


@pytest.mark.parametrize("kw,msg", [
    (dict(dp=2, tp=2, ep=2, etp=2, tp_extend_ep=True), r"parallel\.etp / parallel\.tp_extend_ep: etp=2 contradicts"),
    (dict(dp=16, tp=2, ep=32), r"ep=32 does not divide dp\*cp=16.*set parallel\.etp=1"),
    (dict(dp=16, tp=2, ep=64, etp=1), r"parallel\.ep: ep\*etp = 64\*1 = 64 does not divide dp\*cp\*tp = 16\*1\*2 = 32"),
    (dict(dp=4, tp=2, ep=2, etp=0), r"parallel\.etp: must be an integer > 0"),
    (dict(dp=4, tp=2, ep=4, etp=4), r"ep\*etp = 4\*4 = 16 does not divide"),
])
def test_bad_expert_grid_one_clear_error(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        _dims(**kw)


def test_etp_through_config_validation_and_explicit_path():
    from pangu_ms.config import validate_config
    from pangu_ms.parallel.runtime import _check_explicit
    base = ["parallel.dp=4", "parallel.ep=2"]
    cfg = _load(TINY, base + ["parallel.etp=2"])
    d = validate_layout(cfg, 4)
    assert (d.ep_width, d.etp, d.edp) == (2, 2, 1)
    with pytest.raises(ConfigError, match=r"^parallel\.etp: 2: the explicit msrun path has no expert tensor"):
        _check_explicit(cfg)
    _check_explicit(_load(TINY, base + ["parallel.etp=1"]))          # etp 1 runs on the explicit path
    with pytest.raises(ConfigError, match=r"parallel\.etp / parallel\.tp_extend_ep"):
        validate_config(_load_config(TINY, base + ["parallel.tp=2", "parallel.dp=2", "parallel.etp=2",
                                                   "parallel.tp_extend_ep=true", "parallel.micro_batch_size=1"],
                                     validate=False))
    probs = layout_problems(_load(TINY, ["parallel.dp=3", "parallel.ep=1", "parallel.etp=3",
                                         "train.global_batch_size=3"]))
    assert probs and probs[0].startswith("parallel.etp: moe.expert_ffn_hidden=") and "etp=3" in probs[0]
