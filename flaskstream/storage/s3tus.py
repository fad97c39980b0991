"""Unfinished tus uploads in the bucket, so any host resumes any upload (``base.Resumable``).

Mapped onto S3 as tusd's ``s3store`` does:

- **Creation** starts a multipart upload of the final key (``<prefix>/<id>``,
  ``ChecksumAlgorithm=SHA256``) and writes a marker object ``<id>.info`` (tusd's
  name) that tells the orphan sweeper (``s3sweep.py``) to leave this multipart
  upload alone: a paused tus upload sends no part for hours, and is not a
  killed worker's. The upload row keeps ``<part size>:<UploadId>`` as its
  staging name, so every host cuts parts at the same boundaries whatever its
  own ``STORAGE_PART_SIZE``.
- **Part k** always holds bytes ``[(k-1)·P, k·P)``. A PATCH fills whole parts
  of ``P`` and sends each as it fills (at most ``STORAGE_PARTS_IN_FLIGHT`` on the
  wire, buffers from the worker's ``PartBudget``). The rest (under ``P``) goes
  into a **tail object** ``<id>.part.<k>`` (tusd's ``<id>.part``, numbered by the
  part it will begin), which the next PATCH, on any host, reads back into the
  front of part k. Numbering tails means a PATCH that crossed a part boundary
  never overwrites the tail the committed offset still needs (if its commit
  never happens, e.g. a checksum mismatch or a lost lease, the old tail stands).
- **The committed offset** (the database, ``tus/store.commit_offset``) is only
  ever bytes in acknowledged parts plus that tail. Bytes past it (a writer that
  died, or a rejected checksum) are parts the next PATCH overwrites: uploading a
  part number again replaces it, so nothing past the offset is ever trusted.
- **The last byte** makes the buffer the last part (any size), then the upload
  is completed with the parts S3 lists (each carries its checksum).
- **SHA-256 of the object.** hashlib's state cannot cross hosts (nor be saved),
  and S3's multipart SHA-256 is a checksum of the parts' checksums, not of the
  object. So: when one request received every byte (tus-js-client and tuspy
  send the whole file in one PATCH unless told otherwise), its running hash is
  used; otherwise the completed object is read back once, in 1 MiB chunks. A
  pure-Python SHA-256 whose state could be stored would cost far more CPU on
  every byte of every upload than one read-back of the uploads that resumed.
- **Removal** (termination, expiry, a failed creation) aborts the multipart
  upload and deletes the tail objects and the marker: nothing is left. Tails and
  markers carry the tag ``flaskstream=tus`` so a lifecycle rule can expire what
  a killed host left (README, "Running on more than one host").
"""

from __future__ import annotations

import base64
import collections
import hashlib
from typing import Any

from flaskstream.errorbase import FixedError
from flaskstream.storage.base import StorageUnavailable, run_blocking
from flaskstream.storage.s3jobs import PartJob
from flaskstream.storage.s3read import remote_errors
from flaskstream.storage.s3sweep import TUS_MARKER

TAGGING = "flaskstream=tus"
TAIL = ".part."
READ_BACK = 1 << 20


class StartedElsewhere(FixedError):
    """An upload created before ``STORAGE_URL`` named this bucket: its bytes are in a
    staging file of some host, not here. 410: the client starts a new upload."""

    code, status = "UPLOAD_ON_OTHER_BACKEND", 410

    def __init__(self) -> None:
        super().__init__("this upload was started on another storage backend; start it again")


def parse_name(name: str) -> tuple[int, str]:
    """``<part size>:<UploadId>`` → (part size, UploadId)."""
    size, _, upload_id = name.partition(":")
    if not size.isdigit() or not upload_id:
        raise StartedElsewhere()
    return int(size), upload_id


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _no_such_upload(exc: BaseException) -> bool:
    cause = exc.__cause__ if isinstance(exc, StorageUnavailable) else exc
    response = getattr(cause, "response", None) or {}
    return str(response.get("Error", {}).get("Code", "")) in ("NoSuchUpload", "404")


