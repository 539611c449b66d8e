"""The package's layering, read from the source: the import graph between its parts has no
cycle, the cores never import Lightning, and ``import ortho_lightning.init`` stays light.

Every ``import`` / ``from ... import`` of ``ortho_lightning.*`` in every module is counted, at
module level and inside functions (a lazy import is still a dependency), including
``TYPE_CHECKING`` blocks. A part is a subpackage (``init``, ``theory``, ...) or a top-level
module (``selection``, ``matrices``, ``validation``, ...).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

import ortho_lightning

PACKAGE = Path(ortho_lightning.__file__).parent
CORES = ("init", "constraints", "spectra", "theory")
LIGHTNING = ("lightning", "pytorch_lightning")

Edge = tuple[str, str]
Sites = dict[Edge, list[str]]


def _modules() -> dict[str, Path]:
    """``{dotted module name: path}`` of every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _part(module: str) -> str | None:
    """The part a dotted module name belongs to (``None`` for the root package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The absolute names an import statement loads (``from a import b`` counts ``a.b`` too,
    since ``b`` may be a submodule: ``from ortho_lightning import spectra``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[: len(anchor) - node.level + 1]
        base = ".".join(anchor + ([node.module] if node.module else []))
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def import_edges() -> Sites:
    """``{(importer part, imported part): ["file:line", ...]}`` between different parts."""
    modules = _modules()
    edges: Sites = defaultdict(list)
    for module, path in modules.items():
        source = _part(module)
        if source is None:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            targets = set()
            for name in _imported(node, module, path.name == "__init__.py"):
                if name.split(".")[0] == PACKAGE.name and _part(name) is not None:
                    # "from ortho_lightning import __version__" names no part
                    if name.count(".") == 1 and name not in modules:
                        continue
                    targets.add(_part(name))
            for target in targets - {source}:
                edges[(source, target)].append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    return dict(edges)


def find_cycle(edges: set[Edge]) -> list[str] | None:
    """A cycle of the directed graph as a path ``[a, b, ..., a]``, or ``None`` (depth-first
    search; a node met again while on the stack closes the cycle)."""
    graph: dict[str, list[str]] = defaultdict(list)
    for a, b in sorted(edges):
        graph[a].append(b)
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


@pytest.mark.parametrize(
    "edges,cycle",
    [
        ({("a", "b"), ("b", "c")}, None),
        ({("a", "b"), ("b", "c"), ("c", "a")}, ["a", "b", "c", "a"]),
        ({("x", "a"), ("a", "b"), ("b", "a"), ("b", "c")}, ["a", "b", "a"]),
    ],
    ids=["chain", "triangle", "two-cycle-behind-a-tail"],
)
def test_find_cycle(edges, cycle):
    assert find_cycle(edges) == cycle


def test_the_graph_is_read_from_the_source():
    # edges the package is known to have (callbacks are glue over the cores; init uses the
    # shared selector; "from ortho_lightning import spectra" counts as an import of spectra)
    edges = import_edges()
    for edge in [("callbacks", "init"), ("callbacks", "spectra"), ("init", "selection"),
                 ("init", "theory"), ("theory", "activations")]:
        assert edge in edges, edge
    assert any("monitors.py" in site for site in edges[("callbacks", "spectra")])


def test_import_graph_between_parts_has_no_cycle():
    edges = import_edges()
    cycle = find_cycle(set(edges))
    if cycle is not None:
        where = "; ".join(
            f"{a} -> {b} at {', '.join(edges[(a, b)])}" for a, b in zip(cycle, cycle[1:])
        )
        pytest.fail(f"import cycle {' -> '.join(cycle)}: {where}")


@pytest.mark.parametrize("core", CORES)
def test_cores_never_import_lightning(core):
    sites = []
    for path in sorted((PACKAGE / core).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            if any(name.split(".")[0] in LIGHTNING for name in names):
                sites.append(f"{path.name}:{node.lineno}")
    assert not sites, f"{core} imports Lightning at {sites}"


def _loaded_after(statement: str) -> list[str]:
    """Top-level names of ``sys.modules`` plus every ``ortho_lightning.*`` module, after running
    ``statement`` in a fresh interpreter."""
    code = (
        f"import sys, json; {statement}; "
        "print(json.dumps(sorted(m for m in sys.modules if '.' not in m "
        "or m.startswith('ortho_lightning'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_importing_init_loads_neither_theory_nor_scipy_nor_lightning():
    loaded = _loaded_after("import ortho_lightning.init")
    assert "ortho_lightning.init.initialize" in loaded  # the probe sees the package's modules
    assert not [m for m in loaded if m.startswith("ortho_lightning.theory")]
    assert not {"scipy", "matplotlib", *LIGHTNING} & set(loaded)


def test_critical_point_through_init_loads_theory_on_first_use():
    loaded = _loaded_after(
        "from ortho_lightning.init import critical_point; critical_point('tanh', 0.1)"
    )
    assert "ortho_lightning.theory.criticality" in loaded


def test_importing_the_cores_does_not_load_lightning():
    # one interpreter for the four (each start costs a torch import): if any core pulled
    # Lightning in, it would be in sys.modules after all four
    loaded = _loaded_after("; ".join(f"import ortho_lightning.{core}" for core in CORES))
    assert {f"ortho_lightning.{core}" for core in CORES} <= set(loaded)
    assert not set(LIGHTNING) & set(loaded)
