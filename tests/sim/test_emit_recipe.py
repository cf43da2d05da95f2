"""What the simulator picks is what training runs: the simulator's pipeline split equals the plan's stages, and
``simulate.py estimate/search --emit-recipe`` -> ``show_plan.py`` -> ``run/train.py`` runs the chosen layout."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import yaml

from pangu_ms.config import load_config
from pangu_ms.parallel.plan import build_plan
from pangu_ms.sim.estimate import estimate
from pangu_ms.sim.recipe import write_recipe
from tests.conftest import ROOT

PRETRAIN_718B = os.path.join(ROOT, "yaml", "pangu_ultra_moe_718b_pretrain.yaml")
DEEPSEEK_V3 = os.path.join(ROOT, "yaml", "sim", "deepseek_v3_671b.yaml")
TINY = os.path.join(ROOT, "yaml", "tiny_cpu.yaml")
SPLIT_LINE = re.compile(r"pipeline split \((\w+)\): parallel\.layers_per_virtual_stage = (\[[0-9, ]+\])")


def plan_counts(cfg) -> list:
    return [len(chunk) for chunk in build_plan(cfg).stages.chunks]


def plan_decoder_layers(cfg) -> list:
    return [sum(item.startswith("layers.") for item in chunk) for chunk in build_plan(cfg).stages.chunks]


def tool(*args, cwd=None):
    r = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=600,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r


def printed_splits(text: str) -> list:
    return [(method, yaml.safe_load(counts)) for method, counts in SPLIT_LINE.findall(text)]


def test_718b_pretrain_simulator_split_is_the_plan_split(tmp_path):
    cfg = load_config(PRETRAIN_718B)
    est = estimate(cfg)
    counts = est.details["layers_per_virtual_stage"]
    assert est.details["stage_split"] == "balanced" and counts == plan_counts(cfg)
    assert counts == [1] + [2] * 30 + [1]                          # 61 layers + MTP over 16 x 2 (stages.py)
    # the blocks the simulator charges to each virtual stage are the decoder layers the plan puts there
    assert est.details["decoder_layers_per_virtual_stage"] == plan_decoder_layers(cfg)
    write_recipe(est, str(tmp_path / "out.yaml"))
    emitted = load_config(str(tmp_path / "out.yaml"))
    assert emitted.parallel.pipeline_split == "explicit" and plan_counts(emitted) == counts


def test_deepseek_v3_memory_aware_split_reaches_the_plan(tmp_path):
    cfg = load_config(DEEPSEEK_V3)
    est = estimate(cfg)
    counts = est.details["layers_per_virtual_stage"]
    assert est.details["stage_split"] == "memory_aware" and est.fits
    out = tmp_path / "deepseek.yaml"
    write_recipe(est, str(out), source=DEEPSEEK_V3)
    emitted = load_config(str(out))
    assert plan_counts(emitted) == counts
    assert est.details["decoder_layers_per_virtual_stage"] == plan_decoder_layers(emitted)
    assert counts != [len(c) for c in build_plan(load_config(DEEPSEEK_V3, ["parallel.pipeline_split=balanced"]))
                      .stages.chunks]                             # not the split the plan picks without costs
    # show_plan prints the same split, from the emitted recipe and (via the simulator) from the source recipe
    assert printed_splits(tool("tools/show_plan.py", "--config", str(out), cwd=ROOT).stdout) == [
        ("explicit", counts)]
    assert printed_splits(tool("tools/show_plan.py", "--config", DEEPSEEK_V3, cwd=ROOT).stdout) == [
        ("memory_aware", counts)]


def test_tiny_loop_estimate_show_plan_train(tmp_path):
    """estimate --emit-recipe on the tiny recipe (1 CPU device) -> show_plan -> run/train.py for 2 steps."""
    out = tmp_path / "tiny.yaml"
    r = tool("tools/simulate.py", "estimate", "--config", TINY, "--hardware", "cpu_local", "--devices", "1",
             "--emit-recipe", str(out), cwd=ROOT)
    (method, counts), = printed_splits(r.stdout)
    assert method == "balanced" and counts == [5]
    emitted = load_config(str(out))
    assert (emitted.parallel.dp, emitted.parallel.pipeline_split, emitted.parallel.layers_per_virtual_stage) == (
        1, "explicit", [5])
    assert printed_splits(tool("tools/show_plan.py", "--config", str(out), cwd=ROOT).stdout) == [("explicit", [5])]
    run = tmp_path / "run"
    tool(os.path.join(ROOT, "run", "train.py"), "--config", str(out), "--no-progress", "--set", "train.steps=2",
         "--set", f"train.output_dir={run}", "--set", "data.source=synthetic", "--set", "train.eval_batches=1",
         "--set", "train.sample_tokens=0", cwd=tmp_path)
    saved = [os.path.join(d, f) for d, _, fs in os.walk(run) for f in fs if f == "config.yaml"]
    assert saved and yaml.safe_load(open(saved[0]))["parallel"]["layers_per_virtual_stage"] == [5]


def test_search_emits_the_best_candidate(tmp_path):
    out = tmp_path / "best.yaml"
    r = tool("tools/simulate.py", "search", "--config", TINY, "--hardware", "h100", "--devices", "8",
             "--tp", "1", "2", "--pp", "1", "2", "--vpp", "1", "--ep", "1", "2", "--mbs", "1",
             "--recompute", "none", "--extend", "false", "--workers", "1", "--json", "--emit-recipe", str(out),
             cwd=ROOT)
    best = json.loads(r.stdout)["top"][0]
    emitted = load_config(str(out))
    p = emitted.parallel
    assert (p.tp, p.pp, p.ep, p.dp) == (best["tp"], best["pp"], best["ep"], best["dp"])
    assert " ".join(map(str, p.layers_per_virtual_stage)) == best["layers_per_virtual_stage"]
    assert plan_counts(emitted) == p.layers_per_virtual_stage
