"""tools/analyze_moe.py on a hand-made run directory: PNGs + summary with hand-computed figures, clear errors."""
import json

import numpy as np
import pytest

from tools import analyze_moe


def write_run(d):
    # 1 MoE layer, 4 experts, EP width 2; expert 0 and 1 hot, both on rank 0 until the move after step 2
    rows = [(1, [6, 2, 0, 0], [0, 1, 2, 3]), (2, [6, 2, 0, 0], [0, 1, 2, 3]), (3, [6, 2, 0, 0], [0, 2, 1, 3])]
    with open(d / "expert_load.jsonl", "w") as f:
        for step, load, table in rows:
            f.write(json.dumps({"step": step, "load": [load], "tables": [table], "ep_width": 2}) + "\n")
    with open(d / "metrics.jsonl", "w") as f:
        f.write(json.dumps({"step": 2, "moe/layer0/placement_moved": 2.0}) + "\n")
        f.write(json.dumps({"step": 2, "loss/total": 1.0, "moe/drop_rate": 0.0}) + "\n")


def test_analyze_moe_writes_plots_and_summary(tmp_path):
    write_run(tmp_path)
    assert analyze_moe.main(["--run", str(tmp_path)]) == 0
    out = tmp_path / "analysis"
    for name in ("expert_load_layer0.png", "device_cv.png", "drop_rate.png", "summary.md"):
        assert (out / name).stat().st_size > 0, name
    text = (out / "summary.md").read_text()
    # after the move (step 3): rank loads 6 | 2 -> CV 0.5; static placement 8 | 0 -> CV 1.0
    assert "| 0 | 1.000 | 0.500 | +0.500 |" in text
    assert "| 0 | 1.225 | 3.00 | 2 |" in text                 # expert CV sqrt(6)/2, max/mean 3, moved after step 2
    # capacity ceil(cf * 8 / 4): cf 1 -> 2 per expert -> (6-2) of 8 pairs dropped; cf 2 -> 4 -> 2 of 8
    run = analyze_moe.load_run(str(tmp_path))
    rates = analyze_moe.drop_rates(run["load"], (1.0, 2.0))
    assert rates[1.0][0] == pytest.approx(0.5) and rates[2.0][0] == pytest.approx(0.25)
    assert np.array_equal(run["steps"], [1, 2, 3])


def test_analyze_moe_names_a_missing_run(tmp_path):
    from pangu_ms.data.errors import DataError
    with pytest.raises(DataError, match="--run: no expert_load.jsonl"):
        analyze_moe.main(["--run", str(tmp_path / "nope")])
