"""What the architecture tests read: ``flaskstream/``'s modules, their imports and layers.

The rules themselves (ARCHITECTURE.md) are the ``test_*`` modules beside this one.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
PACKAGE = ROOT / "flaskstream"
DEPENDENCIES = ("gunicorn", "pg8000", "pgserver", "werkzeug")

# uploads/views.py serves upload content through media.views.serve_file (a blueprint
# reaching into another pattern's blueprint); moves with plan_response to media/files.py.
PENDING_LAYERING = {("flaskstream.uploads.views", "flaskstream.media.views")}
# Underscored but public: Flask documents ``current_app._get_current_object()`` as the way
# to hand the real app to another thread ("Notes On Proxies" in Flask's docs).
DOCUMENTED_PUBLIC = {"_get_current_object"}

# Take bytes/iterators, do protocol logic; no Flask, no driver, no server.
PURE_CORES = {
    "flaskstream.events.encode", "flaskstream.events.streams", "flaskstream.events.tokens",
    "flaskstream.media.ranges",
    "flaskstream.uploads.names", "flaskstream.uploads.multipart", "flaskstream.uploads.decoder",
    "flaskstream.etl.pipeline", "flaskstream.etl.tables", "flaskstream.etl.logs",
    "flaskstream.etl.bounds", "flaskstream.etl.source", "flaskstream.etl.csvsafe",
    "flaskstream.etl.pgtypes", "flaskstream.etl.pgcheck", "flaskstream.etl.pgtime", "flaskstream.etl.mapping",
    "flaskstream.etl.anytable", "flaskstream.etl.rules", "flaskstream.etl.presets",
    "flaskstream.tus.protocol", "flaskstream.errorbase",
    "flaskstream.access.claims", "flaskstream.access.signing", "flaskstream.access.jwts",
}
NOT_IN_PURE_CORES = {"flask", "pg8000", "pgserver", "gunicorn", "gevent", "psycopg", "psycopg2"}
APP = "flaskstream"


def layer(module: str) -> int:
    """0 pure core · 1 adapter · 2 I/O half · 3 HTTP/CLI surface · 4 the app."""
    if module in PURE_CORES:
        return 0
    if module.startswith("flaskstream.adapters"):
        return 1
    if module == APP:
        return 4
    last = module.rsplit(".", 1)[-1]
    if last in {"views", "cli", "fastpath"} or module == "flaskstream.core":
        return 3
    return 2


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


@cache
def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def imports(path: Path) -> list[tuple[str, int]]:
    """Every module ``path`` imports (anywhere, function bodies included), with its line."""
    found: list[tuple[str, int]] = []
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    for node in ast.walk(tree(path)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.append((submodule if submodule in modules() else base, node.lineno))
    return found


def internal_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in modules()}
    for name, path in modules().items():
        for target, _ in imports(path):
            if target in modules() and target != name:
                graph[name].add(target)
    return graph
