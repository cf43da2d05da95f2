"""The package's import structure: no import cycles, and no layer imports a higher one.

Imports are read from the source with ``ast`` (nothing is imported), including imports inside functions: a deferred
import is still a dependency. Importing ``pangu_ms.a.b`` also runs ``pangu_ms/a/__init__.py``, so a module depends on
every package ``__init__`` on the way to what it imports.
"""
from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "pangu_ms")

# Lower number = lower layer. A module may import its own layer or lower ones. Packages of one layer must not
# import each other both ways (checked by the package-cycle test).
LAYERS = {
    "__init__": 0, "config": 0, "kernels": 0,
    "backend": 1, "layers": 1, "data": 1,
    "model": 2, "moe": 2,
    "parallel": 3, "eval": 3, "rl": 3, "bench": 3,
    "sim": 4, "train": 4,
    "integrations": 5, "interop": 5, "cli": 5,
}


def module_name(path: str) -> str:
    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def package_modules() -> dict:
    """{module name: path} for every .py file under pangu_ms/."""
    out = {}
    for folder, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                out[module_name(os.path.join(folder, f))] = os.path.join(folder, f)
    return out


def imports_of(name: str, path: str, modules: dict) -> set:
    """Project modules imported by module ``name`` (absolute and relative imports, at any depth of the file),
    plus the package ``__init__`` files those imports run."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    is_pkg = path.endswith("__init__.py")
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            for a in node.names:
                sub = f"{mod}.{a.name}"
                targets.add(sub if sub in modules else mod)
    # a module's own ancestor packages are already being imported when it runs: no dependency on them
    ancestors = {".".join(name.split(".")[:i]) for i in range(1, len(name.split(".")))}
    out = set()
    for t in targets:
        if not t.startswith("pangu_ms"):
            continue
        parts = t.split(".")
        for i in range(2, len(parts) + 1):          # pangu_ms.a, pangu_ms.a.b, ... (package __init__ files run)
            m = ".".join(parts[:i])
            if m in modules and m != name and (m not in ancestors or m == t):
                out.add(m)
    return out


def graph() -> dict:
    modules = package_modules()
    return {m: imports_of(m, p, modules) for m, p in modules.items()}


def top_package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def find_cycle(edges: dict):
    """One cycle of the directed graph as a list of nodes, or None."""
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(edges):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_every_package_has_a_layer():
    missing = sorted({top_package(m) for m in package_modules()} - set(LAYERS))
    assert not missing, f"add these packages/modules of pangu_ms to LAYERS: {missing}"


def test_no_module_import_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_package_import_cycle():
    edges = {}
    for m, deps in graph().items():
        for d in deps:
            a, b = top_package(m), top_package(d)
            if a != b and "__init__" not in (a, b):
                edges.setdefault(a, set()).add(b)
    cycle = find_cycle(edges)
    assert cycle is None, "package cycle: " + " -> ".join(cycle)


def test_no_upward_import():
    bad = []
    for m, deps in graph().items():
        for d in deps:
            if LAYERS.get(top_package(d), 0) > LAYERS.get(top_package(m), 0):
                bad.append(f"{m} imports {d}")
    assert not bad, "lower layer imports a higher one:\n" + "\n".join(sorted(bad))


def test_cycle_finder_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("folder", sorted(d for d in os.listdir(os.path.join(ROOT, "tests"))
                                          if os.path.isdir(os.path.join(ROOT, "tests", d)) and d != "__pycache__"))
def test_every_test_folder_is_a_package(folder):
    assert os.path.isfile(os.path.join(ROOT, "tests", folder, "__init__.py")), f"tests/{folder}/__init__.py missing"


def test_no_sys_path_editing():
    offenders = []
    for top in ("pangu_ms", "tools", "run", "tests"):
        for folder, _, files in os.walk(os.path.join(ROOT, top)):
            for f in files:
                if f.endswith(".py"):
                    p = os.path.join(folder, f)
                    with open(p, encoding="utf-8") as fh:
                        text = fh.read()
                    if "sys.path.insert" in text.replace("\"sys.path.insert\"", "") or "sys.path.append" in text:
                        offenders.append(os.path.relpath(p, ROOT))
    offenders = [o for o in offenders if o != os.path.join("tests", "test_layering.py")]
    assert not offenders, f"sys.path edited in: {offenders} (the package is installed; see pyproject.toml)"
