"""Dynamic expert placement, numpy parts: load statistics, EMA predictor, greedy planner, trigger, placement table,
row relocation of the executor, the recipe keys' errors, and the table's round trip through a checkpoint (the
msrun behaviour is tests/distributed/test_msrun_placement.py)."""
import itertools

import numpy as np
import pytest

from pangu_ms.config import ConfigError, load_config
from pangu_ms.moe.load_stats import cv, device_load, load_summary
from pangu_ms.parallel.placement_executor import relocate_rows
from pangu_ms.parallel.placement_planner import decide, greedy_members, is_check_step, plan_table
from pangu_ms.parallel.placement_predictor import EMALoadPredictor
from pangu_ms.parallel.placement_table import (check_table, experts_at_slots, identity, members, moved_experts,
                                               table_from_members)


def test_load_summary_against_hand_counts():
    # 2 layers, 4 experts, EP width 2 (2 experts per rank); tokens routed before any drop
    load = np.array([[6, 2, 0, 0], [2, 2, 2, 2]], float)
    out = load_summary(load, tables=[[0, 1, 2, 3], [0, 1, 2, 3]], ep_width=2)
    assert out["moe/layer0/tokens"] == 8 and out["moe/layer1/tokens"] == 8
    # layer 0: mean 2, std sqrt(((4)^2 + 0 + 2^2 + 2^2) / 4) = sqrt(6)
    assert out["moe/layer0/load_max"] == 3.0 and out["moe/layer0/load_min"] == 0.0
    assert out["moe/layer0/load_cv"] == pytest.approx(np.sqrt(6) / 2)
    # rank loads 8 | 0 -> CV 1, max/mean 2; layer 1 balanced
    assert out["moe/layer0/device_cv"] == pytest.approx(1.0) and out["moe/layer0/device_max_mean"] == 2.0
    assert out["moe/layer1/device_cv"] == 0.0 and out["moe/layer1/load_cv"] == 0.0
    # the same layer under the placement {0, 2} | {1, 3}: rank loads 6 | 2
    moved = load_summary(load[:1], tables=[[0, 2, 1, 3]], ep_width=2)
    assert moved["moe/layer0/device_cv"] == pytest.approx(0.5)
    assert "moe/layer0/device_cv" not in load_summary(load)                 # no EP, no device statistics
    assert device_load([1, 2, 3, 4], [3, 2, 1, 0], 2).tolist() == [7, 3]


def test_ema_predictor():
    p = EMALoadPredictor(0.9)
    assert p.update([[10.0, 0.0]]).tolist() == [[10.0, 0.0]]                # first observation
    assert np.allclose(p.update([[0.0, 10.0]]), [[9.0, 1.0]])
    q = EMALoadPredictor(0.9)
    q.load_state(p.state())
    assert np.array_equal(q.update([[5.0, 5.0]]), p.update([[5.0, 5.0]])) and q.observed == 3
    with pytest.raises(ValueError):
        EMALoadPredictor(1.0)


def test_table_helpers():
    t = check_table([2, 0, 3, 1], 2)
    assert members(t, 2).tolist() == [1, 0, 1, 0]
    assert experts_at_slots(t).tolist() == [1, 3, 0, 2]
    assert moved_experts(identity(4), t, 2) == [0, 3]
    with pytest.raises(ValueError):
        check_table([0, 0, 1, 2], 2)
    # staying experts keep their slot; newcomers take the free ones in order
    assert table_from_members([0, 1, 0, 1], 2, old_table=[0, 2, 1, 3]).tolist() == [0, 2, 1, 3]
    assert table_from_members([1, 0, 0, 1], 2, old_table=[0, 1, 2, 3]).tolist() == [2, 1, 0, 3]


def brute_force_best_cv(pred, w):
    e = len(pred)
    best = np.inf
    for perm in itertools.permutations(range(e)):
        best = min(best, cv(device_load(pred, np.array(perm), w)))
    return best


def test_greedy_planner():
    pred = np.array([10.0, 9.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])             # both hot experts on rank 0
    group = greedy_members(pred, 2)
    assert group[0] != group[1]                                             # heaviest two split
    new = plan_table(pred, identity(8), 2)
    assert cv(device_load(pred, new, 2)) < cv(device_load(pred, identity(8), 2))
    assert cv(device_load(pred, new, 2)) == pytest.approx(brute_force_best_cv(pred, 2))
    # greedy groups {4, 5, 6, 7} (hot expert 4 first) and {0, 1, 2, 3}: the identity layout with the labels
    # swapped; matching groups to the ranks already holding them means nothing moves
    one_hot = np.array([1.0, 1.0, 1.0, 1.0, 10.0, 1.0, 1.0, 1.0])
    assert greedy_members(one_hot, 2).tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert plan_table(one_hot, identity(8), 2).tolist() == list(range(8))
    # experts that stay keep their slot
    staying = [x for x in range(8) if members(new, 2)[x] == members(identity(8), 2)[x]]
    assert all(new[x] == x for x in staying)
    # 4 ranks: equal per-rank slot counts, near the optimum
    rng = np.random.default_rng(0)
    pred4 = rng.exponential(size=8)
    t4 = plan_table(pred4, identity(8), 4)
    assert np.bincount(members(t4, 4), minlength=4).tolist() == [2, 2, 2, 2]
    assert cv(device_load(pred4, t4, 4)) <= brute_force_best_cv(pred4, 4) + 0.1


