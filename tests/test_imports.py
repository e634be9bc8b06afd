"""The tsd_study package has no import cycle, counting function-level (lazy) imports.

The graph comes from the source files' syntax trees (nothing is imported, so no torch); imports under
``if TYPE_CHECKING:`` never run and are left out. Runtime well under a second.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "tsd_study"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / PACKAGE


def module_name(file: Path, root: Path) -> str:
    """The dotted module name of a source file under ``root`` (a package's ``__init__.py`` is the package)."""
    parts = file.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, except those in ``if TYPE_CHECKING:`` bodies."""
    found: list[ast.Import | ast.ImportFrom] = []
    pending = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        children = list(ast.iter_child_nodes(node))
        if isinstance(node, ast.If) and _is_type_checking(node):
            children = [node.test, *node.orelse]
        pending.extend(children)
    return found


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, modules: set[str]) -> set[str]:
    """The package modules an import statement of ``module`` loads by name."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            parts = module.split(".")[:len(module.split(".")) - node.level + is_package]
            base = ".".join([*parts, base] if base else parts)
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
    return {name for name in names if name in modules}


def import_graph(root: Path) -> dict[str, set[str]]:
    """{module: the package modules it imports anywhere in its body} for every module of the package at ``root``."""
    files = {module_name(file, root): file for file in sorted(root.rglob("*.py"))}
    modules = set(files)
    graph = {}
    for module, file in files.items():
        tree = ast.parse(file.read_text(), filename=str(file))
        is_package = file.name == "__init__.py"
        graph[module] = set().union(*(_targets(node, module, is_package, modules) for node in _runtime_imports(tree)))
        graph[module].discard(module)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as its modules, the first repeated at the end; None when the graph has none."""
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        if module in path:
            return [*path[path.index(module):], module]
        if module in done:
            return None
        path.append(module)
        for imported in sorted(graph.get(module, ())):
            cycle = visit(imported)
            if cycle:
                return cycle
        path.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        cycle = visit(module)
        if cycle:
            return cycle
    return None


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph(PACKAGE_DIR)
    assert "tsd_study.runs.store" in graph["tsd_study.launch.executors"]  # the graph sees the package's imports
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_a_lazy_import_closing_a_cycle_is_found(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from .a import f\n")
    (package / "sub" / "a.py").write_text("from typing import TYPE_CHECKING\nfrom pkg import b\n"
                                          "if TYPE_CHECKING:\n    from pkg.c import C\n")
    (package / "b.py").write_text("def g():\n    from .sub.a import f\n")
    (package / "c.py").write_text("import pkg.sub.a\n")
    graph = import_graph(package)
    assert graph["pkg.sub"] == {"pkg.sub.a"} and graph["pkg.sub.a"] == {"pkg.b"} and graph["pkg.c"] == {"pkg.sub.a"}
    assert find_cycle(graph) == ["pkg.b", "pkg.sub.a", "pkg.b"]
    (package / "b.py").write_text("def g():\n    return 1\n")
    assert find_cycle(import_graph(package)) is None
