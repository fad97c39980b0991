"""Configuration defaults and their layering.

Order (later wins): the defaults below → ``FLASKSTREAM_*`` environment variables
(values parsed as JSON where they can be, so ``FLASKSTREAM_SSE_HEARTBEAT=5`` is an
int) → ``DATABASE_URL`` → the ``test_config`` mapping given to ``create_app``.
Nothing here reads the environment at import time; ``load_config`` does, when
``create_app`` calls it. Every key is documented in the README's table.

Each pattern keeps its settings in its own section so that the table stays in
the same order as the code.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

DEFAULTS: dict[str, Any] = {
    # --- core -------------------------------------------------------------
    # postgresql://user:pass@host:port/db or postgresql://user@/db?host=/socket/dir.
    # None → an embedded PostgreSQL (pgserver) in INSTANCE_PATH/pgdata.
    "DATABASE_URL": None,
    # Bearer token required on every write (POST/PUT/PATCH/DELETE) when set.
    "API_TOKEN": None,
    # Connections kept per worker process; more requests than this wait for one.
    "DB_POOL_SIZE": 10,
    # Seconds to wait when connecting to PostgreSQL (health checks use it too).
    "DB_CONNECT_TIMEOUT": 5,
    # Where uploads are stored (staging files live in UPLOAD_DIR/.staging, same filesystem).
    "UPLOAD_DIR": None,  # None → INSTANCE_PATH/uploads
    # Where /media/ serves files from.
    "MEDIA_DIR": None,  # None → <checkout>/media
    # Origins allowed to call the API from another site (CORS), e.g. ["https://app.example"].
    "CORS_ALLOWED_ORIGINS": [],
    # --- events (SSE) -----------------------------------------------------
    # Seconds between heartbeat comments; also bounds how long a dead client lingers.
    "SSE_HEARTBEAT": 15,
    # `retry:` hint sent at open (ms); rejected/shut-down streams get it plus jitter.
    "SSE_RETRY_MS": 3000,
    "SSE_RETRY_JITTER_MS": 5000,
    # Events queued per subscriber; a full queue ends that stream (slow consumer).
    "SSE_QUEUE_SIZE": 256,
    # Open streams per worker; keep below GUNICORN_WORKER_CONNECTIONS so API calls get through.
    "SSE_MAX_STREAMS": 5000,
    # Retention: newest N events, none older than S seconds (pruned from publish).
    "EVENTS_RETENTION_COUNT": 10000,
    "EVENTS_RETENTION_SECONDS": 86400,
    "EVENTS_PRUNE_INTERVAL": 30,
    # Wait for the WAL flush on publish (durable) or not (faster; a DB crash may lose the last ~0.5 s).
    "EVENTS_SYNCHRONOUS_COMMIT": False,
    # The listener re-reads the events table at least this often, notification or not.
    "EVENTS_POLL_SECONDS": 2.0,
    # Per-worker stats line in the log at most this often (when anything is open or moving).
    "EVENTS_STATS_LOG_SECONDS": 60,
    # Delay between words of /stream/tokens (the stand-in for an upstream model).
    "TOKENS_DELAY": 0.05,
    # --- events, database and edges: hostile-input limits (issue 12, h-db) ---
    # Largest POST /events/<channel> body (bytes, as nginx's client_max_body_size);
    # a larger declared Content-Length is 413 before reading, a chunked one at the limit.
    "EVENTS_MAX_BODY": 1 * MiB,
    # --- end of events, database and edges limits -------------------------
    # --- uploads ----------------------------------------------------------
    # Largest read from an upload body; reads shrink (down to 64 KiB) so that all
    # uploads in flight in one worker share UPLOAD_BUFFER_BUDGET of read buffers.
    "UPLOAD_CHUNK_SIZE": 1 * MiB,
    "UPLOAD_BUFFER_BUDGET": 4 * MiB,
    "LIMIT_BODY_SIZE": 8 * GiB,
    "LIMIT_FILE_SIZE": 4 * GiB,
    "LIMIT_FILE_COUNT": 20,
    "LIMIT_FIELD_COUNT": 100,
    "LIMIT_FIELD_SIZE": 64 * KiB,
    "LIMIT_PART_HEADERS": 8 * KiB,  # bytes of one part's headers
    "LIMIT_PART_HEADER_COUNT": 32,  # header lines in one part
    # Raw filename as sent (bytes); stored names are further cut to 255 bytes.
    "LIMIT_FILENAME_LENGTH": 1 * KiB,
    "UPLOAD_IDLE_TIMEOUT": 60,  # seconds without body bytes → 408
    # Allow-list of ".ext", "type/subtype", "type/*" entries; empty allows everything.
    "UPLOAD_ALLOWED_TYPES": [],
    # Registers POST /uploads/buffered (request.get_data() first): benchmarks only.
    "BENCH_BUFFERED_ROUTE": False,
    "TUS_MAX_SIZE": 8 * GiB,
    "TUS_EXPIRATION_SECONDS": 86400,
    # --- resumable uploads (tus) ---------------------------------------------
    # A PATCH holds its upload's lease this long between renewals (every TUS_LOCK_POLL s);
    # a worker that died is waited out after at most this.
    "TUS_LOCK_LEASE": 10,
    "TUS_LOCK_POLL": 0.5,
    # How long a request waits for another to let go of the upload before 423.
    "TUS_LOCK_WAIT": 15,
    # Without Upload-Checksum, fsync + commit the offset every this many bytes of a PATCH.
    "TUS_CHECKPOINT_BYTES": 64 * MiB,
    # Seconds between janitor passes in each worker (0 = off; `flask tus expire` does one).
    "TUS_JANITOR_INTERVAL": 60,
    # Finished/terminated/expired records answer 410 for this long, then 404.
    "TUS_TOMBSTONE_SECONDS": 7 * 86400,
    # Seconds between `progress` events on uploads.<id> during a PATCH (0 = only `done`).
    "TUS_PROGRESS_INTERVAL": 0,
    # --- hostile input: multipart, CSV and gzip bounds (issue 12, h-parse) ------
    # Every part of a multipart body (files, fields, skipped empty-filename parts) → 413.
    "LIMIT_PART_COUNT": 200,
    # One CSV record: fields (over: the row is a reject; a field's size is ETL_FIELD_SIZE_LIMIT)
    # and characters of one physical line (over: 413 LIMIT_LINE_BYTES for the whole load).
    "ETL_MAX_FIELDS": 1600,  # PostgreSQL's own column limit
    "ETL_MAX_LINE_BYTES": 4 * MiB,
    # A gzip body may inflate to at most this many bytes, and at most this ratio → 413.
    "ETL_MAX_INFLATED_BYTES": 64 * GiB,
    "ETL_MAX_GZIP_RATIO": 200,
    # --- end of hostile input bounds -----------------------------------------------
    # --- media ------------------------------------------------------------
    # Bytes per os.pread and per write: 256 KiB–1 MiB is the sweet spot (an open
    # stream holds at most one chunk in memory).
    "MEDIA_CHUNK_SIZE": 512 * KiB,
    # More ranges than this in one Range header → the whole file with 200 (nginx's rule).
    "MEDIA_MAX_RANGES": 16,
    # Cache-Control on every /media/ (and uploads content) response, 304s included.
    "MEDIA_CACHE_CONTROL": "public, max-age=3600",
    # Under gevent, read chunks missing from the page cache in gevent's thread pool
    # (RWF_NOWAIT probe) so a cold disk never stalls the worker's other streams.
    "MEDIA_OFFLOAD_COLD_READS": True,
    # Answer successful GET/HEAD /media/<path> in a WSGI layer in front of Flask
    # (same responses, ~2x the requests/s); everything else still goes through Flask.
    "MEDIA_FAST_PATH": True,
    # --- deployment behind nginx (issue 17: proxy, media offload) -----------
    # Descriptors the media fast path keeps open per worker (0 = open every time);
    # each request still stats the path and reopens anything replaced or changed.
    "MEDIA_OPEN_FILE_CACHE": 256,
    # --- open-file cache validity (issue 17, session 4: p-media) ------------------
    # Seconds a cached descriptor's path stat is trusted (nginx's open_file_cache_valid):
    # meanwhile each request fstats the descriptor (a rewrite in place shows at once);
    # a file renamed over or deleted is served as its old snapshot that long. 0 = stat always.
    "MEDIA_OPEN_FILE_CACHE_VALID": 1.0,
    # --- end open-file cache validity ---------------------------------------------
    # Trusted proxy hops in front of the app (werkzeug ProxyFix for X-Forwarded-
    # For/Proto/Host/Port/Prefix); 0 = off. With it, Location headers are absolute.
    "PROXY_FIX": 0,
    # X-Accel-Redirect prefix (e.g. "/_accel/"): /media/<path> and /uploads/<id>/content
    # check in Python and let nginx send the bytes. None = off (needs nginx in front).
    "MEDIA_ACCEL": None,
    # --- media offload decisions cached by nginx (issue 17, session 4: p-media) ----
    # Seconds nginx's decision tier (conf/nginx.conf.template) may reuse an allowed
    # /media/ X-Accel-Redirect answer for the same URI and credentials (X-Accel-Expires);
    # capped at an expiring token's time left; a revoked token can read that much longer.
    # 0 = every request asks the app.
    "MEDIA_ACCEL_CACHE": 1,
    # --- end media offload decisions ------------------------------------------------
    # --- end of deployment behind nginx ---------------------------------------
    # --- etl --------------------------------------------------------------
    # Rows per COPY statement (one savepoint each; the unit of a bad-row retry).
    "ETL_BATCH_SIZE": 250000,
    # Default --max-errors (None: no limit; the rejects are all reported).
    "ETL_MAX_ERRORS": None,
    # Largest CSV field accepted (csv's own default is 128 KiB).
    "ETL_FIELD_SIZE_LIMIT": 1 * MiB,
    # Rejects kept per job in etl_rejects for GET /etl/jobs/<id>/rejects (the file gets all).
    "ETL_STORE_REJECTS": 10000,
    # Largest request body POST /etl/jobs accepts (None: no limit).
    "ETL_MAX_BODY": None,
    # --- operations: metrics, health, logs (issue 17, d-metrics) ----------------
    # Bearer token /metrics requires when set (else it is open like /healthz).
    "METRICS_TOKEN": None,
    # "text" (the classic line) or "json" (one object per line, app and access log).
    "LOG_FORMAT": "text",
    # On graceful shutdown, /readyz answers 503 this many seconds before open
    # streams are ended, so a load balancer drains the worker first (< graceful_timeout).
    "SHUTDOWN_DRAIN_SECONDS": 0,
    # --- end operations ------------------------------------------------------------
    # --- faults: leases and janitors (issue 12, fault suite) -----------------
    # A running ETL job's lease (renewed every third of it); a job whose worker was
    # killed, or whose outcome could not be recorded, is failed this long after.
    "ETL_JOB_LEASE": 30,
    # Seconds between passes of each worker's janitor that fails jobs with an expired lease.
    "ETL_JANITOR_INTERVAL": 15,
    # Request staging files (UPLOAD_DIR/.staging/up-*) of a dead process on this host go
    # at the next sweep; of other hosts (owner unknown here) after this many seconds
    # without a write (never less than UPLOAD_IDLE_TIMEOUT + 30).
    "UPLOAD_STAGING_TTL": 300,
    # Seconds between staging sweeps in each worker (0 = only the start-up sweep).
    "UPLOAD_STAGING_SWEEP_INTERVAL": 30,
    # --- end of faults block ---------------------------------------------------
    # --- adapters (dependency internals, flaskstream/adapters/) ----------------
    # Capabilities to switch off (comma-separated names such as
    # "gunicorn.direct_body,pg8000.raw_socket", a package name, or "all"): they take
    # their public fallback, as when a start-up check finds the installed version changed.
    "ADAPTERS_DISABLE": "",
    # --- end adapters ---------------------------------------------------------
    # --- etl: exports and the table allow-list (issue 12, h-export) -------------
    # Tables/views ([schema.]name) that GET /etl/export.csv may stream; any other is 403.
    "ETL_TABLES": ["users", "requests"],
    # HTTP exports (and rejects reports) streaming at once per worker, each on a
    # connection of its own; one more is answered 503 + Retry-After.
    "ETL_MAX_EXPORTS": 4,
    # Seconds an export waits for a client that stopped reading before it gives
    # up the COPY and its connection (the response is cut).
    "ETL_EXPORT_STALL_TIMEOUT": 60,
    # --- end of etl exports ---------------------------------------------------
    # --- access control: JWTs, signed URLs, ownership (issue 15, w-auth) -------
    # "public" (every read open, as before) or "token": reads need a token whose claims cover them.
    "READ_ACCESS": "public",
    # "public": writes need API_TOKEN when it is set (as before); "token": API_TOKEN or a JWT
    # whose write/publish claims cover the write.
    "WRITE_ACCESS": "public",
    # HS256 key for JWTs, and/or a PEM public key (text or a file path): RS256, ES256 or EdDSA.
    "JWT_SECRET": None,
    "JWT_PUBLIC_KEY": None,
    # Required `aud` when set; seconds of clock skew allowed on exp/nbf/iat.
    "JWT_AUDIENCE": None,
    "JWT_LEEWAY": 30,
    # Name of the HttpOnly session cookie POST /auth/session sets (read requests only).
    "AUTH_COOKIE": "flaskstream_token",
    # HMAC key of ?expires=&sig= URLs (None: JWT_SECRET, else API_TOKEN).
    "URL_SIGNING_KEY": None,
    # Lifetime (s) of the signed read URL a 201 carries for the object it created.
    "SIGNED_URL_TTL": 300,
    # --- end of access control ---------------------------------------------------
    # --- schema and migrations (issue 14, w-schema) ------------------------------
    # The PostgreSQL schema holding every object flaskstream creates (created if
    # missing; 1-48 of a-z 0-9 _, not public or pg_*). Two installs in one database
    # use two schemas: their events, leases and locks never meet.
    "DB_SCHEMA": "flaskstream",
    # --- end schema and migrations -------------------------------------------------
    # --- storage: where upload bytes live (issues 13/16, w-storage) --------------
    # None → the local filesystem (UPLOAD_DIR); s3://bucket/prefix?endpoint_url=...&region=...
    # → an S3-compatible bucket (credentials from boto3's standard chain).
    "STORAGE_URL": None,
    # S3 multipart part size (≥ 5 MiB, S3's minimum) and parts uploading at once per
    # upload: an upload's memory is about part size × (in flight + 1).
    "STORAGE_PART_SIZE": 8 * MiB,
    "STORAGE_PARTS_IN_FLIGHT": 2,
    # Part buffers of all S3 uploads of one worker together (whole parts, at least one):
    # more uploads at once wait for a buffer instead of growing the worker.
    "STORAGE_BUFFER_BUDGET": 48 * MiB,
    # Seconds an S3 HEAD (size, ETag, Last-Modified) is reused for reads of the same object.
    "STORAGE_STAT_CACHE_SECONDS": 5,
    # An S3 multipart upload that got no part for this many seconds is a killed worker's:
    # the staging janitor aborts it (a live upload sends a part every STORAGE_PART_SIZE).
    "STORAGE_ORPHAN_TTL": 3600,
    # "presigned": GET /uploads/<id>/content answers 302 to a presigned bucket URL (S3 only).
    "STORAGE_REDIRECT": None,
    # Lifetime of those presigned URLs, in seconds.
    "STORAGE_PRESIGN_SECONDS": 300,
    # s3://bucket/prefix?endpoint_url=... → /media/ serves that bucket's objects instead of
    # MEDIA_DIR (same Range/conditional answers; the WSGI fast path is then off).
    "MEDIA_URL": None,
    # --- end storage -----------------------------------------------------------
}

ENV_PREFIX = "FLASKSTREAM"


def load_config(app: Flask, test_config: Mapping[str, Any] | None) -> None:
    """Fill ``app.config`` in the documented order and resolve derived paths."""
    app.config.from_mapping(DEFAULTS)
    app.config.from_prefixed_env(ENV_PREFIX)
    if os.environ.get("DATABASE_URL") and not os.environ.get(f"{ENV_PREFIX}_DATABASE_URL"):
        app.config["DATABASE_URL"] = os.environ["DATABASE_URL"]
    if test_config is not None:
        app.config.from_mapping(test_config)

    checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not app.config["UPLOAD_DIR"]:
        app.config["UPLOAD_DIR"] = os.path.join(app.instance_path, "uploads")
    if not app.config["MEDIA_DIR"]:
        app.config["MEDIA_DIR"] = os.path.join(checkout, "media")
    if app.config["API_TOKEN"] is not None:
        app.config["API_TOKEN"] = str(app.config["API_TOKEN"])
