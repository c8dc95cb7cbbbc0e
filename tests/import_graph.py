"""fnnet's import graph, read from the source (``ast``): every ``import``/``from ... import``
inside the package, resolved to the modules it names. Used by ``test_package.py``."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fnnet"


def module_names():
    """``{dotted name: path}`` of every module of the package (a package is its ``__init__``)."""
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _base(module, is_package, level, target):
    """The module ``from <level dots><target> import ...`` in ``module`` reads from."""
    if not level:
        return target
    parts = module.split(".")
    parts = parts[: len(parts) - level + (1 if is_package else 0)]
    return ".".join(parts + ([target] if target else []))


def imports(names=None):
    """``{module: set of fnnet modules it imports}`` (``from P import m`` names the module
    ``P.m`` when ``m`` is one, else ``P``); ``__main__`` modules are left out."""
    names = names or module_names()
    graph = {}
    for module, path in names.items():
        if module.endswith("__main__"):
            continue
        is_package = path.name == "__init__.py"
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name.split(".")[0] == "fnnet"}
            elif isinstance(node, ast.ImportFrom):
                base = _base(module, is_package, node.level, node.module)
                if base.split(".")[0] != "fnnet":
                    continue
                for alias in node.names:
                    edges.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in names else base)
        graph[module] = {edge for edge in edges if edge in names and edge != module}
    return graph


def cycles(graph):
    """Every cycle's modules (strongly connected components of more than one module)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.add(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found
