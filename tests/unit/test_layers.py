"""The dependency rules of the layout (style.md, issue 10), read from the source with ast.

api -> workers -> occ_storage; client -> occ_protocol only; occ_storage imports nothing of the
project; and no import circle anywhere, counting imports inside functions (TYPE_CHECKING
blocks excepted: they never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("api", "workers", "occ_storage", "occ_protocol", "client")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def _imports(path: Path, known: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    skip: set[int] = set()
    for node in ast.walk(tree):  # `if TYPE_CHECKING:` bodies never run
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name in known:
                out.add(name)
    return out


GRAPH = {name: _imports(path, _modules()) for name, path in _modules().items()}


def _top(name: str) -> str:
    return name.split(".")[0]


def test_occ_storage_imports_nothing_of_the_project() -> None:
    bad = {m: sorted(i for i in deps if _top(i) != "occ_storage") for m, deps in GRAPH.items()}
    assert {m: d for m, d in bad.items() if _top(m) == "occ_storage" and d} == {}


def test_client_imports_only_itself_and_the_shared_package() -> None:
    allowed = {"client", "occ_protocol"}
    bad = {m: sorted(i for i in deps if _top(i) not in allowed) for m, deps in GRAPH.items()}
    assert {m: d for m, d in bad.items() if _top(m) == "client" and d} == {}


def test_layers_point_down() -> None:
    below = {
        "occ_protocol": {"occ_protocol"},
        "occ_storage": {"occ_storage"},
        "workers": {"workers", "occ_storage", "occ_protocol"},
        "api": {"api", "workers", "occ_storage", "occ_protocol"},
    }
    bad = [
        (m, i)
        for m, deps in GRAPH.items()
        if _top(m) in below
        for i in deps
        if _top(i) not in below[_top(m)]
    ]
    assert bad == []


def test_services_never_import_tasks() -> None:
    bad = [
        (m, i)
        for m, deps in GRAPH.items()
        if m.startswith(("workers.services", "workers.state", "workers.chain", "workers.remote"))
        for i in deps
        if i.startswith("workers.tasks")
    ]
    assert bad == []


def test_no_import_circle() -> None:
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for dep in sorted(GRAPH.get(m, ())):
            if dep == m:
                continue
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep) :], dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)
    assert cycles == []


def test_the_graph_is_not_empty() -> None:
    """Guards the tests above against a parser that finds nothing."""
    assert "workers.services.storage" in GRAPH["workers.tasks.storage"]
    assert "occ_protocol.signatures" in GRAPH["client.keys"] or any(
        _top(i) == "occ_protocol" for i in GRAPH["client.keys"]
    )
