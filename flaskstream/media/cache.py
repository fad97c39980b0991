"""An open-file and stat cache for the media fast path, like nginx's ``open_file_cache``.

Opening a media file the safe way costs ``open`` + ``readlink`` (the
containment check) + ``fstat`` + ``close`` per request; on random 64 KiB
ranges that is a fifth of the fast path's own time. Here a request costs one
``stat`` of the path instead: if it still names the inode, size and mtime_ns
the entry was opened with, the cached descriptor (already contained, already
snapshotted) serves it; anything else — the file replaced by a rename,
rewritten, deleted, a symlink on the way swapped — fails that comparison and
the path is opened and checked afresh. Unlike nginx (``open_file_cache_valid``,
60 s by default) nothing is served from a snapshot the path no longer matches.

Descriptors are shared by the requests in flight: each holds a reference, and
an entry pushed out (LRU, ``MEDIA_OPEN_FILE_CACHE`` entries) or replaced is
closed only when its last request lets go — a number reused by another file
while a body still reads it would send one client another's bytes. Entries
unused for ``INACTIVE_SECONDS`` are closed at the next request (nginx's
``inactive=``), so a deleted or replaced file's space is not held for long
by a descriptor nobody asks for.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict

from flaskstream.media import files

INACTIVE_SECONDS = 60.0


class CachedFile:
    """A contained, regular file's descriptor and snapshot, shared by reference count."""

    __slots__ = ("fd", "real", "info", "users", "retired", "headers", "used")

    def __init__(self, fd: int, real: str, info: files.FileInfo) -> None:
        self.fd = fd
        self.real = real
        self.info = info
        self.users = 0
        self.retired = False
        self.used = 0.0  # time.monotonic() of the last acquire
        #: (Cache-Control, response headers of a 206 up to Content-Range), built once.
        self.headers: tuple[str, list[tuple[str, str]]] | None = None


class OpenFileCache:
    """At most ``max_entries`` descriptors keyed by (root, URL subpath); LRU."""

    def __init__(self, max_entries: int, inactive: float = INACTIVE_SECONDS) -> None:
        self.max_entries = max(0, max_entries)
        self.inactive = inactive
        self.entries: OrderedDict[tuple[str, str], CachedFile] = OrderedDict()
        self.lock = threading.Lock()

    def acquire(self, root: str, subpath: str) -> CachedFile | None:
        """A referenced entry for ``subpath`` inside ``root``, or None (a 404 to give).

        Raises ``ApiError(404)`` for something that is not a regular file. The
        caller must ``release`` the entry exactly once.
        """
        key = (root, subpath)
        entry = self.entries.get(key)  # holds only subpaths that passed safe_subpath
        if entry is None and not files.safe_subpath(subpath):
            return None
        try:
            st = os.stat(files.real_root(root) + "/" + subpath)
        except OSError:
            self._forget(key)
            return None
        now = time.monotonic()
        if entry is not None and entry.info.same_file(st):
            with self.lock:
                if not entry.retired:
                    entry.users += 1
                    entry.used = now
                    self.entries.move_to_end(key)
                    self._expire(now)
                    return entry
        opened = files.open_contained(root, subpath)
        if opened is None:
            self._forget(key)
            return None
        fd, real = opened
        try:
            info = files.FileInfo.of(os.fstat(fd))
        except BaseException:
            os.close(fd)
            raise
        entry = CachedFile(fd, real, info)
        entry.users = 1
        entry.used = now
        with self.lock:
            self._expire(now)
            self._retire(self.entries.pop(key, None))
            if self.max_entries:
                self.entries[key] = entry
                while len(self.entries) > self.max_entries:
                    self._retire(self.entries.popitem(last=False)[1])
            else:
                entry.retired = True  # caching off: closed by its one release
        return entry

    def release(self, entry: CachedFile) -> None:
        with self.lock:
            entry.users -= 1
            if entry.retired and entry.users == 0:
                os.close(entry.fd)

    def clear(self) -> None:
        with self.lock:
            while self.entries:
                self._retire(self.entries.popitem()[1])

    def _expire(self, now: float) -> None:
        """Retire the least recently used entries idle for ``inactive`` s (lock held)."""
        while self.entries:
            oldest = next(iter(self.entries.values()))
            if now - oldest.used < self.inactive:
                return
            self._retire(self.entries.popitem(last=False)[1])

    def _forget(self, key: tuple[str, str]) -> None:
        with self.lock:
            self._retire(self.entries.pop(key, None))

    def _retire(self, entry: CachedFile | None) -> None:
        """Drop ``entry`` from service (lock held); its descriptor closes with its last user."""
        if entry is None or entry.retired:
            return
        entry.retired = True
        if entry.users == 0:
            os.close(entry.fd)
