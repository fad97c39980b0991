"""The S3-compatible backend (AWS S3, R2, MinIO, Ceph; moto in the tests), through boto3.

``FLASKSTREAM_STORAGE_URL=s3://bucket/prefix?endpoint_url=...&region=...``;
credentials come from boto3's standard chain (environment, config files,
instance roles) and never from the URL.

Writes stream into the bucket as they arrive (``S3Upload``): bytes collect into
one part of ``STORAGE_PART_SIZE`` (S3's minimum is 5 MiB), each full part goes
out as an ``UploadPart`` of a multipart upload while the next one fills, with
at most ``STORAGE_PARTS_IN_FLIGHT`` parts on the wire per upload, so an
upload's memory is about part size x (in flight + 1) whatever its length.
Each part carries its own ``x-amz-checksum-sha256`` (S3 verifies it); the
object's SHA-256 is computed on the way and stored in the ``uploads`` row. The
multipart upload is completed only in ``finalize`` — once the body is whole and
valid — and aborted by ``discard`` on any failure, limit or client abort, so
nothing is left in the bucket (a worker killed hard runs no ``discard``: the
bucket's ``AbortIncompleteMultipartUpload`` lifecycle rule is the backstop). A
body smaller than one part is one ``PutObject`` whose checksum is the SHA-256.

Why not boto3's ``upload_fileobj``: it reads from a file-like object in its own
threads and has no hook to stop and abort on our limits half-way, nor to hand us
the SHA-256 of what it sent; and ``create_multipart_upload``/``upload_part`` are
the documented low-level calls it uses itself.

Reads: ``stat`` is a HEAD cached for ``STORAGE_STAT_CACHE_SECONDS`` (object keys
are upload ids, never rewritten, so a short cache is safe); a range is one
ranged GET streamed through in chunks.

gevent: under gunicorn's gevent worker the sockets urllib3 opens are patched, so
every S3 call yields to other greenlets; parts go out on greenlets. Elsewhere
(the Flask test client, the CLI) parts go out on a small thread pool.
"""

from __future__ import annotations

import base64
import collections
import functools
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from flaskstream.storage.base import (
    ObjectInfo,
    StorageUnavailable,
    gevent_threadpool,
    run_blocking,
)
from flaskstream.storage.s3jobs import PartBudget, PartJob
from flaskstream.storage.s3read import SIGNED_URL_EXPIRES, S3Object, SignedReads, remote_errors
from flaskstream.storage.s3sweep import OrphanSweeper
from flaskstream.uploads.records import is_upload_id, new_upload_id

log = logging.getLogger(__name__)

MIN_PART_SIZE = 5 * 1024 * 1024  # S3's minimum for every part but the last
STAT_CACHE_MAX = 4096
ADOPT_READ = 1 << 20
POOL_CONNECTIONS = 64  # per worker and pool: ~parts in flight x uploads, and reads, at once


def _b64_sha256(data: bytes | bytearray) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def _not_found(exc: BaseException) -> bool:
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status == 404 or code in ("404", "NoSuchKey", "NotFound")


