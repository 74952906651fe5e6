"""The import graph of `bench`: layers that only import downwards, no cycles, and light entry points.

The layers (ARCHITECTURE.md explains them): a module may import modules of lower layers and of its own
package; imports inside functions count too. `vptbench report` and the config schema must not pull in
torch, hydra or the model registry.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"

# top-level part of bench -> layer (lower = more basic)
LAYERS = {
    "records": 0, "devices": 0, "atomic": 0, "digest": 0, "losses": 0, "data": 0, "changepoint": 0,
    "fingerprint": 0, "paired": 0,
    "config": 1, "checkpoint": 1, "store": 1, "metrics": 1,
    "precision": 2,
    "measure": 3, "evaluate": 3,
    "train": 4,
    "cell": 5,
    "grid": 6, "report": 6, "compose": 6,
    "history": 7, "ab": 7, "ab_worker": 7,
    "trend": 8,
    "cli": 9,
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(BENCH.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set:
    """The bench modules `path` imports anywhere in it (top level or inside functions)."""
    mod = _module_name(path)
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{a.name}" for a in node.names]
            out |= {n for n in names if _is_module(n)} | ({target} if not any(_is_module(n) for n in names) else set())
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return {t for t in out if t == "bench" or t.startswith("bench.")} - {mod}


def _is_module(name: str) -> bool:
    p = BENCH.parent / Path(*name.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


GRAPH = {_module_name(p): _imports(p) for p in sorted(BENCH.rglob("*.py"))}


def _part(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def test_every_part_of_bench_has_a_layer():
    parts = {_part(m) for m in GRAPH} - {"", "ablations"}
    assert parts <= set(LAYERS), f"give these a layer (and a line in ARCHITECTURE.md): {sorted(parts - set(LAYERS))}"


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if _part(m)))
def test_imports_go_down_the_layers(module):
    here = _part(module)
    upward = [t for t in GRAPH[module] if _part(t) not in ("", here) and LAYERS[_part(t)] >= LAYERS[here]]
    assert not upward, f"{module} (layer {LAYERS[here]}) imports {upward}"


def test_no_import_cycles():
    state, path = {}, []

    def visit(m):
        state[m] = "open"
        path.append(m)
        for t in GRAPH.get(m, ()):
            if t not in GRAPH:
                continue
            if state.get(t) == "open":
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(t):] + [t]))
            if t not in state:
                visit(t)
        path.pop()
        state[m] = "done"

    for m in GRAPH:
        if m not in state:
            visit(m)


@pytest.mark.parametrize("module,absent", [
    ("bench.report", ("torch", "hydra", "backbones", "bench.cell")),   # `vptbench report` is pandas only
    ("bench.report.compare", ("torch", "hydra", "backbones")),
    ("bench.history", ("torch", "hydra", "backbones")),
    ("bench.trend", ("torch", "hydra", "backbones", "plotly", "matplotlib")),  # both loaded when a page is written
    ("bench.ab", ("torch", "hydra", "backbones")),                # the A/B driver: torch lives in its workers           # `vptbench history` in CI, no torch
    ("bench.config", ("torch", "hydra", "omegaconf", "backbones", "numpy")),
    ("bench.store", ("torch", "numpy", "pandas")),
    ("bench.records", ("torch", "numpy", "pandas")),
    ("bench.cli", ("torch", "hydra", "pandas", "backbones")),        # commands import what they use
])
def test_imported_alone_a_module_pulls_in_only_what_it_needs(module, absent):
    code = (f"import sys, {module}; bad = [m for m in {absent!r} if m in sys.modules]; "
            "print(','.join(bad)); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"importing {module} pulls in {proc.stdout.strip()} {proc.stderr[-500:]}"