class S3Resumable:
    """Unfinished tus uploads on an ``s3.S3Storage`` (not imported: s3.py is the backend)."""

    def __init__(self, storage: Any) -> None:
        self.storage = storage

    def create(self, key: str) -> str:
        obj = self.storage.object_key(key)
        created = self.storage.call("create_multipart_upload", Key=obj,
                                    ChecksumAlgorithm="SHA256")
        name = f"{self.storage.part_size}:{created['UploadId']}"
        try:
            self.storage.call("put_object", Key=obj + TUS_MARKER, Body=name.encode(),
                              Tagging=TAGGING)
        except BaseException:
            self.remove(name, key)
            raise
        return name

    def tail_size(self, obj: str, number: int) -> int | None:
        try:
            head = self.storage.client.head_object(Bucket=self.storage.bucket,
                                                   Key=f"{obj}{TAIL}{number}")
        except remote_errors() as exc:
            if getattr(exc, "response", {}).get("ResponseMetadata", {}).get(
                    "HTTPStatusCode") == 404:
                return None
            raise StorageUnavailable("object storage: head_object failed") from exc
        return int(head["ContentLength"])

    def reconcile(self, name: str, key: str, offset: int) -> int:
        """Parts are durable once acknowledged; the offset also needs its tail (≥ its bytes:
        a PATCH that died before committing may have extended it in place)."""
        part_size, _ = parse_name(name)
        whole, rest = divmod(offset, part_size)
        if not rest:
            return offset
        size = self.tail_size(self.storage.object_key(key), whole + 1)
        return offset if size is not None and size >= rest else whole * part_size

    def writer(self, name: str, key: str, offset: int) -> S3Writer:
        part_size, upload_id = parse_name(name)
        return S3Writer(self.storage, self.storage.object_key(key), upload_id, part_size, offset)

    def exists(self, name: str, key: str) -> bool:
        """Whether the multipart upload is still open (not completed, not aborted)."""
        _, upload_id = parse_name(name)
        try:
            self.storage.call("list_parts", Key=self.storage.object_key(key),
                              UploadId=upload_id, MaxParts=1)
        except StorageUnavailable as exc:
            if _no_such_upload(exc):
                return False
            raise
        return True

    def parts(self, obj: str, upload_id: str) -> dict[int, dict[str, Any]]:
        pages = self.storage.client.get_paginator("list_parts").paginate(
            Bucket=self.storage.bucket, Key=obj, UploadId=upload_id)
        try:
            return {int(p["PartNumber"]): p for page in pages for p in page.get("Parts", [])}
        except remote_errors() as exc:
            raise StorageUnavailable("object storage: list_parts failed") from exc

    def finish(self, name: str, key: str, size: int, sha256: str | None) -> str:
        """Complete the multipart upload with parts 1..N (those past N are stale), then
        remove tails and marker; the SHA-256 given, or read back from the object."""
        part_size, upload_id = parse_name(name)
        obj = self.storage.object_key(key)
        count = -(-size // part_size)
        if count == 0:  # an empty upload: S3 completes no upload without a part
            self.storage.call("abort_multipart_upload", Key=obj, UploadId=upload_id)
            self.storage.call("put_object", Key=obj, Body=b"",
                              ChecksumSHA256=_b64(hashlib.sha256().digest()))
        else:
            listed = self.parts(obj, upload_id)
            missing = [n for n in range(1, count + 1) if n not in listed]
            if missing:
                raise StorageUnavailable(f"object storage: parts {missing[:3]} of {key} missing")
            chosen = [{k: listed[n][k] for k in ("PartNumber", "ETag", "ChecksumSHA256")
                       if k in listed[n]} for n in range(1, count + 1)]
            self.storage.call("complete_multipart_upload", Key=obj, UploadId=upload_id,
                              MultipartUpload={"Parts": chosen})
        digest = sha256 or self.read_back(key)
        self.remove_extras(obj)
        return digest

    def read_back(self, key: str) -> str:
        stored = self.storage.open(key)
        if stored is None:
            raise StorageUnavailable(f"object storage: {key} vanished after completion")
        hasher = hashlib.sha256()
        body = stored.body([(0, stored.info.size)], READ_BACK)
        try:
            for chunk in body:
                hasher.update(chunk)
        finally:
            body.close()
        return hasher.hexdigest()

    def remove(self, name: str, key: str) -> None:
        try:
            _, upload_id = parse_name(name)
        except StartedElsewhere:
            return  # nothing of it is in the bucket
        obj = self.storage.object_key(key)
        try:
            self.storage.call("abort_multipart_upload", Key=obj, UploadId=upload_id)
        except StorageUnavailable as exc:
            if not _no_such_upload(exc):
                raise
        self.remove_extras(obj)

    def remove_extras(self, obj: str) -> None:
        """Delete the tail objects and the marker of ``obj``."""
        pages = self.storage.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.storage.bucket, Prefix=obj + TAIL)
        try:
            tails = [item["Key"] for page in pages for item in page.get("Contents", [])]
        except remote_errors() as exc:
            raise StorageUnavailable("object storage: list_objects_v2 failed") from exc
        for extra in [*tails, obj + TUS_MARKER]:
            self.storage.call("delete_object", Key=extra)


