"""The import graph of ``src/quanta`` has no cycle.

The graph is built from the source with ``ast`` (nothing is imported), so it sees every import
statement, at module level and inside functions, that could ever run:

* ``import quanta.a.b`` and ``from quanta.a import b`` (relative forms resolved against the
  importing module's package) give an edge to the module named (``quanta.a.b``) and, when a
  name is not a submodule, to the module that defines it (``from quanta.a import f`` → ``a``).
* Importing ``quanta.a.b`` also runs the ``__init__`` of ``quanta.a``: an edge to every
  ancestor package of the target, except the importer's own ancestors (Python has already
  started those before the importer runs, so they add no new order constraint).
* The package root's lazy ``_API`` table (``quanta.reproduce`` → ``quanta.cli``) is an edge
  from the module that *uses* the lazy name (``from quanta import reproduce`` or
  ``quanta.reproduce``) to the module that defines it. Why not from the root: importing any
  submodule runs ``quanta/__init__.py``, whose body imports no quanta module; its table is
  only read by ``__getattr__`` when a name is looked up. Edges root → every API module would
  make any ``from quanta import __version__`` look like importing the whole package.
* Imports under ``if TYPE_CHECKING:`` never run and are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import quanta

Graph = dict[str, set[str]]


def _modules(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name → file, for every ``.py`` under ``root`` (the package ``package``)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:`` (its ``else`` is kept)."""
    nodes: list[ast.AST] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        nodes.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))
    return nodes


def _lazy_api(modules: dict[str, Path], package: str) -> dict[str, str]:
    """The root's ``_API = {name: module}`` table, read from its source."""
    for node in ast.parse(modules[package].read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "_API" for t in node.targets
        ):
            table = ast.literal_eval(node.value)
            assert isinstance(table, dict)
            return table
    return {}


def import_graph(root: Path, package: str) -> Graph:
    """Edges ``importer → imported`` between the modules of ``package`` (see the module doc)."""
    modules = _modules(root, package)
    api = _lazy_api(modules, package)
    graph: Graph = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        here = name if is_package else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base_parts = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                    base = ".".join(base_parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    if sub in modules:
                        targets.add(sub)
                    elif base == package and alias.name in api:
                        targets.add(api[alias.name])
                    else:
                        targets.add(base)
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == package
                and node.attr in api
            ):
                targets.add(api[node.attr])
        for target in targets:
            if target not in modules:  # another library, or a name of a module
                continue
            parts = target.split(".")
            for depth in range(1, len(parts) + 1):
                dep = ".".join(parts[:depth])
                own_ancestor = name == dep or name.startswith(dep + ".")
                if dep in modules and dep != name and (dep == target or not own_ancestor):
                    graph[name].add(dep)
    return graph


def find_cycles(graph: Graph) -> list[list[str]]:
    """The shortest circle (``[a, b, …, a]``) through each module that lies on one, each circle
    once, starting at its alphabetically first module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:  # Tarjan; the graph has ~60 nodes, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    cycles: set[tuple[str, ...]] = set()
    for component in components:
        for start in component:  # the shortest circle through each module, found by BFS
            paths = {w: [start, w] for w in sorted(graph[start] & component)}
            frontier = list(paths)
            while start not in paths:
                nxt = []
                for v in frontier:
                    for w in sorted(graph[v] & component):
                        if w not in paths:
                            paths[w] = [*paths[v], w]
                            nxt.append(w)
                frontier = nxt
            ring = paths[start][:-1]
            first = ring.index(min(ring))  # one spelling per circle: from its first module
            cycles.add((*ring[first:], *ring[:first], ring[first]))
    return [list(c) for c in sorted(cycles)]


def test_quanta_has_no_import_cycle():
    root = Path(quanta.__file__).parent
    graph = import_graph(root, "quanta")
    assert len(graph) > 40 and "quanta.cli.job" in graph  # the whole source was read
    assert "quanta.pipeline" in graph["quanta.cli.job"]  # function-level imports are seen
    cycles = find_cycles(graph)
    assert not cycles, "import cycles in src/quanta:\n" + "\n".join(" → ".join(c) for c in cycles)


def test_the_report_and_the_pipeline_do_not_import_the_cli_or_each_other_back():
    graph = import_graph(Path(quanta.__file__).parent, "quanta")
    assert not {m for m in graph["quanta.pipeline"] if m.startswith("quanta.cli")}
    report = {m for m in graph if m == "quanta.report" or m.startswith("quanta.report.")}
    assert len(report) > 10  # the package and its section modules
    for module in report:
        assert not {
            m for m in graph[module] if m == "quanta.pipeline" or m.startswith("quanta.cli")
        }


def test_every_lazy_api_name_is_defined_where_the_table_points():
    root = Path(quanta.__file__).parent
    modules = _modules(root, "quanta")
    for name, module in _lazy_api(modules, "quanta").items():
        tree = ast.parse(modules[module].read_text())
        defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)} | {
            a.asname or a.name for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names
        }
        assert name in defined, f"quanta.{name} → {module}, which does not define it"


def test_the_graph_builder_on_a_planted_package(tmp_path):
    """Known edges of a small package: relative and absolute, module- and function-level,
    TYPE_CHECKING, ancestor packages, the lazy root table; and the cycles among them."""
    files = {
        "__init__.py": "import importlib\n_API = {'go': 'pkg.sub.b'}\n",
        "a.py": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import c\n"
            "def f():\n    from .sub import b\n    return b\n"
        ),
        "c.py": "import pkg\ndef g():\n    return pkg.go()\n",
        "d.py": "from pkg import __version__, go\n",
        "sub/__init__.py": "from . import b\n",
        "sub/b.py": "from ..a import f\nimport os\n",
        "sub/e.py": "from pkg.sub.b import f\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    graph = import_graph(tmp_path, "pkg")
    assert graph == {
        "pkg": set(),
        "pkg.a": {"pkg.sub", "pkg.sub.b"},  # the TYPE_CHECKING import of c is not an edge
        "pkg.c": {"pkg", "pkg.sub", "pkg.sub.b"},  # pkg.go is pkg.sub.b's, through pkg.sub
        "pkg.d": {"pkg", "pkg.sub", "pkg.sub.b"},
        "pkg.sub": {"pkg.sub.b"},
        "pkg.sub.b": {"pkg.a"},
        "pkg.sub.e": {"pkg.sub.b"},  # pkg.sub is e's own package: not an edge
    }
    assert find_cycles(graph) == [
        ["pkg.a", "pkg.sub", "pkg.sub.b", "pkg.a"],  # the shortest through pkg.sub
        ["pkg.a", "pkg.sub.b", "pkg.a"],
    ]
    graph["pkg.sub.b"].discard("pkg.a")
    assert find_cycles(graph) == []


@pytest.mark.parametrize(
    "graph",
    [{"x": {"x"}}, {"x": {"y"}, "y": {"x"}}, {"x": {"y"}, "y": {"z"}, "z": {"x"}, "w": {"x"}}],
)
def test_find_cycles_reports_self_loops_and_long_circles(graph):
    (cycle,) = find_cycles(graph)
    assert cycle[0] == cycle[-1] == "x" and len(cycle) == len(graph.keys() - {"w"}) + 1


def test_one_progress_bar_helper_for_every_command():
    """Only ``quanta.cli._common`` builds rich progress displays; commands call its helper."""
    root = Path(quanta.__file__).parent
    users = set()
    for name, path in _modules(root, "quanta").items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            if "rich.progress" in names:
                users.add(name)
    assert users == {"quanta.cli._common"}
