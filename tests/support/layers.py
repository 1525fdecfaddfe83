"""Reading a package's imports with `ast`, and the rules of Gatehouse's layers.

    core  <  services, agents  <  live, workflows  <  web  <  app.py, cli/
    (config.py is below everything: anything may read the settings)

A module may import its own layer and the layers below it; siblings (`services` and
`agents`: rules and connections to target systems; `live` and `workflows`) import neither
each other nor anything above. A package outside this list is itself a broken rule. Starlette and Jinja belong to
`web/` (and `app.py`), DBOS to `workflows/`, DBOS's private modules to
`workflows/runtime.py` alone; the package's root holds entry points and settings only.
Every import counts, also those inside functions.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

LAYERS = {"config": 0, "core": 0, "services": 1, "agents": 1, "live": 2, "workflows": 2, "web": 3, "app": 4,
          "cli": 4, "__main__": 5}
SIBLINGS = ({"live", "workflows"}, {"services", "agents"})
ROOT_MODULES = {"__init__", "__main__", "app", "config"}
WEB_ONLY = ("starlette", "jinja2", "jinja2_fragments", "sse_starlette")
WORKFLOWS_ONLY = ("dbos",)


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    imported: str  # dotted name as written (a module, or a module's attribute)
    line: int


def modules(root: Path, package: str) -> dict[str, Path]:
    """Every module of the package under `root` (the directory that holds `package/`)."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(root: Path, package: str) -> Iterator[Import]:
    """Every import statement of every module, with relative ones made absolute."""
    for name, path in modules(root, package).items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield Import(name, alias.name, node.lineno)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in node.names:
                    yield Import(name, f"{base}.{alias.name}", node.lineno)


def resolve(imported: str, known: set[str]) -> str | None:
    """The package module an imported name lives in (`a.b.c` may be module `a.b.c` or a name in `a.b`)."""
    while imported:
        if imported in known:
            return imported
        imported = imported.rpartition(".")[0]
    return None


def layer_of(module: str, package: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def violations(root: Path, package: str) -> list[str]:
    """Every broken rule, one sentence each (empty when the package keeps them all)."""
    known = set(modules(root, package))
    found: list[str] = []
    for module in sorted(known):
        parts = module.split(".")
        if len(parts) == 2 and parts[1] not in ROOT_MODULES and f"{module}" not in _packages(root, package):
            found.append(f"{module}: a module at the root of {package}/ (only entry points and settings belong there)")
        elif len(parts) >= 2 and parts[1] not in LAYERS and parts[1] not in ROOT_MODULES:
            found.append(f"{module}: {parts[1]}/ is not a layer (add it to the layers, or move the module)")
    graph: dict[str, set[str]] = {module: set() for module in known}
    for imp in imports(root, package):
        where = f"{imp.importer} line {imp.line}"
        layer = layer_of(imp.importer, package)
        top = imp.imported.split(".")[0]
        if top in WEB_ONLY and layer not in ("web", "app"):
            found.append(f"{where}: imports {imp.imported} (only web/ and app.py may use Starlette or Jinja)")
        if top in WORKFLOWS_ONLY and layer != "workflows":
            found.append(f"{where}: imports {imp.imported} (only workflows/ may use DBOS)")
        if imp.imported.startswith("dbos._") and imp.importer != f"{package}.workflows.runtime":
            found.append(f"{where}: imports {imp.imported} (only workflows/runtime.py may use DBOS's private API)")
        target = resolve(imp.imported, known) if top == package else None
        if target is None or target == imp.importer:
            continue
        graph[imp.importer].add(target)
        upward = LAYERS.get(layer_of(target, package), 0) > LAYERS.get(layer, 0)
        siblings = {layer, layer_of(target, package)} in SIBLINGS
        if (upward or siblings) and target != package:
            found.append(f"{where}: {layer}/ imports {target} ({layer_of(target, package)}/ is not below it)")
    found += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph)]
    return found


def _packages(root: Path, package: str) -> set[str]:
    return {".".join(p.parent.relative_to(root).parts) for p in (root / package).rglob("__init__.py")}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of modules that import each other (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group) + [sorted(group)[0]])

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups
