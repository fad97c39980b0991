"""(e) Every exception that can reach HTTP derives from the one error base, and none
is sorted by its message text (ARCHITECTURE.md)."""

from __future__ import annotations

import ast
import importlib.util
from functools import cache

from tests.architecture.scan import (
    ROOT,
    modules,
    tree,
)

# --- (e) one error base, never sorted by its text ----------------------------------

ERROR_BASE = ("flaskstream.errorbase", "FlaskstreamError")
# Exception classes that never become an HTTP answer, each with the reason. A new
# exception class derives from FlaskstreamError (errorbase.py) or is listed here.
NOT_ANSWERS = {
    ("flaskstream.media.ranges", "RangeNotSatisfiable"): "caught inside evaluate(): a 416 decision",
    ("flaskstream.media.stream", "FileShrunk"): "mid-body, after the headers went out: cuts it",
    ("flaskstream.storage.s3read", "ObjectShrunk"): "mid-body (a short ranged GET): cuts it",
    ("flaskstream.etl.export", "Cancelled"): "the export producer's own stop signal",
    ("flaskstream.etl.export", "ExportStalled"): "mid-body: cuts the export response",
    ("flaskstream.etl.export", "UnknownRelation"): "defined, never raised",
    ("flaskstream.uploads.decoder", "DecodeError"): "FormReader re-raises it as a MultipartError",
    ("flaskstream.etl.tables", "Invalid"): "one row's reject reason, never a whole answer",
    ("flaskstream.etl.pgtypes", "UnsupportedType"): "catalog.py: a column loaded unvalidated",
}
PENDING_ERROR_BASE: set[tuple[str, str]] = set()  # empty since JobExists is a FixedError (JOB_EXISTS, 409)

Ref = tuple[str, str]  # (module, name)


@cache
def _names(module: str) -> dict[str, Ref]:
    """What each top-level name of ``module`` refers to: its own classes, what it imports."""
    refs: dict[str, Ref] = {}
    for node in tree(modules()[module]).body:
        if isinstance(node, ast.ClassDef):
            refs[node.name] = (module, node.name)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                target = f"{node.module}.{alias.name}"
                refs[alias.asname or alias.name] = (target, "") if target in modules() \
                    else (node.module, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                refs[alias.asname or alias.name.split(".")[0]] = (alias.name, "")
    return refs


def _resolve(module: str, expr: ast.expr) -> Ref | None:
    """The class ``expr`` (a base in ``module``) names, re-exports followed."""
    if isinstance(expr, ast.Name):
        ref = _names(module).get(expr.id, ("builtins", expr.id))
    elif isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name):
        owner = _names(module).get(expr.value.id)
        if owner is None or owner[1]:
            return None
        ref = (owner[0], expr.attr)
    else:
        return None
    while ref[0] in modules() and ref not in _classes():
        follow = _names(ref[0]).get(ref[1])
        if follow is None or follow == ref:
            return None
        ref = follow
    return ref


@cache
def _classes() -> dict[Ref, ast.ClassDef]:
    return {(name, node.name): node for name, path in modules().items()
            for node in ast.walk(tree(path)) if isinstance(node, ast.ClassDef)}


def _ancestors(ref: Ref) -> set[Ref]:
    """Every class ``ref`` derives from (ours by ast, others' by importing them)."""
    seen: set[Ref] = set()
    todo = [ref]
    while todo:
        current = todo.pop()
        if current in _classes():
            for base in _classes()[current].bases:
                target = _resolve(current[0], base)
                if target is not None and target not in seen:
                    seen.add(target)
                    todo.append(target)
        else:
            try:
                obj = getattr(importlib.import_module(current[0]), current[1])
            except (ImportError, AttributeError):
                continue
            if isinstance(obj, type):
                seen |= {(k.__module__, k.__name__) for k in obj.__mro__[1:]}
    return seen


def exception_classes() -> dict[Ref, set[Ref]]:
    """Every exception class defined in flaskstream/, with its ancestors."""
    found = {}
    for ref in _classes():
        ancestors = _ancestors(ref)
        if ("builtins", "BaseException") in ancestors:
            found[ref] = ancestors
    return found


def test_every_exception_that_can_reach_http_derives_from_the_error_base() -> None:
    outside = {ref for ref, ancestors in exception_classes().items()
               if ERROR_BASE not in ancestors and ref != ERROR_BASE}
    assert outside - set(NOT_ANSWERS) - PENDING_ERROR_BASE == set(), \
        "derive these from FlaskstreamError, or list them in NOT_ANSWERS with the reason"


def test_the_error_base_exemptions_are_still_needed() -> None:
    classes = exception_classes()
    for ref in {*NOT_ANSWERS, *PENDING_ERROR_BASE}:
        assert ref in classes, f"{ref} is no longer an exception class of flaskstream"
        assert ERROR_BASE not in classes[ref], f"{ref} derives from the base now: unlist it"


