"""A real nginx (Debian's nginx-light) in front of a live gunicorn, for tests/ops.

The site is ``conf/nginx.conf.template`` rendered by ``envsubst`` with only its
five placeholders (as the README tells operators to), included inside an
``http {}`` of a minimal ``nginx.conf`` written here: its own prefix, pid, logs
and temp folders under the test's tmp folder, ``daemon off``, listening on a
free 127.0.0.1 port. Started as a subprocess, ready once the port accepts,
stopped by PID.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import psutil

from tests.live import ROOT, free_port, wait_for

NGINX = Path("/usr/sbin/nginx")
TEMPLATE = ROOT / "conf" / "nginx.conf.template"
PLACEHOLDERS = ("NGINX_LISTEN", "FLASKSTREAM_UPSTREAM", "FLASKSTREAM_MEDIA_DIR",
                "FLASKSTREAM_UPLOAD_DIR", "NGINX_CACHE_DIR", "NGINX_ACCESS_LOG")
TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def available() -> bool:
    """nginx is installed (the tests skip otherwise; a missing ``envsubst`` fails them)."""
    return NGINX.exists()


def render(values: dict[str, str]) -> str:
    """The template through ``envsubst '${A} ${B} ...'``: nginx's own ``$vars`` stay."""
    shell_format = " ".join("${" + name + "}" for name in PLACEHOLDERS)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **values}
    return subprocess.run(["envsubst", shell_format], input=TEMPLATE.read_text(), env=env,
                          capture_output=True, text=True, check=True).stdout


MAIN_CONF = """\
{user}
worker_processes 1;
daemon off;
pid {base}/nginx.pid;
error_log {base}/error.log info;
events {{ worker_connections 1024; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {base}/access.log;
    # As many sites have it: text compressed. Streams must not wait in gzip's buffer.
    gzip on;
    gzip_types text/event-stream text/plain text/csv application/json;
    client_body_temp_path {base}/client_body;
    proxy_temp_path {base}/proxy;
    fastcgi_temp_path {base}/fastcgi;
    uwsgi_temp_path {base}/uwsgi;
    scgi_temp_path {base}/scgi;
    include {base}/site.conf;
}}
"""


class Nginx:
    """nginx on a free port, proxying to ``upstream`` (``host:port`` or ``unix:/path``)."""

    def __init__(self, base: Path, upstream: str, media_dir: Path, upload_dir: Path) -> None:
        self.base = Path(base)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.values = {
            "NGINX_LISTEN": f"127.0.0.1:{self.port}",
            "FLASKSTREAM_UPSTREAM": upstream,
            "FLASKSTREAM_MEDIA_DIR": str(media_dir),
            "FLASKSTREAM_UPLOAD_DIR": str(upload_dir),
            # The media decision tier's socket and cache (a unix socket path must stay
            # under 108 bytes: the test's own folder, kept short).
            "NGINX_CACHE_DIR": str(self.base / "cache"),
            "NGINX_ACCESS_LOG": str(self.access_log),
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def access_log(self) -> Path:
        """The site's access log (the template's own format, query strings left out)."""
        return self.base / "site-access.log"

    @property
    def body_temp(self) -> Path:
        """nginx's client_body_temp_path: spooled request bodies would land here."""
        return self.base / "client_body"

    def spooled_files(self) -> set[str]:
        """Files open in nginx's processes under its temp folders, and files left
        there. nginx unlinks a temp file as soon as it creates it, so the folder
        alone looks empty while a body is being spooled: the descriptors do not."""
        found = {str(p) for name in ("client_body", "proxy") for p in (self.base / name).rglob("*")
                 if p.is_file()}
        for pid in self.pids():
            try:
                links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
            except OSError:
                continue
            found.update(link for link in links
                         if link.startswith((str(self.body_temp), str(self.base / "proxy"))))
        return found

    def pids(self) -> list[int]:
        if self.process is None:
            return []
        try:
            master = psutil.Process(self.process.pid)
            return [master.pid] + [child.pid for child in master.children()]
        except psutil.NoSuchProcess:
            return []

    def spool_warnings(self) -> list[str]:
        """nginx's own warnings that it buffered a body to a temporary file."""
        return [line for line in self.error_log(tail=None).splitlines()
                if "buffered to a temporary file" in line]

    def write_config(self) -> Path:
        self.base.mkdir(parents=True, exist_ok=True)
        for name in (*TEMP_DIRS, "cache"):
            (self.base / name).mkdir(exist_ok=True)
        (self.base / "site.conf").write_text(render(self.values))
        # As root, nginx's workers would drop to "nobody", who cannot read pytest's
        # 0700 tmp folders; stay the current user then.
        user = "user root root;" if os.geteuid() == 0 else ""
        conf = self.base / "nginx.conf"
        conf.write_text(MAIN_CONF.format(base=self.base, user=user))
        return conf

    def command(self, *extra: str) -> list[str]:
        return [str(NGINX), "-p", str(self.base), "-c", str(self.base / "nginx.conf"),
                "-e", str(self.base / "error.log"), *extra]

    def start(self, timeout: float = 15) -> Nginx:
        self.write_config()
        check = subprocess.run(self.command("-t"), capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t failed:\n{check.stderr}")
        self.process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        if not wait_for(self._accepts, timeout):
            self.stop()
            raise RuntimeError(f"nginx did not listen within {timeout}s:\n{self.error_log()}")
        return self

    def _accepts(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"nginx exited with {self.process.returncode}:\n{self.error_log()}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def error_log(self, tail: int | None = 4000) -> str:
        try:
            text = (self.base / "error.log").read_text(errors="replace")
            return text[-tail:] if tail else text
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM (nginx's fast shutdown) to the master, which ends its worker."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
