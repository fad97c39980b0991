"""The per-request locks of the media fast path stay OS locks in a gevent worker.

Under gevent's monkey-patching ``threading.Lock()`` is gevent's lock, ~2.5x the
cost per acquire; the two locks a media request takes several times — the
open-file cache's and the one prometheus_client's multiprocess values share —
guard sections that never yield, so an OS lock is safe there and is what they
must be. Each case runs in a fresh interpreter, patched as a gunicorn gevent
worker is (the master's imports first, then ``monkey.patch_all()``).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(code: str, tmp_path: Path) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "FLASKSTREAM_INSTANCE_PATH": str(tmp_path),
                               "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_open_file_cache_lock_is_the_os_lock_when_patched(tmp_path: Path) -> None:
    out = run("""
        from gevent import monkey; monkey.patch_all()
        import threading
        from flaskstream.media.cache import OpenFileCache
        print(type(OpenFileCache(4).lock).__module__, type(threading.Lock()).__module__)
    """, tmp_path)
    assert out == "_thread gevent.thread"


def test_the_master_imports_prometheus_client_so_its_lock_is_the_os_lock(tmp_path: Path) -> None:
    out = run("""
        import runpy
        conf = runpy.run_path("conf/gunicorn.conf.py")
        conf["_metrics_dir"]()                 # what on_starting does in the master
        from gevent import monkey; monkey.patch_all()  # what the worker does after the fork
        from flaskstream import metrics
        from prometheus_client import values
        assert values.ValueClass._multiprocess
        locks = [c.cell_contents for c in values.ValueClass.inc.__closure__ or ()
                 if "lock" in type(c.cell_contents).__name__.lower()]
        metrics.MEDIA_BYTES.inc(1)
        print(sorted({type(lock).__module__ for lock in locks}))
    """, tmp_path)
    assert out == "['_thread']"