def test_the_base_scan_follows_aliases_and_re_exports() -> None:
    classes = exception_classes()
    for ref in [("flaskstream.errors", "ApiError"), ("flaskstream.tus.receive", "TakenOver"),
                ("flaskstream.storage.base", "InsufficientStorage"),
                ("flaskstream.db", "DatabaseUnavailable"), ("flaskstream.etl.catalog", "NoSuchTable")]:
        assert ERROR_BASE in classes[ref], ref
    assert ("builtins", "OSError") in classes[("flaskstream.storage.base", "InsufficientStorage")]
    assert ("pg8000.exceptions", "InterfaceError") in classes[("flaskstream.db", "DatabaseUnavailable")]


EXCEPTION_PARAMS = {"exc", "error", "err", "e"}
TEXT_ATTRIBUTES = {"message", "strerror", "msg", "description"}
TEXT_TESTS = {"startswith", "endswith", "find", "rfind", "index", "count", "__contains__"}
PATTERN_TESTS = {"match", "search", "fullmatch", "findall", "finditer"}


def _exception_names(function: ast.AST) -> set[str]:
    names = {n.name for n in ast.walk(function) if isinstance(n, ast.ExceptHandler) and n.name}
    if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
        for arg in function.args.args + function.args.kwonlyargs:
            annotation = ast.unparse(arg.annotation) if arg.annotation else ""
            if arg.arg in EXCEPTION_PARAMS or annotation.endswith(("Error", "Exception")):
                names.add(arg.arg)
    return names


def _is_text(node: ast.AST, excs: set[str], tainted: set[str]) -> bool:
    """Does ``node`` hold an exception's text (``str(exc)``, ``exc.message``, ``f"{exc}"``)?"""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and sub.id in tainted:
            return True
        if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) \
                and sub.func.id in {"str", "repr", "format"} and sub.args \
                and isinstance(sub.args[0], ast.Name) and sub.args[0].id in excs:
            return True
        if isinstance(sub, ast.Attribute) and sub.attr in TEXT_ATTRIBUTES \
                and isinstance(sub.value, ast.Name) and sub.value.id in excs:
            return True
        if isinstance(sub, ast.FormattedValue) and isinstance(sub.value, ast.Name) \
                and sub.value.id in excs:
            return True
        if isinstance(sub, ast.Subscript) and isinstance(sub.slice, ast.Constant) \
                and sub.slice.value in TEXT_ATTRIBUTES:  # an error reported as a dict
            return True
        if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute) \
                and sub.func.attr == "get" and sub.args and isinstance(sub.args[0], ast.Constant) \
                and sub.args[0].value in TEXT_ATTRIBUTES:
            return True
    return False


def message_tests(module: ast.Module) -> list[str]:
    """``line: code`` for each test of an exception's message text in ``module``."""
    found: list[str] = []
    for function in ast.walk(module):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        excs, tainted = _exception_names(function), set()
        for node in ast.walk(function):  # names holding the text: message = str(exc)
            if isinstance(node, ast.Assign) and _is_text(node.value, excs, tainted):
                tainted |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        for node in ast.walk(function):
            if isinstance(node, ast.Compare) and any(
                    isinstance(op, ast.In | ast.NotIn | ast.Eq | ast.NotEq) for op in node.ops) \
                    and any(_is_text(part, excs, tainted) for part in [node.left, *node.comparators]):
                found.append(f"{node.lineno}: {ast.unparse(node)}")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and (
                    node.func.attr in TEXT_TESTS and _is_text(node.func.value, excs, tainted)
                    or node.func.attr in PATTERN_TESTS
                    and any(_is_text(arg, excs, tainted) for arg in node.args)):
                found.append(f"{node.lineno}: {ast.unparse(node)}")
    return sorted(set(found))


def test_the_message_scan_sees_each_way_of_sorting_errors_by_text() -> None:
    sample = ast.parse(
        "def run(load):\n"
        "    try:\n"
        "        load()\n"
        "    except Exception as exc:\n"
        "        message = str(exc)\n"
        "        if 'disconnect' in message:\n"              # etl/views.py before issue 13
        "            return 400\n"
        "        if exc.message.startswith('LIMIT'):\n"
        "            return 413\n"
        "        if re.search('timeout', f'{exc}'):\n"
        "            return 408\n"
        "        if str(exc) == 'gone':\n"
        "            return 410\n"
        "def code(exc: BaseException):\n"
        "    return 'full' in repr(exc)\n"
        "def summary(result):\n"
        "    message = result['error']['message'].lower()\n"  # etl/views.py before issue 13
        "    return message.startswith('body larger than')\n"
        "def fine(exc, fields):\n"
        "    return exc.code == 'X' or 'W' in fields or isinstance(exc, OSError)\n")
    assert [line.split(":")[0] for line in message_tests(sample)] == [
        "10", "12", "15", "18", "6", "8"]


def test_no_error_is_classified_by_its_message_text() -> None:
    offenders = {str(path.relative_to(ROOT)): found for path in modules().values()
                 if (found := message_tests(tree(path)))}
    assert offenders == {}, "raise an error that carries its code; test the class or the code"