class S3Writer:
    """One request's bytes into parts of ``part_size`` and, at its end, a tail object."""

    def __init__(self, storage: Any, obj: str, upload_id: str, part_size: int,
                 start: int) -> None:
        self.storage, self.obj, self.upload_id = storage, obj, upload_id
        self.part_size, self.start = part_size, start
        self.first = self.number = start // part_size + 1  # the part being filled
        self._tail_due = start % part_size  # bytes of the old tail to load in front
        self._buffer: bytearray | None = None
        self._filled = 0
        self._jobs: collections.deque[PartJob] = collections.deque()
        self._done: set[int] = set()

    def _fresh(self) -> bytearray:
        """A part buffer (from the worker's budget); the first one starts with the old tail."""
        buffer = self.storage.budget.acquire()
        self._filled = 0
        if self._tail_due:
            try:
                answer = self.storage.call("get_object", Key=f"{self.obj}{TAIL}{self.number}",
                                           Range=f"bytes=0-{self._tail_due - 1}")
                for chunk in answer["Body"].iter_chunks(READ_BACK):
                    buffer[self._filled:self._filled + len(chunk)] = chunk
                    self._filled += len(chunk)
            except BaseException:
                self.storage.budget.release(buffer)
                raise
            if self._filled != self._tail_due:
                self.storage.budget.release(buffer)
                raise StorageUnavailable("object storage: the upload's tail object is short")
            self._tail_due = 0
        return buffer

    def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        while view:
            if self._buffer is None:
                self._buffer = self._fresh()
            n = min(len(view), self.part_size - self._filled)
            self._buffer[self._filled:self._filled + n] = view[:n]
            self._filled += n
            view = view[n:]
            if self._filled == self.part_size:
                self._send(self._filled)

    def _send(self, filled: int) -> None:
        """Send the buffer as part ``number`` (waiting first if as many are out as allowed)."""
        buffer, self._buffer = self._buffer, None
        assert buffer is not None
        del buffer[filled:]  # the last part: cut in place (a short buffer is not reused)
        try:
            while len(self._jobs) >= self.storage.parts_in_flight:
                self._jobs.popleft().result()
        except BaseException:
            self.storage.budget.release(buffer)
            raise
        self._jobs.append(self.storage.spawn(buffer, self._upload_part, self.number, buffer))
        self.number += 1

    def _upload_part(self, number: int, part: bytearray) -> None:
        checksum = run_blocking(lambda: _b64(hashlib.sha256(part).digest()))
        # part_client: UNSIGNED-PAYLOAD, bound by the signed checksum (see S3Storage).
        self.storage.call("upload_part", client=self.storage.part_client, Key=self.obj,
                          UploadId=self.upload_id, PartNumber=number, Body=part,
                          ChecksumSHA256=checksum)
        self._done.add(number)

    def durable(self, written: int) -> int:
        """The end of the parts acknowledged without a gap (or where this request began)."""
        last = self.first - 1
        while last + 1 in self._done:
            last += 1
        return max(self.start, last * self.part_size)

    def flush(self, written: int, complete: bool) -> int:
        """Wait for the parts out; then the rest becomes the last part (``complete``) or
        the tail object that the next PATCH begins with."""
        if complete and self._tail_due:  # no byte came: the stored tail is the last part
            self._buffer = self._fresh()
        while self._jobs:
            self._jobs.popleft().result()
        if self._buffer is not None and self._filled:
            if complete:
                self._send(self._filled)
                while self._jobs:
                    self._jobs.popleft().result()
            elif written:
                body = self._buffer
                del body[self._filled:]  # in place: no copy (a short buffer is not reused)
                checksum = run_blocking(lambda: _b64(hashlib.sha256(body).digest()))
                self.storage.call("put_object", client=self.storage.part_client,
                                  Key=f"{self.obj}{TAIL}{self.number}", Body=body,
                                  Tagging=TAGGING, ChecksumSHA256=checksum)
        self._release()
        return self.start + written

    def rollback(self) -> None:
        self._cancel()

    def _release(self) -> None:
        buffer, self._buffer = self._buffer, None
        if buffer is not None:
            self.storage.budget.release(buffer)

    def _cancel(self) -> None:
        while self._jobs:
            self._jobs.popleft().cancel()
        self._release()

    def close(self, committed: int | None) -> None:
        """Stop what is still out; once a later offset is committed, the tail this request
        began with is stale (its bytes are in part ``first`` now): delete it."""
        self._cancel()
        if committed is None or self.start % self.part_size == 0:
            return
        whole, rest = divmod(committed, self.part_size)
        if whole + 1 != self.first or not rest:
            try:
                self.storage.call("delete_object", Key=f"{self.obj}{TAIL}{self.first}")
            except StorageUnavailable:  # removed with the upload at the latest
                pass
