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
    """Every console script is a ``pangu_ms.cli`` entry that runs an existing tool's ``main`` under run_cli."""
    import importlib
    import pangu_ms.cli as cli
    scripts = _pyproject()["project"]["scripts"]
    for name, target in scripts.items():
        module, attr = target.split(":")
        assert module == "pangu_ms.cli", f"{name}: {target} (console scripts go through pangu_ms.cli)"
        assert callable(getattr(cli, attr, None)), f"{name}: pangu_ms.cli has no {attr}"
    for module in ("pangu_ms.run.train", "pangu_ms.tools.simulate", "pangu_ms.tools.show_plan"):
        assert callable(importlib.import_module(module).main), module


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
