"""The per-route policy: what each endpoint needs, checked before its view runs.

One table, by endpoint, so that every route is covered and a route added later is
refused in token mode unless a claim covers its path (the generic rule fails closed):

- public always: the dashboard, static files, health, metrics (own token), the session.
- subscribe: every channel asked for is in ``subscribe``, or is the progress channel
  (``uploads.<id>``, ``etl.<id>``) of an object the caller owns.
- publish: the channel is in ``publish``.
- listings (``GET /uploads``, ``GET /etl/jobs``): any valid token; the view lists the
  caller's own objects unless ``read`` covers the whole listing (``auth.listing_owner``).
- objects (``/uploads/<id>``, tus, ``/etl/jobs/<id>``): ``read``/``write`` covers the
  path, or the caller owns the object.
- creations: ``write`` covers the collection (``/uploads``, tus included; ``/etl/jobs``).
- everything else: ``read`` (GET/HEAD) or ``write`` covers ``request.path``.

``after_create`` records the owner of what a 201 created and adds a short-lived
signed read URL to the answer, so views stay free of access code.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from flask import g, request
from werkzeug.wrappers import Response

from flaskstream import auth, db
from flaskstream.access.claims import Claims

log = logging.getLogger(__name__)

PUBLIC = frozenset({"static", "core.index", "core.healthz", "ops.livez", "ops.readyz",
                    "ops.metrics_view", "access.session", "access.end_session"})
SUBSCRIBE = frozenset({"events.subscribe_one", "events.subscribe_many"})
ANY_TOKEN = frozenset({"events.tick", "events.tokens", "uploads.list_all", "etl.list_jobs"})
# endpoint → (kind of object, view argument naming it)
OWNED = {
    "uploads.get_one": ("upload", "upload_id"), "uploads.content": ("upload", "upload_id"),
    "uploads.delete_one": ("upload", "upload_id"), "tus.upload": ("tus", "upload_id"),
    "etl.show_job": ("job", "job_id"), "etl.job_rejects": ("job", "job_id"),
}
OWNER_SQL = {
    # A finished tus upload becomes an `uploads` row with the same id; its owner stays on tus.
    "upload": "SELECT owner FROM {uploads} WHERE id = :id UNION ALL "
              "SELECT owner FROM {tus_uploads} WHERE id = :id",
    "tus": "SELECT owner FROM {tus_uploads} WHERE id = :id",
    "job": "SELECT owner FROM {etl_jobs} WHERE id = :id",
}
PROGRESS_CHANNELS = {"uploads": "upload", "etl": "job"}
# A creation is a write to its collection: `write: ["/uploads"]` may add uploads (POST, or
# PUT /uploads/<name>) and then delete only its own; `/uploads/*` may delete any.
CREATION_PATHS = {"uploads.create_uploads": "/uploads", "uploads.put_upload": "/uploads",
                  "tus.creation": "/uploads", "etl.create_job": "/etl/jobs"}
OBJECT_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def owner_of(kind: str, object_id: str) -> str | None:
    """The recorded owner (None: no such object, made without a token, or an odd id)."""
    if not OBJECT_ID.fullmatch(object_id):
        return None
    with db.connection() as con:
        tables = {t: db.qualified(t) for t in ("uploads", "tus_uploads", "etl_jobs")}
        rows = con.run(OWNER_SQL[kind].format(**tables), id=object_id)
    return next((row[0] for row in rows if row[0] is not None), None)


def _channel_owner(channel: str) -> str | None:
    prefix, _, rest = channel.partition(".")
    kind = PROGRESS_CHANNELS.get(prefix)
    return owner_of(kind, rest) if kind and rest else None


def _check_subscribe(found: Claims) -> None:
    args = request.view_args or {}
    channels = [args["channel"]] if "channel" in args else request.args.getlist("channel")
    for channel in dict.fromkeys(channels):
        if not found.can_subscribe(channel) and not found.owns(_channel_owner(channel)):
            raise auth.forbidden(f"the token's subscribe claim does not cover {channel!r}")


def enforce() -> None:
    """``before_request``: 401 without a needed token, 403 when its claims fall short."""
    endpoint = request.endpoint
    if endpoint is None or endpoint in PUBLIC or request.method == "OPTIONS":
        return  # 404/405 as usual; CORS preflights never carry credentials
    writing = request.method in auth.WRITE_METHODS
    found = auth.require_claims("WRITE" if writing else "READ")
    if found is None:
        return  # this kind of request is public
    g.access_checked = True
    if found.admin or endpoint in ANY_TOKEN:
        return
    if endpoint in SUBSCRIBE:
        return _check_subscribe(found)
    if endpoint == "events.publish_route":
        channel = (request.view_args or {}).get("channel", "")
        if not found.can_publish(channel):
            raise auth.forbidden(f"the token's publish claim does not cover {channel!r}")
        return
    path = CREATION_PATHS.get(endpoint, request.path)
    allowed = found.can_write(path) if writing else found.can_read(path)
    if not allowed and endpoint in OWNED:
        kind, arg = OWNED[endpoint]
        allowed = found.owns(owner_of(kind, str((request.view_args or {}).get(arg, ""))))
    if not allowed:
        verb = "write" if writing else "read"
        raise auth.forbidden(f"the token's {verb} claim does not cover {path}")


# --- what a creation records -------------------------------------------------------

CREATIONS = frozenset({"uploads.create_uploads", "uploads.put_upload", "tus.creation",
                       "etl.create_job"})


def _record_owner(table: str, ids: list[str], owner: str) -> None:
    with db.connection() as con:
        con.run(f"UPDATE {db.qualified(table)} SET owner = :owner WHERE id = ANY(CAST(:ids AS text[]))",
                owner=owner, ids=ids)


def _json_body(response: Response) -> Any:
    try:
        return json.loads(response.get_data())
    except ValueError:
        return None


def after_create(response: Response) -> Response:
    """``after_request``: the creator's ``sub`` becomes the owner; 201s carry a signed read URL.

    The owner is written right after the object's own insert (a failure leaves an
    object only the admin sees, logged: never one another caller could read)."""
    endpoint = request.endpoint
    if endpoint not in CREATIONS or response.status_code >= 300 or response.is_streamed:
        return response
    try:
        if endpoint == "tus.creation":
            _tus_created(response, auth.request_owner())
        else:
            _json_created(response, endpoint, auth.request_owner())
    except (db.DatabaseError, db.InterfaceError, OSError, TimeoutError) as exc:
        log.warning("could not record the owner of a new %s: %s", endpoint, exc)
    return response


def _tus_created(response: Response, owner: str | None) -> None:
    upload_id = response.headers.get("Location", "").rstrip("/").rsplit("/", 1)[-1]
    if owner and upload_id:
        _record_owner("tus_uploads", [upload_id], owner)
    url = auth.mint_signed_url(f"/uploads/{upload_id}/content") if auth.token_mode("READ") else None
    if url:
        response.headers["Upload-Read-URL"] = url


def _json_created(response: Response, endpoint: str, owner: str | None) -> None:
    """Owner for the uploads (or ETL job) of a JSON answer; ``signed_url`` beside each."""
    body = _json_body(response)
    if not isinstance(body, dict):
        return
    if endpoint == "etl.create_job":
        job_id = body.get("job")
        if not isinstance(job_id, str):
            return
        if owner:
            _record_owner("etl_jobs", [job_id], owner)
        entries = [(body, f"/etl/jobs/{job_id}")]
    else:
        files = body.get("files", [body])
        if owner:
            _record_owner("uploads", [f["id"] for f in files], owner)
        entries = [(f, f"/uploads/{f['id']}/content") for f in files]
    if not auth.token_mode("READ"):
        return  # public reads: the object's `url` reads it
    for entry, path in entries:
        entry["signed_url"] = auth.mint_signed_url(path)
    if any(entry["signed_url"] for entry, _ in entries):
        response.set_data(json.dumps(body))
