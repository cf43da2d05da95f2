"""The one 4-rank msrun launch of the distributed tests (four_rank_worker.py: placement_worker4.py's check, then
dispatch_worker.py's) and the assertions on its RESULT lines, in one module so that the launch runs once (and on
one pytest-xdist worker):

* expert placement with 4 ranks (dp=4 ep=4), see test_msrun_placement.py for the 2-rank checks;
* EP dispatchers and reducers on sub-groups (2 emulated nodes x 2 ranks; EP groups {0,1},{2,3} with expert
  replicas {0,2},{1,3}), see test_msrun_ep.py for the model-level 2-rank check.
"""
import pytest

from tests.distributed.launch import launch


@pytest.fixture(scope="module")
def four_ranks(tmp_path_factory):
    """(results by rank, msrun exit code, wall seconds) of the 4-rank launch."""
    tmp = tmp_path_factory.mktemp("four_ranks")
    res, wall, rc = launch(4, "four_rank_worker.py", [str(tmp / "run")], tmp, timeout=600)
    return res, rc, wall


def test_expert_placement_four_ranks(four_ranks):
    """4 ranks (dp=4 ep=4): experts cross between all four ranks with weights and both moments intact, the
    forward loss unchanged, and the checkpoint loads into one process as logical experts (placement_worker4.py).
    """
    res, rc, wall = four_ranks
    assert rc == 0
    res = {r: o["placement"] for r, o in res.items()}
    print(f"worker time {res[0]['total_s']:.0f} s, launch {wall:.0f} s")
    for r, o in res.items():
        assert o["exact"], o
        assert o["loss_after"] == pytest.approx(o["loss_before"], rel=1e-6, abs=0), o
        assert len(o["moved_layer0"]) >= 4 and o["tables"] != [list(range(8))] * 2
    assert res[0]["one_process_exact"] and res[0]["manifest_placement"], res[0]


def test_dispatchers_reducers_on_subgroups_4_ranks(four_ranks):
    res, rc, wall = four_ranks
    assert rc == 0
    res = {r: o["dispatch"] for r, o in res.items()}
    for r, out in res.items():
        print(f"rank {r}: A {out['A_flat']} / {out['A_hier']} hier-flat {out['A_hier_vs_flat_max_abs']:.2e}; "
              f"B grads {out['B_grads_rel']:.2e} norm {out['B_norm_rel']:.2e} stats {out['B_stats_ok']} "
              f"({out['total_s']:.0f} s)")
        assert out["A_groups"]["inner"] == ([0, 1] if r < 2 else [2, 3])
        assert out["A_groups"]["outer"] == ([0, 2] if r % 2 == 0 else [1, 3])
        for key in ("A_flat", "A_hier"):
            for name, v in out[key].items():
                assert v <= 1e-6, (r, key, name, v)
        assert out["A_hier_vs_flat_max_abs"] <= 1e-6
        assert out["B_groups"]["ep"] == ([0, 1] if r < 2 else [2, 3])
        assert out["B_groups"]["expert_dp"] == ([0, 2] if r % 2 == 0 else [1, 3])
        assert out["B_grads_rel"] <= 1e-6 and out["B_norm_rel"] <= 1e-6
        assert out["B_stats_ok"]
