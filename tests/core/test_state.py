"""Per-process state lives in ``app.extensions["flaskstream"]`` (issue 13), not in module
globals: two apps in one process (tests make many) never share counters or greenlets."""

from __future__ import annotations

from pathlib import Path

from flask import Flask

from flaskstream import create_app, state
from flaskstream.tus import receive as tus_receive
from flaskstream.uploads.receive import ChunkBudget

MiB = 1 << 20


def make_app(tmp_path: Path, name: str) -> Flask:
    return create_app({"TESTING": True, "INSTANCE_PATH": str(tmp_path / name),
                       "UPLOAD_DIR": str(tmp_path / name / "uploads"),
                       "DATABASE_URL": "postgresql://nobody@/none?host=/nonexistent"})


def test_each_app_has_its_own_state_object(tmp_path: Path) -> None:
    first, second = make_app(tmp_path, "a"), make_app(tmp_path, "b")
    assert isinstance(first.extensions["flaskstream"], state.ProcessState)
    assert state.get(first) is not state.get(second)
    with first.app_context():
        assert state.get() is state.get(first)


def test_the_read_budget_is_shared_among_one_apps_uploads_only(tmp_path: Path) -> None:
    first, second = make_app(tmp_path, "a"), make_app(tmp_path, "b")
    with ChunkBudget(state.get(first), 4 * MiB, 4 * MiB) as one, \
            ChunkBudget(state.get(first), 4 * MiB, 4 * MiB) as two:
        alone = ChunkBudget(state.get(second), 4 * MiB, 4 * MiB)
        with alone:
            assert one.size() == two.size() == 2 * MiB  # two uploads share app a's budget
            assert alone.size() == 4 * MiB  # app b's upload is not squeezed by them
    assert state.get(first).uploads_in_flight == state.get(second).uploads_in_flight == 0


def test_lease_renewers_are_kept_per_registry() -> None:
    registry: dict = {}
    other: dict = {}

    def connect() -> None: ...

    renewer = tus_receive.LeaseRenewer.for_(registry, connect, 5.0, 1.0)
    assert tus_receive.LeaseRenewer.for_(registry, connect, 5.0, 1.0) is renewer
    assert tus_receive.LeaseRenewer.for_(other, connect, 5.0, 1.0) is not renewer
    assert not hasattr(tus_receive.LeaseRenewer, "_instances")  # no class-level registry


def test_dict_style_access_reaches_the_same_fields(tmp_path: Path) -> None:
    app = make_app(tmp_path, "a")
    app.extensions.setdefault("flaskstream", {})["storage"] = marker = object()
    assert state.get(app).storage is marker and app.extensions["flaskstream"]["storage"] is marker