class S3Storage:
    """``base.Storage`` on one bucket and key prefix."""

    kind = "s3"

    def __init__(self, client: Any, bucket: str, prefix: str = "", *,
                 part_size: int = 8 * 1024 * 1024, parts_in_flight: int = 2,
                 stat_ttl: float = 5.0, presign_seconds: int = 300,
                 buffer_budget: int = 48 * 1024 * 1024,
                 key_check: Callable[[str], bool] = is_upload_id,
                 part_client: Any | None = None) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"STORAGE_PART_SIZE must be at least {MIN_PART_SIZE} (S3's minimum)")
        self.client = client
        # The client of the calls whose body is bound by a signed x-amz-checksum-sha256
        # (upload_part, put_object): see ``from_url``.
        self.part_client = part_client or client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.part_size = int(part_size)
        self.parts_in_flight = max(1, int(parts_in_flight))
        # Which keys this store holds: upload ids, or (MEDIA_URL) visible relative paths.
        self.key_check = key_check
        self.budget = PartBudget(int(buffer_budget) // self.part_size, self.part_size)
        self.stat_ttl = float(stat_ttl)
        self.presign_seconds = int(presign_seconds)
        self._stats: dict[str, tuple[float, ObjectInfo]] = {}
        self._sweeper = OrphanSweeper(self)
        self._threads: ThreadPoolExecutor | None = None
        self.reads = SignedReads(self._sign_get, POOL_CONNECTIONS)

    @classmethod
    def from_url(cls, url: str, config: Any,
                 key_check: Callable[[str], bool] = is_upload_id) -> S3Storage:
        """``s3://bucket/prefix?endpoint_url=...&region=...`` plus the ``STORAGE_*`` settings."""
        import boto3
        from botocore.config import Config

        parts = urlsplit(url)
        if not parts.netloc:
            raise ValueError("STORAGE_URL: s3:// needs a bucket (s3://bucket/prefix)")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        endpoint = query.get("endpoint_url")
        session = boto3.session.Session()  # one session: the two clients share its models

        def client(**s3: Any) -> Any:
            return session.client(
                "s3", endpoint_url=endpoint, region_name=query.get("region"),
                config=Config(retries={"mode": "standard"}, max_pool_connections=POOL_CONNECTIONS,
                              s3={**({"addressing_style": "path"} if endpoint else {}), **s3}))

        # Parts and small objects carry our x-amz-checksum-sha256, a signed header S3 checks
        # against the body, yet botocore hashes every byte again for SigV4's payload hash
        # (whenever the caller gives the checksum, even over HTTPS), on the event loop:
        # UNSIGNED-PAYLOAD on that client only; complete/abort/delete/list stay signed.
        return cls(client(), parts.netloc, parts.path, part_size=config["STORAGE_PART_SIZE"],
                   parts_in_flight=config["STORAGE_PARTS_IN_FLIGHT"],
                   stat_ttl=config["STORAGE_STAT_CACHE_SECONDS"],
                   presign_seconds=config["STORAGE_PRESIGN_SECONDS"],
                   buffer_budget=config["STORAGE_BUFFER_BUDGET"], key_check=key_check,
                   part_client=client(payload_signing_enabled=False))

    def object_key(self, key: str) -> str:
        if not self.key_check(key):
            raise ValueError(f"not a key of this store: {key!r}")
        return f"{self.prefix}/{key}" if self.prefix else key

    def spawn(self, buffer: bytearray, func: Callable[..., Any], *args: Any) -> PartJob:
        """Run ``func`` as a part upload that owns ``buffer`` (a ``budget`` buffer)."""
        release = functools.partial(self.budget.release, buffer)
        if gevent_threadpool() is not None:
            import gevent

            return PartJob(gevent.spawn, release, func, *args)
        if self._threads is None:
            self._threads = ThreadPoolExecutor(max_workers=16, thread_name_prefix="s3-part")
        return PartJob(self._threads.submit, release, func, *args)

    def call(self, method: str, client: Any = None, **kwargs: Any) -> Any:
        """One S3 call; a failure of the service or the network becomes ``StorageUnavailable``."""
        try:
            return getattr(client or self.client, method)(Bucket=self.bucket, **kwargs)
        except remote_errors() as exc:
            raise StorageUnavailable(f"object storage: {method} failed") from exc

    # --- writes ---------------------------------------------------------------------

    def stage(self, prefix: str = "up-") -> S3Upload:
        return S3Upload(self, new_upload_id())

    def adopt(self, path: Path, key: str) -> None:
        """Upload a finished local file (a tus staging file) as ``key``, then remove it."""
        upload = S3Upload(self, key)
        try:
            with open(path, "rb", buffering=0) as f:
                while chunk := f.read(ADOPT_READ):
                    upload.write(chunk)
            upload.finalize(key)
        except BaseException:
            upload.discard()
            raise
        os.unlink(path)

    # --- reads ----------------------------------------------------------------------

    def local_path(self, key: str) -> Path | None:
        return None

    def stat(self, key: str) -> ObjectInfo | None:
        now = time.monotonic()
        cached = self._stats.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        except remote_errors() as exc:
            if _not_found(exc):
                self._stats.pop(key, None)
                return None
            raise StorageUnavailable("object storage: head_object failed") from exc
        info = ObjectInfo(int(head["ContentLength"]), str(head["ETag"]),
                          int(head["LastModified"].timestamp()))
        if len(self._stats) >= STAT_CACHE_MAX:
            self._stats.clear()
        self._stats[key] = (now + self.stat_ttl, info)
        return info

    def open(self, key: str) -> S3Object | None:
        info = self.stat(key)
        return None if info is None else S3Object(self, key, info)

    def _sign_get(self, object_key: str) -> str:
        """A presigned GET of ``object_key`` for ``reads`` (ranged reads in this worker)."""
        return str(self.client.generate_presigned_url(
            "get_object", ExpiresIn=SIGNED_URL_EXPIRES,
            Params={"Bucket": self.bucket, "Key": object_key}))

    def presigned_url(self, key: str, content_type: str, disposition: str) -> str:
        return str(self.client.generate_presigned_url(
            "get_object", ExpiresIn=self.presign_seconds,
            Params={"Bucket": self.bucket, "Key": self.object_key(key),
                    "ResponseContentType": content_type,
                    "ResponseContentDisposition": disposition}))

    def delete(self, key: str) -> bool:
        existed = self.stat(key) is not None
        self._stats.pop(key, None)
        self.call("delete_object", Key=self.object_key(key))
        return existed

    def keys(self) -> Iterator[str]:
        for key, _ in self.listing():
            yield key

    def listing(self) -> Iterator[tuple[str, int]]:
        """``(key, size)`` of every object under the prefix this store would serve."""
        lead = f"{self.prefix}/" if self.prefix else ""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=lead)
        try:
            for page in pages:
                for item in page.get("Contents", []):
                    name = item["Key"][len(lead):]
                    if self.key_check(name):
                        yield name, int(item["Size"])
        except remote_errors() as exc:
            raise StorageUnavailable("object storage: list_objects_v2 failed") from exc

    def sweep(self, older_than: float) -> list[str]:
        """Abort the multipart uploads of killed workers (``s3sweep.OrphanSweeper``)."""
        return self._sweeper.sweep(older_than)

    def setup(self) -> None:
        """Nothing to prepare: no network call at start-up (the bucket may come later)."""


