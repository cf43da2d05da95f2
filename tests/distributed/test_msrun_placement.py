"""Dynamic expert placement under msrun (2 ranks, dp=2 ep=2, one launch of placement_worker.py; its docstring lists
the four parts; the 4-rank check is in test_msrun_four_ranks.py). Placement must be invisible to the
math, move weights and both AdamW moments intact, load from a checkpoint saved under another placement, resume
exactly after a migration, and lower the device-load CV of a skewed router by at least moe.placement_threshold."""
import json

import numpy as np
import pytest

from pangu_ms.moe.load_stats import cv, device_load
from tests.distributed.launch import launch

THRESHOLD = 0.08


def test_expert_placement_two_ranks(tmp_path):
    out = tmp_path / "run"
    res, wall, rc = launch(2, "placement_worker.py", [str(out)], tmp_path, timeout=900)
    assert rc == 0
    check(res, out)


def check(res, out):
    """The assertions on the workers' RESULT lines and the run directory ``out`` (a pathlib.Path)."""
    r0 = res[0]
    print(f"worker times: A+B {r0['time_ab_s']:.0f} s, C {r0['time_c_s'] - r0['time_ab_s']:.0f} s, "
          f"D {r0['total_s'] - r0['time_c_s']:.0f} s")
    for r, o in res.items():
        # A: step 3 after a re-placement equals step 3 without it (loss, every gradient, then the whole state)
        a = o["A"]
        print(f"rank {r}: step 3 loss {a['loss_ref']:.6f} / moved {a['loss_mig']:.6f}, grad rel {a['grad_rel']:.1e}, "
              f"state after {a['final_state']}")
        assert a["loss_rel"] <= 1e-6 and a["grad_rel"] <= 3e-6 and a["load_equal"], a
        assert max(a["final_state"].values()) <= 1e-6, a
        am = o["after_move"]
        assert am["tables"] != [list(range(8))] * 2
        assert am["exact"] and max(am["worst"].values()) == 0.0, am        # weights + m + v arrive bit for bit
        # B: a checkpoint saved under one placement loads into a model under another and continues identically
        ckpt = o["ckpt"]
        assert ckpt["saved_tables"] == am["tables"] and ckpt["other_tables"] != ckpt["saved_tables"]
        assert ckpt["loaded_tables"] == ckpt["saved_tables"]
        assert ckpt["loss_after_load"] == ckpt["loss"], ckpt
        if r == 0:                                                          # ... and into one process
            assert o["one_process"] == {"names": True, "exact": True}, o["one_process"]
        # D: resumed at step 4 after the step-2 migration, from a scrambled in-memory state: exact
        c, d = o["C"], o["D"]
        assert d["start_step"] == 4
        assert d["scrambled_tables"] != c["tables"]
        assert sorted(d["losses"]) == ["4", "5"]
        for s, v in d["losses"].items():
            assert v == c["losses"][s], (s, v, c["losses"][s])
        assert d["tables"] == c["tables"] and d["pred"] == c["pred"] and d["history"] == c["history"]
    assert res[0]["C"] == res[1]["C"]                                        # every rank took the same decisions
    # C restarted from A's initial state: its first two (rank-mean) losses are A's
    for s in (0, 1):
        mean = (np.float32(res[0]["A_losses"][s]) + np.float32(res[1]["A_losses"][s])) / np.float32(2)
        assert res[0]["C"]["losses"][str(s)] == pytest.approx(float(mean), rel=1e-7, abs=0)
    # C: the first migration (after step 2) lowers the per-rank load CV of every migrated layer by >= threshold
    hist = res[0]["C"]["history"]
    first = [h for h in hist if h["step"] == 2]
    assert first, hist
    records = {json.loads(line)["step"]: json.loads(line) for line in open(out / "C" / "expert_load.jsonl")}
    metrics = [json.loads(line) for line in open(out / "metrics_C.jsonl")]
    logged = {m["step"]: m for m in metrics if "loss/total" in m}
    for h in first:
        i = h["layer"]
        assert h["cv_before"] - h["cv_after"] >= THRESHOLD, h                # predicted (the trigger)
        after = records[3]                                                   # the step after the migration
        assert after["tables"][i] == h["table"] and records[2]["tables"][i] == list(range(8))
        load = np.array(after["load"][i])
        old, new = cv(device_load(load, np.arange(8), 2)), cv(device_load(load, h["table"], 2))
        print(f"layer {i}: measured device-load CV at step 3: {old:.3f} under the old placement, {new:.3f} under "
              f"the new one; logged CV step 2 {logged[2][f'moe/layer{i}/device_cv']:.3f} -> step 3 "
              f"{logged[3][f'moe/layer{i}/device_cv']:.3f}")
        assert old - new >= THRESHOLD                                        # same tokens, both placements
        assert logged[2][f"moe/layer{i}/device_cv"] - logged[3][f"moe/layer{i}/device_cv"] >= THRESHOLD
        assert abs(logged[3][f"moe/layer{i}/device_cv"] - new) < 1e-9        # the logged statistic is this one
    # load statistics: every step routes tokens * top_k pairs per layer (global batch 4 x 32 tokens, top-2)
    for m in logged.values():
        assert m["moe/layer0/tokens"] == m["moe/layer1/tokens"] == 4 * 32 * 2
