"""Imports point down the layers of the house and form no cycle.

Every ``import`` between ``shiftwise`` modules (module level, in functions, under
``TYPE_CHECKING``) goes from a module to one of its own layer or a lower one of :data:`LAYERS`,
and the graph of them is acyclic. The library is everything below ``tools``; ``tools`` and
``cli`` are the applications (they parse options, call the library and print).
"""

from __future__ import annotations

import ast
from pathlib import Path

import shiftwise

ROOT = Path(shiftwise.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """``{module: shiftwise modules it imports}`` from the source, without importing it."""
    modules = {_module_name(path): path for path in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            edges.update(t for t in targets if t in modules and t != name)
        graph[name] = edges
    return graph


LAYERS: tuple[tuple[str, ...], ...] = (
    (
        "shiftwise.errors",
        "shiftwise.version",
        "shiftwise.deprecation",
        "shiftwise.options",
        "shiftwise.devices",
    ),
    ("shiftwise.io",),
    ("shiftwise.ops",),
    ("shiftwise.layers",),
    ("shiftwise.models",),
    ("shiftwise.sparse",),
    ("shiftwise.data",),
    ("shiftwise.analysis",),
    ("shiftwise.deploy",),
    ("shiftwise.benchmarking",),
    ("shiftwise.training",),
    ("shiftwise.study",),
    ("shiftwise",),  # the package itself: its public names
    ("shiftwise.tools",),
    ("shiftwise.cli",),
)
"""The layers, lowest first; a module belongs to the layer of its longest listed prefix."""


def layer_of(module: str) -> int:
    """Index in :data:`LAYERS` of ``module`` (a package or module name)."""
    best, found = -1, None
    for index, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best:
                best, found = len(name), index
    if found is None:
        raise AssertionError(f"{module} is in no layer of LAYERS")
    return found


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """``(importer, imported)`` pairs where a module imports one of a higher layer."""
    return sorted(
        (module, target)
        for module, targets in graph.items()
        for target in targets
        if layer_of(target) > layer_of(module)
    )


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes (first repeated at the end), or ``None``."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_find_cycle_sees_a_cycle_hidden_in_a_function_level_import():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_graph_reads_function_level_and_type_checking_imports():
    graph = import_graph()
    assert "shiftwise.layers.interface" in graph["shiftwise.layers.shiftwise_conv"]
    assert "shiftwise.data" in graph["shiftwise.analysis.erf"]  # inside iter_images
    assert "shiftwise.models.weights" in graph["shiftwise.study.runner"]  # inside _run_record


def test_upward_imports_sees_a_function_level_import_of_a_higher_layer():
    graph = {
        "shiftwise.models.a": {"shiftwise.layers.b"},
        "shiftwise.layers.b": {"shiftwise.tools.c"},  # e.g. inside a function
        "shiftwise.tools.c": set(),
    }
    assert upward_imports(graph) == [("shiftwise.layers.b", "shiftwise.tools.c")]
    assert layer_of("shiftwise") < layer_of("shiftwise.tools") < layer_of("shiftwise.cli")
    assert layer_of("shiftwise.analysis.timing") < layer_of("shiftwise.deploy.export")


def test_every_module_is_in_a_layer():
    for module in import_graph():
        layer_of(module)


def test_no_module_imports_a_higher_layer():
    assert upward_imports(import_graph()) == []


def test_package_has_no_import_cycle():
    assert find_cycle(import_graph()) is None
