"""The house rules of docs/architecture.md, checked on the source: who may import what, and no circles."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("curation", "recaption", "indexing", "training", "workflows")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports(path: Path, module_level_only: bool) -> set[str]:
    """Names of the modules `path` imports (relative imports resolved are not used in this project)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return names


def project_graph(module_level_only: bool = True) -> dict[str, set[str]]:
    mods = modules()
    return {name: {m for m in imports(path, module_level_only) if m in mods and m != name}
            for name, path in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_even_through_imports_inside_functions():
    graph = project_graph(module_level_only=False)  # stricter than module level: a lazy import may not close a circle
    assert "workflows.executor" in graph and "curation.core.schema" in graph
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_only_workflows_imports_ray():
    offenders = sorted(name for name, path in modules().items()
                       if not name.startswith("workflows")
                       and any(m == "ray" or m.startswith("ray.") for m in imports(path, module_level_only=False)))
    assert offenders == []
    assert any("ray" in imports(path, False) for name, path in modules().items() if name == "workflows.executor")


def test_the_kernel_imports_no_other_rushes_package():
    for name, path in modules().items():
        if name.startswith("curation.core"):
            ours = {m for m in imports(path, module_level_only=False) if m.split(".")[0] in PACKAGES}
            assert all(m.startswith("curation.core") for m in ours), (name, sorted(ours))


def test_no_stage_imports_the_synthetic_test_data():
    for name, path in modules().items():
        if not name.startswith("workflows"):
            synthetic = {m for m in imports(path, module_level_only=False) if m.startswith("workflows")}
            assert not synthetic, (name, sorted(synthetic))