class S3Upload:
    """One object streaming into the bucket (``base.StagedObject``)."""

    def __init__(self, storage: S3Storage, key: str) -> None:
        self.storage = storage
        self.key = key
        self.size = 0
        self._hasher = hashlib.sha256()
        # The part being filled: allocated full-size once, handed to its upload as is
        # (no copy), and a new one allocated only after a slot is free, so at most
        # parts_in_flight + 1 parts exist per upload.
        self._part: bytearray | None = None
        self._filled = 0
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._jobs: collections.deque[PartJob] = collections.deque()
        self._state = "open"  # → "done" (finalized) or "gone" (discarded)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._state != "open":
            raise ValueError("staged object is closed")
        self._hasher.update(data)
        self.size += len(data)
        part_size = self.storage.part_size
        view = memoryview(data).cast("B")
        while view:
            if self._part is None:
                self._part, self._filled = self.storage.budget.acquire(), 0  # back: by its part
            n = min(len(view), part_size - self._filled)
            self._part[self._filled:self._filled + n] = view[:n]
            self._filled += n
            view = view[n:]
            if self._filled == part_size:
                part, self._part = self._part, None
                self._send(part)

    def _rest(self) -> bytearray:
        """The part being filled, cut to what it holds (in place: no second copy)."""
        part, self._part = self._part or bytearray(), None
        del part[self._filled:]
        return part

    @property
    def sha256(self) -> str:
        return self._hasher.hexdigest()

    def _send(self, part: bytearray) -> None:
        """Start one part (it takes over the buffer's budget slot); first wait for the
        oldest if as many as allowed are out."""
        try:
            if self._upload_id is None:
                created = self.storage.call("create_multipart_upload",
                                            ChecksumAlgorithm="SHA256",
                                            Key=self.storage.object_key(self.key))
                self._upload_id = str(created["UploadId"])
            while len(self._jobs) >= self.storage.parts_in_flight:
                self._parts.append(self._jobs.popleft().result())
        except BaseException:
            self.storage.budget.release(part)  # the part never went out
            raise
        number = len(self._parts) + len(self._jobs) + 1
        self._jobs.append(self.storage.spawn(part, self._upload_part, number, part))

    def _upload_part(self, number: int, part: bytearray) -> dict[str, Any]:
        checksum = run_blocking(_b64_sha256, part)  # hashlib frees the GIL: a pool thread
        answer = self.storage.call(
            "upload_part", client=self.storage.part_client, Key=self.storage.object_key(self.key),
            UploadId=self._upload_id, PartNumber=number, Body=part, ChecksumSHA256=checksum)
        return {"PartNumber": number, "ETag": answer["ETag"], "ChecksumSHA256": checksum}

    def finalize(self, key: str | None = None) -> str:
        """Send the rest and complete the object (all parts checked by S3). Returns its key.

        On failure everything is aborted/removed and the error re-raised.
        """
        if key is not None and key != self.key:
            raise ValueError("an S3 object is named when it is staged")
        if self._state != "open":
            raise ValueError("staged object is closed")
        object_key = self.storage.object_key(self.key)
        try:
            if self._upload_id is None:  # smaller than one part: one PutObject
                held, body = self._part is not None, self._rest()
                try:
                    self.storage.call("put_object", client=self.storage.part_client,
                                      Key=object_key, Body=body,
                                      ChecksumSHA256=base64.b64encode(
                                          self._hasher.digest()).decode())
                finally:
                    if held:
                        self.storage.budget.release(body)
            else:
                if self._filled and self._part is not None:
                    self._send(self._rest())
                while self._jobs:
                    self._parts.append(self._jobs.popleft().result())
                self.storage.call("complete_multipart_upload", Key=object_key,
                                  UploadId=self._upload_id,
                                  MultipartUpload={"Parts": sorted(
                                      self._parts, key=lambda p: p["PartNumber"])})
                self._upload_id = None
        except BaseException:
            self.discard()
            raise
        self._part = None
        self._state = "done"
        return object_key

    def discard(self) -> None:
        """Abort the multipart upload (or delete the finished object). Idempotent."""
        if self._state == "gone":
            return
        finished, self._state = self._state == "done", "gone"
        if self._part is not None:
            part, self._part = self._part, None
            self.storage.budget.release(part)
        while self._jobs:
            self._jobs.popleft().cancel()
        object_key = self.storage.object_key(self.key)
        try:
            if self._upload_id is not None:
                self.storage.call("abort_multipart_upload", Key=object_key,
                                  UploadId=self._upload_id)
                self._upload_id = None
            elif finished:
                self.storage.call("delete_object", Key=object_key)
        except StorageUnavailable:
            log.warning("could not remove %s (the bucket's lifecycle rule will)", object_key,
                        exc_info=True)

    def close(self) -> None:
        """Nothing to keep open between requests (tus staging stays on local disk)."""

    def __enter__(self) -> S3Upload:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None or self._state != "done":
            self.discard()
