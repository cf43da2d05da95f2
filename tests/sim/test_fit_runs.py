"""Calibration of a profile from measured runs (pangu_ms/sim/fit_runs.py, ``simulate.py calibrate --from-runs``):
recovery of known efficiencies from synthetic step times, the leave-one-out figure, run-directory and CSV input,
and one clear error per bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pangu_ms.config import ConfigError, from_dict, load_config
from pangu_ms.config.loader import dump_config
from pangu_ms.sim import fit_runs as F
from pangu_ms.sim.hardware import load_hardware, save_hardware

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def moe(**parallel):
    """A small MoE (8 layers, hidden 2048, 32 experts) whose estimates take milliseconds."""
    return from_dict({
        "model": {"vocab_size": 32000, "hidden_size": 2048, "num_layers": 8, "num_dense_layers": 1,
                  "dense_ffn_hidden": 4096, "num_heads": 16, "q_lora_rank": 512, "kv_lora_rank": 256,
                  "qk_nope_head_dim": 64, "qk_rope_head_dim": 32, "v_head_dim": 64, "mtp_depth": 0,
                  "max_position_embeddings": 4096},
        "moe": {"num_experts": 32, "top_k": 4, "expert_ffn_hidden": 1024},
        "train": {"seq_length": 4096, "global_batch_size": 256},
        "parallel": parallel, "sim": {"hardware": "h100"}})


# layouts with different compute / communication / kernel-count mixes (identifiability of the three parameters)
LAYOUTS = [(16, dict(tp=1, pp=1, ep=8)), (64, dict(tp=2, pp=2, ep=16)), (32, dict(tp=8, pp=1, ep=4)),
           (128, dict(tp=4, pp=4, ep=8, vpp=2)), (16, dict(tp=2, pp=1, ep=8))]
TRUTH = {"compute": 0.8, "comm": 0.6, "op_overhead": 2e-5}


def synthetic_cases(base, truth):
    """Step times the simulator gives with ``truth`` applied to ``base`` (the split each case is pinned to)."""
    cases = []
    for dev, par in LAYOUTS:
        c = F.Case(f"tp{par['tp']} pp{par['pp']} ep{par['ep']} on {dev}", moe(**par), dev, None, "step_time_s", 1.0,
                   "synthetic")
        c.value = F.prepare(c, base).predict(F.apply_params(base, truth))
        cases.append(c)
    return cases


def test_fit_recovers_known_profile_change_and_loo_is_small():
    base = load_hardware("h100")
    cases = synthetic_cases(base, TRUTH)
    res = F.calibrate_from_cases(cases, base, ["compute", "comm", "op_overhead"])
    for k, v in TRUTH.items():
        assert res["fitted"][k] == pytest.approx(v, rel=1e-4), k
    assert res["not_identified"] == []
    assert res["mean_abs_error"]["before"] > 0.3                  # the change is large ...
    assert res["mean_abs_error"]["after"] < 1e-5                  # ... and fully removed
    assert res["leave_one_out"] == "done" and res["mean_abs_error"]["leave_one_out"] < 1e-4
    for r in res["cases"]:
        assert r["loo_values"]["compute"] == pytest.approx(0.8, rel=1e-3)
        # error convention of residuals.py: predicted throughput / measured - 1 (positive = optimistic)
        assert r["error_before"] == pytest.approx(r["measured_step_s"] / r["before_step_s"] - 1)
    # the fitted profile is the base one with the efficiencies scaled (independent of the fit's own bookkeeping)
    prof = res["_profile"]
    assert prof.gemm_efficiency.ys == pytest.approx([0.8 * y for y in base.gemm_efficiency.ys])
    assert prof.attention_efficiency == pytest.approx(0.8 * base.attention_efficiency)
    assert prof.inter_node.efficiency.ys == pytest.approx([0.6 * y for y in base.inter_node.efficiency.ys])
    assert prof.hbm_bandwidth == base.hbm_bandwidth and prof.peak_flops == base.peak_flops


def test_leave_one_out_does_not_see_the_held_out_run():
    """One run measured 20 % slower than the profile change explains: fitted on the four others (exact), its
    leave-one-out prediction is the true step, i.e. error +20 %, while the fit on all runs absorbs part of it."""
    base = load_hardware("h100")
    cases = synthetic_cases(base, TRUTH)
    cases[0].value *= 1.2
    res = F.calibrate_from_cases(cases, base, ["compute", "comm", "op_overhead"])
    odd = res["cases"][0]
    assert odd["loo_values"]["compute"] == pytest.approx(0.8, rel=1e-3)
    assert odd["error_loo"] == pytest.approx(0.2, abs=1e-3)
    assert abs(odd["error_after"]) < 0.19
    assert res["fitted"]["compute"] != pytest.approx(0.8, rel=1e-3)


def test_unseen_parameter_is_held_and_too_few_runs_rejected():
    base = load_hardware("h100")
    # single-device runs: no communication, so the link efficiency cannot be identified
    cases = []
    for gbs in (8, 32):
        c = F.Case(f"gbs {gbs}", from_dict({**_tiny_dict(), "train": {"seq_length": 256, "global_batch_size": gbs}}),
                   1, None, "step_time_s", 1.0, "synthetic")
        c.value = F.prepare(c, base).predict(F.apply_params(base, {"compute": 0.5}))
        cases.append(c)
    res = F.calibrate_from_cases(cases, base, ["compute", "comm"])
    assert res["not_identified"] == ["comm"] and res["fitted"]["compute"] == pytest.approx(0.5, rel=1e-4)
    with pytest.raises(ConfigError, match="cannot fit 3 parameters"):
        F.calibrate_from_cases(cases, base, ["compute", "op_overhead", "step_overhead"])
    with pytest.raises(ConfigError, match="--fit: unknown parameter 'gemm'"):
        F.calibrate_from_cases(cases, base, ["gemm"])


def _tiny_dict():
    return {"model": {"vocab_size": 1024, "hidden_size": 256, "num_layers": 2, "num_dense_layers": 1,
                      "dense_ffn_hidden": 512, "num_heads": 4, "q_lora_rank": 64, "kv_lora_rank": 32,
                      "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16, "mtp_depth": 0},
            "moe": {"num_experts": 4, "top_k": 2, "expert_ffn_hidden": 128}, "sim": {"hardware": "h100"}}


def _run_dir(path, tokens_per_s, gbs=8, seq=64):
    os.makedirs(path, exist_ok=True)
    dump_config(from_dict({**_tiny_dict(), "train": {"seq_length": seq, "global_batch_size": gbs}}),
                os.path.join(path, "config.yaml"))
    from pangu_ms.train.logging import RunLogger           # metrics.jsonl exactly as training writes it
    log = RunLogger(str(path), progress=False)
    for i, t in enumerate(tokens_per_s):
        log.scalars(5 * (i + 1), {"loss/total": 7.0, "perf/tokens_per_s": t, "perf/mfu": 0.01})
        log.scalars(5 * (i + 1), {"valid/loss": 6.0})
    log.close()
    return str(path)


def test_run_dir_step_time_drops_the_compile_window(tmp_path):
    d = _run_dir(tmp_path / "run", [50.0, 1000.0, 3000.0, 2000.0])
    case = F.read_run_dir(d)
    # 8 x 64 tokens per step / median(1000, 3000, 2000) tokens/s; the first window (compilation) is left out
    assert case.measure == "step_time_s" and case.value == pytest.approx(512 / 2000.0)
    assert case.cfg.train.global_batch_size == 8 and case.name == "run"


def test_fit_from_run_directories(tmp_path):
    """Two run directories whose logged tokens/s are the H100 profile at half the compute efficiency."""
    base = load_hardware("h100")
    slow = F.apply_params(base, {"compute": 0.5})
    dirs = []
    for gbs in (8, 32):
        probe = _run_dir(tmp_path / "probe", [1.0, 1.0], gbs=gbs, seq=256)
        step = F.prepare(F.read_run_dir(probe), base).predict(slow)
        dirs.append(_run_dir(tmp_path / f"run_gbs{gbs}", [10.0] + [gbs * 256 / step] * 3, gbs=gbs, seq=256))
    res = F.calibrate_from_runs(dirs, str(tmp_path / "fit.yaml"), "h100", ["compute", "comm"])
    assert res["fitted"]["compute"] == pytest.approx(0.5, rel=1e-4) and res["not_identified"] == ["comm"]
    fitted = load_hardware(str(tmp_path / "fit.yaml"))
    assert fitted.attention_efficiency == pytest.approx(0.5 * base.attention_efficiency)


def test_bad_inputs_name_the_file_and_key(tmp_path):
    with pytest.raises(ConfigError, match="nope: no such file"):
        F.read_inputs([str(tmp_path / "nope")])
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(ConfigError, match=r"empty_run.config\.yaml is missing"):
        F.read_inputs([str(tmp_path / "empty_run")])
    d = _run_dir(tmp_path / "run1", [50.0])
    with pytest.raises(ConfigError, match=r"metrics\.jsonl: needs at least 2 records with 'perf/tokens_per_s'"):
        F.read_inputs([d])
    os.remove(os.path.join(d, "metrics.jsonl"))
    with pytest.raises(ConfigError, match=r"run1.metrics\.jsonl is missing"):
        F.read_inputs([d])
    recipe = os.path.abspath(os.path.join(ROOT, "yaml", "sim", "qwen3_235b_a22b.yaml"))
    bad = {"no_recipe.csv": ("name,step_time_s\na,1.0\n", "no_recipe.csv: missing column 'recipe'"),
           "no_measure.csv": (f"recipe,devices\n{recipe},256\n", "no_measure.csv: missing a measurement column"),
           "typo.csv": (f"recipe,step_time\n{recipe},1.0\n", "typo.csv: unknown column 'step_time'"),
           "empty_cell.csv": (f"recipe,step_time_s\n{recipe},\n", r"empty_cell.csv:2: no measured value"),
           "negative.csv": (f"recipe,step_time_s\n{recipe},-3\n", r"negative.csv:2: step_time_s: must be a number > 0"),
           "recipe.csv": ("recipe,step_time_s\nmissing.yaml,1\n", r"recipe.csv:2: recipe 'missing.yaml' not found"),
           "key.csv": (f"recipe,parallel.tpp,step_time_s\n{recipe},2,1\n", r"key.csv:2: .*parallel.tpp")}
    for name, (text, msg) in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ConfigError, match=msg):
            F.read_inputs([str(tmp_path / name)])
    (tmp_path / "mixed.csv").write_text(f"recipe,profile,step_time_s\n{recipe},h100,1\n{recipe},h800,1\n")
    with pytest.raises(ConfigError, match="several profiles"):
        F.fitted_profile_name(F.read_inputs([str(tmp_path / "mixed.csv")]), None)
    with pytest.raises(ConfigError, match=r"mixed.csv:3: profile 'h800' differs from --hardware 'h100'"):
        F.fitted_profile_name(F.read_inputs([str(tmp_path / "mixed.csv")]), "h100")


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=os.path.abspath(ROOT))
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", "simulate.py"), *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_cli_calibrate_from_csv_end_to_end(tmp_path):
    """A CSV of three layouts whose 'measured' tokens/s/device come from the H100 profile with every compute
    efficiency at 0.7x (a profile YAML written here): the CLI recovers 0.7 and writes a loadable profile."""
    base = load_hardware("h100")
    slow = F.apply_params(base, {"compute": 0.7})
    save_hardware(slow, str(tmp_path / "slow.yaml"))
    recipe = os.path.abspath(os.path.join(ROOT, "yaml", "sim", "qwen3_235b_a22b.yaml"))
    rows = []
    for tp, mbs in ((2, 1), (4, 1), (2, 2)):
        ov = [f"parallel.tp={tp}", f"parallel.micro_batch_size={mbs}"]
        case = F.Case("", load_config(recipe, ov, validate=False), 256, None, "step_time_s", 1.0, "")
        prep = F.prepare(case, base)               # the split and recompute the CLI pins too
        tps = prep.layout.global_batch_size * prep.layout.seq_length / prep.predict(slow) / 256
        rows.append(f"tp{tp} mbs{mbs},{recipe},256,h100,parallel.tp={tp},{mbs},{tps:.10g}")
    csv_path = tmp_path / "runs.csv"
    csv_path.write_text("# measured on a slow cluster\nname,recipe,devices,profile,overrides,"
                        "parallel.micro_batch_size,tokens_per_s_per_device\n" + "\n".join(rows) + "\n")
    out = tmp_path / "fitted" / "h100_mine.yaml"
    r = _cli("calibrate", "--from-runs", str(csv_path), "--hardware", "h100", "--fit", "compute", "--out", str(out),
             "--name", "h100_mine", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["fitted"]["compute"] == pytest.approx(0.7, rel=1e-4)
    assert res["mean_abs_error"]["before"] > 0.1 and res["mean_abs_error"]["leave_one_out"] < 1e-4
    prof = load_hardware(str(out))
    assert prof.name == "h100_mine"
    assert prof.gemm_efficiency.ys == pytest.approx(slow.gemm_efficiency.ys)
    header = out.read_text().splitlines()[0]
    assert header.startswith("# Fitted by `tools/simulate.py calibrate --from-runs` from profile 'h100' on 3 runs")
    assert "tp4 mbs1" in out.read_text()
    # markdown report and the clear errors
    r = _cli("calibrate", "--from-runs", str(csv_path), "--hardware", "h100", "--fit", "compute", "--out",
             str(tmp_path / "again.yaml"))
    assert r.returncode == 0 and "leave-one-out" in r.stdout and "| tp2 mbs2 | 256 |" in r.stdout
    r = _cli("calibrate", "--from-runs", str(csv_path))
    assert r.returncode == 2 and "--out" in r.stderr
    r = _cli("calibrate", "--from-runs", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "x.yaml"))
    missing = tmp_path / "missing.csv"
    assert r.returncode == 2 and r.stderr.strip() == f"error: --from-runs: {missing}: no such file or directory"


def test_published_csvs_match_the_validation_table():
    """The example CSVs carry the same published figures and layouts as tools/validate_sim_published.py."""
    import csv
    from tools import validate_sim_published as V
    peak = load_hardware("h100").peak("bf16")
    path = os.path.join(ROOT, "yaml", "sim", "validation", "published_runs_h100.csv")
    with open(path, encoding="utf-8") as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
    llama = [r for r in rows if r["name"].startswith("Llama 3")]
    assert [float(r["mfu"]) for r in llama] == pytest.approx([t * 1e12 / peak for *_, t in V.LLAMA3_CASES], rel=1e-5)
    assert [int(r["devices"]) for r in llama] == [d for _, d, _, _ in V.LLAMA3_CASES]
    assert [r["overrides"].split() for r in llama] == [ov for _, _, ov, _ in V.LLAMA3_CASES]
    others = [r for r in rows if not r["name"].startswith("Llama 3")]
    assert [float(r["tokens_per_s_per_device"]) for r in others] == [c[-1] for c in V.FOLDING_CASES]
    assert others[1]["overrides"].split() == V.DSV3_H100
    cases = F.read_inputs([path])
    assert len(cases) == 5 and F.fitted_profile_name(cases, None) == "h100"
    assert len(F.read_inputs([os.path.join(ROOT, "yaml", "sim", "validation", "published_runs_910b.csv")])) == 2
