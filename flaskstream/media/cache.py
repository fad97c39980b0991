"""An open-file and stat cache for the media fast path, like nginx's ``open_file_cache``.

Opening a media file the safe way costs ``open`` + ``readlink`` (the
containment check) + ``fstat`` + ``close`` per request; on random 64 KiB
ranges that is a fifth of the fast path's own time. Here a request costs one
``stat`` of the path instead: if it still names the inode, size and mtime_ns
the entry was opened with, the cached descriptor (already contained, already
snapshotted) serves it; anything else — the file replaced by a rename,
rewritten, deleted, a symlink on the way swapped — fails that comparison and
the path is opened and checked afresh. For ``MEDIA_OPEN_FILE_CACHE_VALID``
seconds after a path ``stat`` matched (nginx's ``open_file_cache_valid``, 60 s
there, 1 s here; 0 = a path ``stat`` every request), requests ``fstat`` the
descriptor instead, a third of the cost: a file rewritten or truncated in place
is still seen at once (no mixed bytes under an old ETag), while one renamed
over, deleted or swapped by a symlink is served as its old, consistent
snapshot until the next path ``stat``.

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
import sys
import threading
import time
from collections import OrderedDict
from typing import Any

from flaskstream.media import files

INACTIVE_SECONDS = 60.0


def section_lock() -> Any:
    """A lock for sections that never block nor yield: the OS's own, even when
    gevent has patched ``threading`` (a greenlet cannot switch inside such a
    section, so it cannot deadlock on it), at a third of a gevent lock's cost on
    the per-request path. Threads, should a threaded server share the cache, get
    real mutual exclusion either way."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        return monkey.get_original("_thread", "allocate_lock")()
    return threading.Lock()


class CachedFile:
    """A contained, regular file's descriptor and snapshot, shared by reference count."""

    __slots__ = ("fd", "real", "info", "path", "users", "retired", "headers", "used", "checked")

    def __init__(self, fd: int, real: str, info: files.FileInfo, path: str) -> None:
        self.fd = fd
        self.real = real
        self.info = info
        self.path = path  # what each request stats: the root's real path + the URL subpath
        self.users = 0
        self.retired = False
        self.used = 0.0  # time.monotonic() of the last acquire
        self.checked = 0.0  # time.monotonic() of the last stat of the path that matched
        #: (Cache-Control, response headers of a 206 up to Content-Range), built once.
        self.headers: tuple[str, list[tuple[str, str]]] | None = None


class OpenFileCache:
    """At most ``max_entries`` descriptors keyed by (root, URL subpath); LRU."""

    def __init__(self, max_entries: int, inactive: float = INACTIVE_SECONDS,
                 valid: float = 0.0) -> None:
        self.max_entries = max(0, max_entries)
        self.inactive = inactive
        #: Seconds a path ``stat`` is trusted for (``MEDIA_OPEN_FILE_CACHE_VALID``, like
        #: nginx's ``open_file_cache_valid``); meanwhile requests ``fstat`` the descriptor.
        self.valid = max(0.0, valid)
        self.entries: OrderedDict[tuple[str, str], CachedFile] = OrderedDict()
        self.lock = section_lock()
        self.next_expiry = 0.0  # idle entries are looked for at most once a second

    def acquire(self, root: str, subpath: str) -> CachedFile | None:
        """A referenced entry for ``subpath`` inside ``root``, or None (a 404 to give).

        Raises ``ApiError(404)`` for something that is not a regular file. The
        caller must ``release`` the entry exactly once.
        """
        key = (root, subpath)
        entry = self.entries.get(key)  # holds only subpaths that passed safe_subpath
        now = time.monotonic()
        if entry is not None and now - entry.checked < self.valid and self._unchanged(entry):
            hit = self._hit(key, entry, now)
            if hit is not None:
                return hit
        if entry is None:
            if not files.safe_subpath(subpath):
                return None
            path = files.real_root(root) + "/" + subpath
        else:
            path = entry.path
        try:
            st = os.stat(path)
        except OSError:
            self._forget(key)
            return None
        if entry is not None and entry.info.same_file(st):
            entry.checked = now
            hit = self._hit(key, entry, now)
            if hit is not None:
                return hit
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
        entry = CachedFile(fd, real, info, path)
        entry.users = 1
        entry.used = entry.checked = now
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

    def _unchanged(self, entry: CachedFile) -> bool:
        """Within ``valid`` of the last path ``stat``: the descriptor's own ``fstat``
        (no path walk) still matches the snapshot — a rewrite in place or a
        truncation shows here at once; a rename over the path waits for the next
        path ``stat``."""
        try:
            return entry.info.same_file(os.fstat(entry.fd))
        except OSError:  # closed meanwhile by another thread's retire
            return False

    def _hit(self, key: tuple[str, str], entry: CachedFile, now: float) -> CachedFile | None:
        """``entry`` referenced for one more request, unless it was retired meanwhile."""
        with self.lock:
            if entry.retired:
                return None
            entry.users += 1
            entry.used = now
            self.entries.move_to_end(key)
            if now >= self.next_expiry:
                self._expire(now)
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
        self.next_expiry = now + min(1.0, self.inactive)
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
