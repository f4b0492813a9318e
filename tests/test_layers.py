"""The layers import in one direction only: orchestrator -> reports -> clile_core. Read from the source (every
``import``, at module level or inside a function), so a lazy import cannot hide a reverse dependency."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("clile_core", "reports", "orchestrator")  # each may import only those before it
# Third-party packages a layer must not need: the method runs without Ray or MLflow installed.
FORBIDDEN = {"clile_core": ("orchestrator", "reports", "ray", "mlflow"), "reports": ("orchestrator",)}


def _modules(root: Path) -> dict[str, Path]:
    modules = {}
    for layer in LAYERS:
        for path in sorted((root / layer).rglob("*.py")):
            modules[".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")] = path
    return modules


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Everything ``path`` imports, as module names (``from pkg import mod`` counts as ``pkg.mod``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in modules else node.module)
    return found


def _graph(root: Path) -> dict[str, set[str]]:
    modules = _modules(root)
    return {name: _imports(path, modules) for name, path in modules.items()}


def _forbidden_edges(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, imported in sorted(graph.items()):
        for target in sorted(imported):
            if target.split(".")[0] in FORBIDDEN.get(module.split(".")[0], ()):
                bad.append(f"{module} imports {target}")
    return bad


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle among the project's modules (as a path that returns to its start), or []."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(module: str) -> list[str]:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module] & graph.keys()):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[module] = 2
        return []

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return []


def test_layers_import_only_downwards():
    graph = _graph(REPO)
    assert {"clile_core.names", "reports.build", "orchestrator.tracking"} <= graph.keys()  # the walk found them
    assert _forbidden_edges(graph) == []


def test_no_import_cycle():
    assert _cycle(_graph(REPO)) == []


@pytest.mark.parametrize("source, expected", [
    ("from orchestrator.tracking import SweepTracker\n", ["reports.x imports orchestrator.tracking"]),
    ("def later():\n    import orchestrator.sweep\n", ["reports.x imports orchestrator.sweep"]),  # lazy counts
    ("from clile_core import names\nimport mlflow\n", []),  # reports may use MLflow and the core
])
def test_a_reverse_import_is_caught(tmp_path, source, expected):
    for layer in LAYERS:
        (tmp_path / layer).mkdir()
        (tmp_path / layer / "__init__.py").write_text("")
    (tmp_path / "clile_core" / "names.py").write_text("")
    (tmp_path / "reports" / "x.py").write_text(source)
    assert _forbidden_edges(_graph(tmp_path)) == expected


def test_the_core_may_not_need_ray_or_mlflow(tmp_path):
    for layer in LAYERS:
        (tmp_path / layer).mkdir()
    (tmp_path / "clile_core" / "a.py").write_text("import ray.tune\nfrom mlflow import MlflowClient\n")
    assert _forbidden_edges(_graph(tmp_path)) == ["clile_core.a imports mlflow", "clile_core.a imports ray.tune"]


def test_a_cycle_is_found(tmp_path):
    for layer in LAYERS:
        (tmp_path / layer).mkdir()
    (tmp_path / "orchestrator" / "a.py").write_text("from orchestrator import b\n")
    (tmp_path / "orchestrator" / "b.py").write_text("import reports.c\n")
    (tmp_path / "reports" / "c.py").write_text("from orchestrator.a import thing\n")
    assert _cycle(_graph(tmp_path)) == ["orchestrator.a", "orchestrator.b", "reports.c", "orchestrator.a"]
