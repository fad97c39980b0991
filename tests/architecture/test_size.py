"""(d) No module over 400 lines; (f) no function over 60 lines outside the pure cores;
(g) per-process state lives in app.extensions["flaskstream"] (ARCHITECTURE.md)."""

from __future__ import annotations

import ast

from tests.architecture.scan import (
    ROOT,
    layer,
    modules,
    tree,
)

# --- (d) size -----------------------------------------------------------------------


def test_no_module_over_400_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for p in modules().values()
            if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


# --- (f) orchestration that reads top to bottom ------------------------------------

MAX_FUNCTION_LINES = 60


def long_functions() -> dict[str, int]:
    """``path:function`` → lines, for functions over the limit outside the pure cores."""
    found = {}
    for name, path in modules().items():
        if layer(name) == 0:
            continue
        for node in ast.walk(tree(path)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    found[f"{path.relative_to(ROOT)}:{node.name}"] = lines
    return found


def test_no_function_over_60_lines_outside_the_pure_cores() -> None:
    assert long_functions() == {}, \
        "split these into named steps (a small class, or helpers that say what each does)"


# --- (g) per-process state in app.extensions["flaskstream"] -------------------------

# Process-wide by nature, so module globals on purpose (see flaskstream/state.py).
PROCESS_GLOBALS = {
    "flaskstream/etl/pacing.py": "the garbage collector's thresholds are the process's",
    "flaskstream/embedded.py": "who owns the embedded server is decided once per process",
    "flaskstream/adapters/registry.py": "capability checks are of the installed libraries, and "
                                        "run in the gunicorn master too, where there is no app",
}


def test_no_module_global_is_rebound_outside_the_process_wide_ones() -> None:
    rebinding = {str(path.relative_to(ROOT)) for path in modules().values()
                 if any(isinstance(node, ast.Global) for node in ast.walk(tree(path)))}
    assert rebinding - set(PROCESS_GLOBALS) == set(), \
        "keep per-app state in flaskstream.state.ProcessState (app.extensions['flaskstream'])"
    assert set(PROCESS_GLOBALS) <= rebinding, "an exemption is no longer needed: remove it"
