"""The package's modules import each other without cycles (read statically, every import).

Every `import` and `from ... import` in every module counts, including those inside functions
(a function-level import hides a cycle from Python, not from a reader). Importing a submodule
also initialises its parent package, but that is not counted as an edge: otherwise every
module of a package that its `__init__` imports would form a cycle with it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "tutorial_lib"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

# Cycles that run through modules outside this change's reach, listed so the test still guards
# every other edge; empty this once they are removed (the test fails if one of them is gone).
KNOWN_CYCLES_TO_REMOVE: list[tuple[str, ...]] = []


def module_files(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> source file, for every module and package under `root`."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join([package, *parts])] = path
    return modules


def _base(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a `from X import ...` reads from (relative levels resolved)."""
    if not node.level:
        return node.module or ""
    anchor = module.split(".")
    if not is_package:
        anchor.pop()
    anchor = anchor[: len(anchor) - (node.level - 1)]
    return ".".join(anchor + ([node.module] if node.module else []))


def imported_modules(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that `module` imports anywhere in its source."""
    found = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _base(module, is_package, node)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"  # `from pkg import mod` imports the module
                found.add(submodule if submodule in modules else base)
    return {name for name in found if name in modules and name != module}


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    modules = module_files(root, package)
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """One cycle per strongly connected component that has one (Tarjan), each as the path
    a -> b -> ... -> a starting at its alphabetically first module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(_cycle_in(graph, component) for component in components)


def _cycle_in(graph: dict[str, set[str]], component: set[str]) -> tuple[str, ...]:
    """A shortest cycle through the component's first module (breadth-first, inside it)."""
    start = min(component)
    paths = {start: (start,)}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & component):
                if nxt == start:
                    return paths[node] + (start,)
                if nxt not in paths:
                    paths[nxt] = paths[node] + (nxt,)
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"{sorted(component)} is no cycle")


def test_the_package_has_no_import_cycle():
    cycles = find_cycles(import_graph())
    new = [c for c in cycles if c not in KNOWN_CYCLES_TO_REMOVE]
    assert not new, "import cycle(s): " + "; ".join(" -> ".join(c) for c in new)
    gone = [c for c in KNOWN_CYCLES_TO_REMOVE if c not in cycles]
    assert not gone, f"remove these from KNOWN_CYCLES_TO_REMOVE, they are gone: {gone}"


def test_plots_import_nothing_domain_specific():
    """plots draws; what it draws comes in as data, so it needs none of the package's modules."""
    assert import_graph()[f"{PACKAGE}.plots"] == set()


def test_method_families_and_evaluate_do_not_import_each_other():
    """A family module reads only the shared helpers, the registry and modules of its own
    family (qlora builds on lora: both reparameterise W); evaluate reads no family."""
    from tutorial_lib.methods import REGISTRY

    families: dict[str, set[str]] = {}
    for method in REGISTRY.values():
        families.setdefault(method.apply.__module__, set()).add(method.family)
    graph = import_graph()
    shared = {f"{PACKAGE}.methods.base", f"{PACKAGE}.methods.registry"}
    assert set(families) == {m for m in graph if m.startswith(f"{PACKAGE}.methods.")} - shared
    for module, family in families.items():
        imported = graph[module] & (set(families) | {f"{PACKAGE}.methods", f"{PACKAGE}.evaluate"})
        strangers = {m for m in imported if families.get(m) != family}
        assert not strangers, f"{module} ({family}) imports {sorted(strangers)}"
    assert not graph[f"{PACKAGE}.evaluate"] & (set(families) | {f"{PACKAGE}.methods"})
    assert graph[f"{PACKAGE}.methods.base"] == set()


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_a_cycle_through_a_function_level_or_relative_import_is_found(tmp_path):
    root = _write(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "def f():\n    from pkg import b\n",
            "b.py": "from .sub.c import thing\n",
            "sub/__init__.py": "",
            "sub/c.py": "from ..a import f\nimport pkg.d\n",
            "d.py": "from pkg.sub import c\n",
        },
    )
    graph = import_graph(root, "pkg")
    assert graph["pkg.a"] == {"pkg.b"}
    assert graph["pkg.b"] == {"pkg.sub.c"}
    assert find_cycles(graph) == [("pkg.a", "pkg.b", "pkg.sub.c", "pkg.a")]
    assert graph["pkg.d"] == {"pkg.sub.c"}  # c <-> d is in the same component, one cycle named


@pytest.mark.parametrize(
    "files",
    [
        {"__init__.py": "from pkg.b import x\n", "b.py": "x = 1\n"},
        {"__init__.py": "", "a.py": "import pkg\nfrom pkg import b\n", "b.py": "import os\n"},
    ],
)
def test_no_cycle_is_reported_where_there_is_none(tmp_path, files):
    assert find_cycles(import_graph(_write(tmp_path, files), "pkg")) == []


def test_the_package_registers_methods_in_the_order_tables_list_them():
    """methods/__init__ imports the families in this order; lesson tables and the CLI follow it."""
    from tutorial_lib.methods import REGISTRY

    order = list(dict.fromkeys(m.apply.__module__.rsplit(".", 1)[-1] for m in REGISTRY.values()))
    assert order == ["selective", "additive", "full", "lora", "prompts", "qlora"]
