"""tools/analyze_moe.py on a hand-made run directory: PNGs + summary with hand-computed figures, clear errors."""
import json
import os

import numpy as np
import pytest

from tools import analyze_moe

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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


def write_compared_run(d, scope, losses, norms, load):
    d.mkdir()
    (d / "config.yaml").write_text(f"moe:\n  aux_loss_scope: {scope}\n  aux_loss_coeff: 0.01\n  dispatcher: dropless\n"
                                   "  capacity_factor: 1.25\n  expert_placement: false\nparallel:\n  dp: 1\n  ep: 1\n")
    with open(d / "metrics.jsonl", "w") as f:
        for s, (loss, g) in enumerate(zip(losses, norms), start=1):
            f.write(json.dumps({"step": s, "loss/total": loss, "loss/lm": loss - 0.5, "grad_norm": g,
                                "moe/drop_rate": 0.0}) + "\n")
        f.write(json.dumps({"step": len(losses), "valid/loss": 9.0}) + "\n")
    with open(d / "expert_load.jsonl", "w") as f:
        for s in range(1, len(losses) + 1):
            f.write(json.dumps({"step": s, "load": [load]}) + "\n")


def test_compare_runs_and_spikes(tmp_path):
    from pangu_ms.eval.run_summary import count_spikes
    # the window must be full; then 10 > 3 x median(1, 1) is a spike, 2.9 is not
    assert count_spikes([1, 1, 10, 1, 2.9], factor=3, window=2) == 1
    assert count_spikes([1, 1, float("nan"), 10], factor=3, window=2) == 1
    a, b = tmp_path / "a", tmp_path / "b"
    write_compared_run(a, "micro_batch", [4.0, 3.0, 2.0, 1.0], [1, 1, 1, 1], [6, 2, 0, 0])
    write_compared_run(b, "ep_group", [5.0, 5.0, 5.0, 5.0], [1, 1, 1, 50], [2, 2, 2, 2])
    assert analyze_moe.main(["--run", str(a), "--run", str(b), "--out", str(tmp_path / "cmp"),
                             "--spike-window", "3"]) == 0
    text = (tmp_path / "cmp" / "comparison.md").read_text()
    # a: second-half loss mean (2 + 1) / 2; expert-load CV sqrt(6)/2; on 2 static ranks 8 | 0 -> CV 1
    assert "| a | aux micro_batch, dropless, dp1 ep1 | 1.5000 | 9.0000 | 1.225 | 1.000 | 0.0000 | 0 | 0 |" in text
    assert "| b | aux ep_group, dropless, dp1 ep1 | 5.0000 | 9.0000 | 0.000 | 0.000 | 0.0000 | 1 | 0 |" in text
    assert (tmp_path / "cmp" / "comparison.png").stat().st_size > 0
    assert (tmp_path / "cmp" / "a" / "summary.md").is_file() and (tmp_path / "cmp" / "b" / "expert_load_layer0.png").is_file()
    assert "gradient norm 1, loss 0" in (tmp_path / "cmp" / "b" / "summary.md").read_text()


def test_js_divergence_against_scipy():
    from scipy.spatial.distance import jensenshannon
    from pangu_ms.eval.expert_domains import divergence_matrix, js_divergence
    assert js_divergence([1, 0], [0, 1]) == pytest.approx(1.0)
    assert js_divergence([3, 1], [6, 2]) == pytest.approx(0.0)
    rng = np.random.default_rng(0)
    p, q = rng.integers(0, 50, 8), rng.integers(0, 50, 8)
    assert js_divergence(p, q) == pytest.approx(jensenshannon(p, q, base=2) ** 2)
    names, m = divergence_matrix({"x": [p], "y": [q], "w": [p]})
    assert names == ["w", "x", "y"] and m.shape == (1, 3, 3)
    assert m[0, 0, 1] == 0 and m[0, 1, 2] == pytest.approx(js_divergence(p, q)) and m[0, 2, 1] == m[0, 1, 2]


class _Split:
    def __init__(self, name, ids):
        self.name, self.input_ids, self.n_rows = name, ids, len(ids)


def test_domain_expert_counts_sum_the_routers_selections(small_cfg):
    from mindspore import Tensor
    from pangu_ms.eval.expert_domains import domain_expert_counts
    from pangu_ms.model import build_model
    cfg = small_cfg()
    net = build_model(cfg)
    rng = np.random.default_rng(1)
    s = cfg.train.seq_length
    splits = {"low": _Split("low", rng.integers(0, 8, (4, s + 1))),
              "high": _Split("high", rng.integers(32, 64, (4, s + 1)))}
    per_batch = domain_expert_counts(net, splits, s, batches=2, batch_size=2)
    for name, split in splits.items():
        assert per_batch[name].shape == (2, 2, cfg.moe.num_experts)
        for k, i in enumerate((0, 2)):
            ref = net(Tensor(split.input_ids[i:i + 2, :s]))[3].asnumpy()          # PyNative
            np.testing.assert_allclose(per_batch[name][k], ref)
        assert (per_batch[name].sum((0, 2)) == 4 * s * cfg.moe.top_k).all()     # every token picks top_k
    from pangu_ms.eval.expert_domains import js_divergence, noise_floor
    b = per_batch["low"]
    assert noise_floor(b).tolist() == [js_divergence(b[0, i], b[1, i]) for i in range(2)]


def test_moe_study_scales_the_phases_and_rejects_bad_input(tmp_path):
    import yaml
    from pangu_ms.data.errors import DataError
    from tools import moe_study
    path, total = moe_study.scaled_phases(os.path.join(ROOT, "yaml/tiny_cpu_phases.yaml"), 0.5, str(tmp_path))
    data = yaml.safe_load(open(path))
    assert [p["steps"] for p in data["train"]["phases"]] == [200, 75, 25] and total == 300
    from pangu_ms.config import load_config
    assert load_config(path).train.steps == 300
    for bad in (["--ranks", "3"], ["--steps", "5"], ["--capacity-factors", "a,b"], ["--skip", "nothing"]):
        with pytest.raises(DataError):
            moe_study.main(["--out", str(tmp_path / "s")] + bad)
    assert not moe_study.finished(str(tmp_path), 3)