def test_trigger():
    skewed = np.array([10.0, 9.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    d = decide(0, skewed, identity(8), 2, threshold=0.08)
    assert d.migrate and d.cv_before - d.cv_after >= 0.08 and d.moved
    assert not decide(0, skewed, identity(8), 2, threshold=d.cv_before - d.cv_after + 1e-6).migrate
    kept = decide(0, np.ones(8), identity(8), 2, threshold=0.0)              # nothing to gain: no move even at 0
    assert not kept.migrate and kept.table.tolist() == list(range(8)) and kept.moved == []
    # an already balanced layout: greedy finds another balanced one, equally good -> no migration
    balanced = np.array([5.0, 1.0, 1.0, 5.0, 5.0, 1.0, 1.0, 5.0])
    assert not decide(0, balanced, identity(8), 2, threshold=0.0).migrate
    assert [s for s in range(1, 11) if is_check_step(s, 5)] == [5, 10] and not is_check_step(0, 5)


def test_relocate_rows_moves_each_expert_from_its_old_holder():
    # 2 ranks x 2 slots; tensor rows carry (rank, slot) so every move is visible
    old, new = np.array([0, 1, 2, 3]), np.array([3, 0, 1, 2])              # expert e -> slot new[e]
    gathered = np.array([[[0, 0], [0, 1]], [[1, 0], [1, 1]]], float)         # [world, El, 2]
    r0 = relocate_rows(gathered, old, new, ep_ranks=(0, 1), ep_index=0)
    r1 = relocate_rows(gathered, old, new, ep_ranks=(0, 1), ep_index=1)
    # slot 0 holds expert 1 (was rank 0 slot 1), slot 1 expert 2 (rank 1 slot 0), slot 2 expert 3, slot 3 expert 0
    assert r0.tolist() == [[0, 1], [1, 0]] and r1.tolist() == [[1, 1], [0, 0]]


@pytest.mark.parametrize("overrides, key", [
    (["moe.expert_placement=true"], "moe.expert_placement: needs expert parallelism"),
    (["moe.placement_interval=0"], "moe.placement_interval: must be an integer >= 1"),
    (["moe.placement_threshold=1.5"], "moe.placement_threshold: must be in [0, 1]"),
    (["moe.placement_threshold=-0.1"], "moe.placement_threshold: must be in [0, 1]"),
    (["moe.placement_theta=1.0"], "moe.placement_theta: must be in [0, 1)"),
    (["moe.expert_placement=true", "parallel.dp=2", "parallel.ep=2", "parallel.micro_batch_size=4",
      "parallel.hierarchical_alltoall=true"], "moe.expert_placement: implemented for the flat all-to-all"),
])
def test_bad_placement_keys_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as err:
        load_config("yaml/tiny_cpu.yaml", overrides)
    assert key in str(err.value)


def test_placement_recipe_keys_load():
    cfg = load_config("yaml/tiny_cpu.yaml", ["moe.expert_placement=true", "parallel.dp=2", "parallel.ep=2",
                                             "parallel.micro_batch_size=4", "moe.placement_interval=10"])
    m = cfg.moe
    assert m.expert_placement and m.placement_interval == 10 and m.placement_theta == 0.9
    assert m.placement_threshold == 0.08


def test_table_round_trip_through_a_checkpoint(tmp_path):
    """The table is a Parameter next to the weights: saved in model.safetensors and loaded in place (also into a
    cell whose table differs), with the predictor state as a checkpoint side file."""
    import json
    import os

    import mindspore as ms
    from mindspore import Parameter, Tensor, nn

    from pangu_ms.parallel.placement_executor import STATE_FILE
    from pangu_ms.train.checkpoint import CheckpointManager, load_checkpoint

    class Holder(nn.Cell):
        def __init__(self, table):
            super().__init__()
            self.placement = Parameter(Tensor(np.asarray(table, np.int32)), name="placement", requires_grad=False)
            self.w = Parameter(Tensor(np.arange(8, dtype=np.float32)), name="w")

    ms.set_device("CPU")
    saved = Holder([3, 1, 0, 2])
    pred = EMALoadPredictor(0.9)
    pred.update([[1.0, 2.0, 3.0, 4.0]])
    path = CheckpointManager(str(tmp_path), log=lambda _: None).save(saved, 5, side_files={
        STATE_FILE: {"predictor": pred.state(), "history": []}})
    other = Holder([0, 1, 2, 3])
    load_checkpoint(other, path)
    assert other.placement.asnumpy().tolist() == [3, 1, 0, 2]
    state = json.load(open(os.path.join(path, STATE_FILE)))
    back = EMALoadPredictor(0.9)
    back.load_state(state["predictor"])
    assert np.array_equal(back.pred, pred.pred)


def test_measured_imbalance_for_the_simulator():
    from pangu_ms.moe.load_stats import measured_imbalance
    recs = [{"step": 1, "load": [[6, 2, 0, 0]], "tables": [[0, 1, 2, 3]], "ep_width": 2},
            {"step": 2, "load": [[6, 2, 0, 0]], "tables": [[0, 2, 1, 3]], "ep_width": 2}]
    assert measured_imbalance(recs) == pytest.approx((2.0 + 1.5) / 2)      # rank loads 8|0, then 6|2
    assert measured_imbalance(recs, ep_width=4) == pytest.approx(3.0)       # 6|2|0|0 over mean 2
