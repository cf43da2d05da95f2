"""CLIs: model_stats JSON keys and 718B figures, plot_run on a synthetic metrics file, clear errors."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_model_stats_json():
    r = run("tools/model_stats.py", "--config", "yaml/pangu_ultra_moe_718b.yaml", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    for k in ("total_params", "total_params_without_mtp", "active_params", "train_flops_per_token"):
        assert k in d
    assert abs(d["total_params_without_mtp"] / 718e9 - 1) < 0.01 and abs(d["active_params"] / 39e9 - 1) < 0.03


def test_model_stats_bad_key_is_named():
    r = run("tools/model_stats.py", "--config", "yaml/tiny_cpu.yaml", "--set", "moe.topk=3")
    assert r.returncode == 2 and "moe.topk: unknown key" in r.stderr


def test_plot_run_writes_png(tmp_path):
    with open(tmp_path / "metrics.jsonl", "w") as f:
        for s in range(1, 6):
            f.write(json.dumps({"step": s * 10, "loss/total": 5 - s / 2, "loss/lm": 4 - s / 2, "lr": 1e-3,
                                "perf/tokens_per_s": 1000.0, "loss/aux": 0.01}) + "\n")
        f.write(json.dumps({"step": 50, "valid/loss": 2.0}) + "\n")
    r = run("tools/plot_run.py", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    r = run("tools/plot_run.py", str(tmp_path / "missing"))
    assert r.returncode == 2 and "no metrics.jsonl" in r.stderr


def test_every_command_line_entry_goes_through_run_cli():
    """A tool run as ``python tools/x.py`` turns bad input into one error line (exit 2), like the console scripts:
    every script with a ``__main__`` block hands ``main`` to ``pangu_ms.cli.run_cli``."""
    import ast
    import glob
    missing = []
    for path in sorted(glob.glob(os.path.join(ROOT, "tools", "*.py")) + glob.glob(os.path.join(ROOT, "run", "*.py"))):
        tree = ast.parse(open(path, encoding="utf-8").read())
        mains = [n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)]
        if mains and "run_cli(main" not in ast.unparse(mains[0]):
            missing.append(os.path.relpath(path, ROOT))
    assert not missing, missing
