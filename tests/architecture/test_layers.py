"""(b) No import cycle (function-level imports count); (c) the layers import downwards
only, and pure cores reach neither Flask nor a driver (ARCHITECTURE.md)."""

from __future__ import annotations

import sys

import pytest

from tests.architecture.scan import (
    NOT_IN_PURE_CORES,
    PENDING_LAYERING,
    PURE_CORES,
    ROOT,
    imports,
    internal_graph,
    layer,
    modules,
)

# --- (b) cycles ---------------------------------------------------------------------


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_the_package() -> None:
    assert cycles(internal_graph()) == []


# --- (c) layers ---------------------------------------------------------------------


def test_each_module_imports_only_its_own_layer_or_lower() -> None:
    upward = []
    for name, path in modules().items():
        for target, line in imports(path):
            if target in modules() and layer(target) > layer(name):
                upward.append(f"{path.relative_to(ROOT)}:{line} ({layer(name)}) imports "
                              f"{target} ({layer(target)})")
    assert upward == []


def test_a_surface_imports_no_other_patterns_surface() -> None:
    crossing = []
    for name, path in modules().items():
        if layer(name) != 3:
            continue
        for target, line in imports(path):
            if target in modules() and layer(target) == 3 and (name, target) not in PENDING_LAYERING \
                    and target.rsplit(".", 1)[0] != name.rsplit(".", 1)[0]:
                crossing.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert crossing == []


def test_adapters_import_no_flask_and_nothing_of_flaskstream_but_adapters() -> None:
    bad = []
    for name, path in modules().items():
        if layer(name) != 1:
            continue
        for target, line in imports(path):
            if target.split(".")[0] == "flask" or (
                    target.startswith("flaskstream") and not target.startswith("flaskstream.adapters")):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert bad == []


@pytest.mark.parametrize("core", sorted(PURE_CORES))
def test_a_pure_core_reaches_neither_flask_nor_a_driver(core: str) -> None:
    assert core in modules(), f"{core} is listed as a pure core but does not exist"
    graph, seen, todo = internal_graph(), {core}, [core]
    while todo:
        for target in graph[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    reached = {f"{m} imports {t}" for m in seen for t, _ in imports(modules()[m])
               if t.split(".")[0] in NOT_IN_PURE_CORES}
    assert reached == set()
    assert all(layer(m) <= 1 for m in seen), sorted(seen)


def test_architecture_md_lists_the_same_pure_cores() -> None:
    row = next(line for line in (ROOT / "ARCHITECTURE.md").read_text().splitlines()
               if line.startswith("| 0 pure cores"))
    listed = {"flaskstream." + cell.strip("`").removesuffix(".py").replace("/", ".")
              for cell in row.split("|")[2].replace(",", " ").split()}
    assert listed == PURE_CORES
