"""Aborting the multipart uploads of killed workers, for the staging janitor.

A worker killed hard (SIGKILL, OOM) runs no ``discard``: its upload's parts would
stay in the bucket (and be billed) until the bucket's lifecycle rule, if any. A
live upload adds a part every ``STORAGE_PART_SIZE`` bytes, so "no new part for
``older_than`` seconds, as seen by this process" marks an orphan. The clock is
this process's own: S3-compatible servers' upload times cannot be trusted across
vendors (moto reports a fixed 2010 ``Initiated``), nor the hosts' clocks to agree
with the bucket's. So a fresh worker waits ``older_than`` before its first abort.

A tus upload's multipart upload (``s3tus.py``) is not a request's: it waits for its
client, maybe for hours, and goes with its expiry. Its key has a ``<key>.info``
marker object, and the sweeper leaves such uploads alone.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from flaskstream.storage.s3read import remote_errors

log = logging.getLogger(__name__)

TUS_MARKER = ".info"  # next to the key of a tus upload's multipart upload (s3tus.py)


class OrphanSweeper:
    """Remembers, per multipart upload under the prefix, its part count and since when."""

    def __init__(self, storage: Any) -> None:
        self.storage = storage  # the ``s3.S3Storage`` (not imported: s3.py imports this)
        self._progress: dict[str, tuple[int, float]] = {}

    def sweep(self, older_than: float) -> list[str]:
        """One pass: abort uploads whose part count stood still ``older_than`` s; their keys."""
        storage, now = self.storage, time.monotonic()
        lead = f"{storage.prefix}/" if storage.prefix else ""
        aborted: list[str] = []
        alive: set[str] = set()
        try:
            for page in storage.client.get_paginator("list_multipart_uploads").paginate(
                    Bucket=storage.bucket, Prefix=lead):
                for upload in page.get("Uploads", []):
                    key, upload_id = upload["Key"], upload["UploadId"]
                    parts = self._part_count(key, upload_id)
                    last = self._progress.get(upload_id)
                    if last is not None and last[0] == parts and now - last[1] >= older_than \
                            and not self._is_tus(key):
                        storage.client.abort_multipart_upload(Bucket=storage.bucket, Key=key,
                                                              UploadId=upload_id)
                        aborted.append(key)
                        continue
                    if last is None or last[0] != parts:
                        self._progress[upload_id] = (parts, now)
                    alive.add(upload_id)
        except remote_errors():  # the next pass tries again
            log.warning("could not sweep s3://%s/%s", storage.bucket, lead, exc_info=True)
            return aborted
        self._progress = {k: v for k, v in self._progress.items() if k in alive}
        return aborted

    def _part_count(self, key: str, upload_id: str) -> int:
        pages = self.storage.client.get_paginator("list_parts").paginate(
            Bucket=self.storage.bucket, Key=key, UploadId=upload_id)
        return sum(len(page.get("Parts", [])) for page in pages)

    def _is_tus(self, key: str) -> bool:
        try:
            self.storage.client.head_object(Bucket=self.storage.bucket, Key=key + TUS_MARKER)
        except remote_errors() as exc:
            status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get(
                "HTTPStatusCode")
            if status == 404:
                return False
            raise
        return True
