"""(a) No module outside ``flaskstream/adapters/`` uses a private name of gunicorn,
pg8000, pgserver or werkzeug (ARCHITECTURE.md)."""

from __future__ import annotations

import ast
import importlib.util
from functools import cache
from pathlib import Path

from tests.architecture.scan import (
    DEPENDENCIES,
    DOCUMENTED_PUBLIC,
    ROOT,
    modules,
    tree,
)

# --- (a) private names -------------------------------------------------------------


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.submodule_search_locations, name
    return Path(next(iter(spec.submodule_search_locations)))


@cache
def dependency_private_names() -> frozenset[str]:
    """Every ``_name`` the dependencies define: attributes they assign, functions,
    classes and module globals (dunders excluded)."""
    names: set[str] = set()
    for dependency in DEPENDENCIES:
        for source in _package_dir(dependency).rglob("*.py"):
            for node in ast.walk(ast.parse(source.read_bytes())):
                if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                    names.add(node.attr)
                elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    names.add(node.name)
                elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    names.add(node.id)
    return frozenset(n for n in names if _private(n) and n not in DOCUMENTED_PUBLIC)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _is_dependency(module: str) -> bool:
    return module.split(".")[0] in DEPENDENCIES


def _bound_names(module: ast.Module, ours: bool) -> set[str]:
    """Names this module binds by importing from a dependency (or, ``ours``, from flaskstream)."""
    def wanted(name: str) -> bool:
        return name.split(".")[0] == "flaskstream" if ours else _is_dependency(name)

    bound: set[str] = set()
    for node in ast.walk(module):
        if isinstance(node, ast.Import):
            bound |= {(a.asname or a.name).split(".")[0] for a in node.names if wanted(a.name)}
        elif isinstance(node, ast.ImportFrom) and (node.level or wanted(node.module or "")):
            if ours or not node.level:
                bound |= {a.asname or a.name for a in node.names}
    return bound


def _root(node: ast.expr) -> str | None:
    while isinstance(node, ast.Attribute | ast.Call | ast.Subscript):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def private_uses(path: Path) -> list[str]:
    """``line: what`` for each use of a dependency's private name in ``path``."""
    module, theirs = tree(path), dependency_private_names()
    bound, own = _bound_names(module, ours=False), _bound_names(module, ours=True)
    found: list[str] = []
    for node in ast.walk(module):
        if isinstance(node, ast.ImportFrom) and not node.level and _is_dependency(node.module or ""):
            names = (node.module or "").split(".") + [a.name for a in node.names]
            if any(map(_private, names)):
                found.append(f"{node.lineno}: from {node.module} import "
                             + ", ".join(a.name for a in node.names))
        elif isinstance(node, ast.Import):
            found += [f"{node.lineno}: import {a.name}" for a in node.names
                      if _is_dependency(a.name) and any(map(_private, a.name.split(".")))]
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            root = _root(node.value)
            if root in bound or (node.attr in theirs and root not in own | {"self", "cls"}):
                found.append(f"{node.lineno}: .{node.attr}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in {"getattr", "setattr", "hasattr", "delattr"} \
                and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) \
                and isinstance(node.args[1].value, str) and node.args[1].value in theirs:
            found.append(f"{node.lineno}: {node.func.id}(..., {node.args[1].value!r})")
        elif isinstance(node, ast.ClassDef) and any(_root(b) in bound for b in node.bases):
            found += [f"{item.lineno}: overrides {node.name}.{item.name}" for item in node.body
                      if isinstance(item, ast.FunctionDef) and item.name in theirs]
    return found


def test_the_private_name_scan_sees_the_uses_it_must_forbid(tmp_path: Path) -> None:
    """The rule would catch each kind of use that used to be spread over the package."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from pgserver._commands import pg_ctl\n"
        "from gunicorn.http.body import Body\n"
        "from werkzeug.sansio.multipart import MultipartDecoder\n"
        "import pgserver\n"
        "x = pgserver.PostgresServer._instances\n"
        "def f(con, sock):\n"
        "    return con._usock, sock._sock, getattr(con, '_transaction_status', None)\n"
        "class D(MultipartDecoder):\n"
        "    def _parse_data(self, data, *, start):\n"
        "        return Body, self._dash_boundary\n"
        "from flaskstream.tus import transfer\n"
        "class Ours:\n"
        "    def __init__(self, other):\n"
        "        self._lock = other._budget, transfer._connect\n"
    )
    assert sorted(private_uses(sample)) == sorted([
        "1: from pgserver._commands import pg_ctl", "5: ._instances", "7: ._usock", "7: ._sock",
        "7: getattr(..., '_transaction_status')", "9: overrides D._parse_data"])
    # self._dash_boundary inside the subclass is werkzeug's too, but its override is what
    # is reported; our own private names (self._lock, other._budget, transfer._connect) are not.


def test_no_private_name_of_a_dependency_outside_the_adapters() -> None:
    offenders = {}
    for name, path in modules().items():
        relative = str(path.relative_to(ROOT))
        if name.startswith("flaskstream.adapters"):
            continue
        if uses := private_uses(path):
            offenders[relative] = uses
    assert offenders == {}, "move these into flaskstream/adapters/ behind a capability"
