"""pyproject.toml lists every package of the source tree, and the installed console scripts run."""
import os
import shutil
import subprocess
import sys
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pyproject():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def test_every_package_is_listed():
    on_disk = {"pangu_ms.run", "pangu_ms.tools"}
    for folder, _, files in os.walk(os.path.join(ROOT, "pangu_ms")):
        if "__init__.py" in files and "__pycache__" not in folder:
            on_disk.add(os.path.relpath(folder, ROOT).replace(os.sep, "."))
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    assert listed == on_disk, f"missing from pyproject.toml: {sorted(on_disk - listed)}; " \
                              f"listed but absent: {sorted(listed - on_disk)}"


def test_console_scripts_point_at_mains():
    scripts = _pyproject()["project"]["scripts"]
    for name, target in scripts.items():
        module, func = target.split(":")
        rel = module.replace("pangu_ms.tools.", "tools.").replace("pangu_ms.run.", "run.")
        path = os.path.join(ROOT, *rel.split(".")) + ".py"
        assert os.path.isfile(path), f"{name}: {path} missing"
        with open(path, encoding="utf-8") as f:
            text = f.read()
        assert f"def {func}(" in text or f"import {func}" in text, f"{name}: no {func} in {path}"


def test_installed_from_any_directory(tmp_path):
    """The package imports, and a console script runs, from a directory outside the checkout."""
    r = subprocess.run([sys.executable, "-c", "import pangu_ms, pangu_ms.tools.model_stats as m; print(m.__file__)"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert os.path.realpath(r.stdout.strip()).startswith(os.path.realpath(ROOT)), \
        f"the installed package is another checkout's: {r.stdout.strip()} (source run/env.sh here)"
    exe = shutil.which("pangu-stats", path=os.path.dirname(sys.executable))
    assert exe, "console script pangu-stats not installed (pip install -e .)"
    r = subprocess.run([exe, "--config", os.path.join(ROOT, "yaml/tiny_cpu.yaml")], cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "params" in r.stdout.lower()
