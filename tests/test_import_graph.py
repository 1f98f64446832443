"""
The import graph of the popproxy package has no cycle: every import of one
popproxy module by another, at module level or inside a function, read from
the source with ast.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "popproxy"


def moduleName(path: Path) -> str:
    """
    The dotted name of a source file of the package.
    """
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def importedModules(tree: ast.Module, modules: set[str]) -> set[str]:
    """
    The package's modules that a parsed source imports anywhere in it:
    C{import popproxy.x}, C{from popproxy.x import y} and
    C{from popproxy import x} where C{x} is a module.
    """
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name in modules}


def importGraph() -> dict[str, set[str]]:
    """
    Each module of the package, with the package modules it imports (the
    package itself is left out as a target: importing C{popproxy.x} runs
    C{popproxy/__init__.py} first, which imports nothing).
    """
    paths = {moduleName(path): path for path in PACKAGE.rglob("*.py")}
    targets = set(paths) - {"popproxy"}
    return {
        name: importedModules(ast.parse(path.read_text()), targets) - {name}
        for name, path in paths.items()
    }


def findCycle(graph: dict[str, set[str]]) -> list[str] | None:
    """
    One cycle of C{graph} as the list of its modules (the first repeated
    at the end), or None.
    """
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path = [start]
        pending = [iter(sorted(graph[start]))]
        while pending:
            following = next(pending[-1], None)
            if following is None:
                done.add(path.pop())
                pending.pop()
            elif following in path:
                return path[path.index(following) :] + [following]
            elif following not in done:
                path.append(following)
                pending.append(iter(sorted(graph[following])))
    return None


def test_findCycleFindsOne() -> None:
    """
    The cycle finder reports a cycle where there is one, and none in a
    graph without.
    """
    assert findCycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert findCycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_graphSeesLazyImports() -> None:
    """
    Imports inside functions count: the twistd glue imports the demo server
    only when the configuration asks for it, and that edge is in the graph.
    """
    graph = importGraph()
    assert "popproxy.demo" in graph["popproxy._assembly"]
    assert "popproxy._offline" in graph["popproxy.__main__"]


def test_noImportCycle() -> None:
    """
    No popproxy module imports, directly or through others, itself.
    """
    assert findCycle(importGraph()) is None
