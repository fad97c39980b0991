"""StagingFile and the metadata rows: hashing, atomic finalize, all-or-nothing cleanup."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from flaskstream import db, schema
from flaskstream.uploads import storage


def listing(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def test_write_hashes_and_finalize_renames(tmp_path: Path) -> None:
    data = os.urandom(300_001)
    with storage.StagingFile.create(tmp_path) as staging:
        assert staging.path.parent == tmp_path / ".staging"
        for i in range(0, len(data), 65_536):
            staging.write(data[i:i + 65_536])
        upload_id = storage.new_upload_id()
        final = staging.finalize(upload_id)
    assert staging.sha256 == hashlib.sha256(data).hexdigest()
    assert staging.size == len(data)
    assert final == tmp_path / upload_id and final.read_bytes() == data
    assert listing(tmp_path) == [upload_id]


def test_exception_discards_staging(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), storage.StagingFile.create(tmp_path) as staging:
        staging.write(b"abc")
        raise RuntimeError("client went away")
    assert listing(tmp_path) == []


def test_resume_appends_and_hashes_at_finalize(tmp_path: Path) -> None:
    first = storage.StagingFile.create(tmp_path, prefix="tus-")
    first.write(b"hello ")
    first.close()
    again = storage.StagingFile.resume(tmp_path, first.name)
    assert again.size == 6
    again.write(b"world")
    final = again.finalize(storage.new_upload_id())
    assert again.sha256 == hashlib.sha256(b"hello world").hexdigest()
    assert final.read_bytes() == b"hello world"


def test_sweep_removes_only_old_files_with_prefix(tmp_path: Path) -> None:
    old = storage.StagingFile.create(tmp_path)
    old.close()
    os.utime(old.path, (1, 1))
    other = storage.StagingFile.create(tmp_path, prefix="tus-")
    other.close()
    os.utime(other.path, (1, 1))
    fresh = storage.StagingFile.create(tmp_path)
    assert storage.sweep_staging(tmp_path, older_than=3600) == 1
    assert not old.path.exists() and other.path.exists() and fresh.path.exists()
    fresh.discard()


def test_final_path_rejects_non_ids(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        storage.final_path(tmp_path, "../etc/passwd")


def test_enospc_becomes_insufficient_storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    staging = storage.StagingFile.create(tmp_path)

    def full(fd: int, data: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(storage.InsufficientStorage):
        staging.write(b"x")
    staging.discard()
    assert listing(tmp_path) == []


@pytest.mark.db
def test_commit_staged_is_all_or_nothing(tmp_path: Path, clean_db: str) -> None:
    con = schema.attach(db.Connection(**db.connect_kwargs(clean_db)), schema.SchemaNames("flaskstream"))
    try:
        db.apply_schema(con)
        good = storage.StagingFile.create(tmp_path)
        good.write(b"one")
        dup_id = storage.new_upload_id()
        con.run("INSERT INTO flaskstream.uploads (id, filename, size, sha256, content_type) "
                "VALUES (:i, 'x', 0, '', 'a/b')", i=dup_id)
        other = storage.StagingFile.create(tmp_path)
        other.write(b"two")
        staged = [
            (good, storage.Upload(storage.new_upload_id(), "a.txt", 3, good.sha256, "text/plain")),
            (other, storage.Upload(dup_id, "b.txt", 3, other.sha256, "text/plain")),
        ]
        with pytest.raises(db.DatabaseError):
            storage.commit_staged(con, staged)
        assert listing(tmp_path) == []
        assert con.run("SELECT count(*) FROM flaskstream.uploads")[0][0] == 1

        third = storage.StagingFile.create(tmp_path)
        third.write(b"three")
        upload = storage.Upload(storage.new_upload_id(), "c.txt", 5, third.sha256, "text/plain")
        storage.commit_staged(con, [(third, upload)])
        got = storage.get_upload(con, upload.id)
        assert got is not None and got.sha256 == hashlib.sha256(b"three").hexdigest()
        assert [u.id for u in storage.list_uploads(con, 10)][0] == upload.id
        assert storage.delete_upload(con, storage.LocalStorage(tmp_path), upload.id)
        assert not storage.delete_upload(con, storage.LocalStorage(tmp_path), upload.id)
        assert listing(tmp_path) == []
    finally:
        con.close()
