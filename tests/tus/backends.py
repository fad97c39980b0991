"""What holds an unfinished tus upload's bytes, on either backend (``storage_backend``).

Local: the staging file. S3: the multipart upload of the final key, its tail
objects (``<id>.part.<n>``) and its ``<id>.info`` marker (``storage/s3tus.py``).
"""

from __future__ import annotations

from typing import Any

from flaskstream.storage import s3tus
from flaskstream.tus import store


def backend(app: Any) -> Any:
    return app.extensions["flaskstream"]["storage"]


def unfinished(app: Any, row: store.TusUpload) -> list[str]:
    """The things that hold ``row``'s unfinished bytes now ([] once nothing is left)."""
    files = backend(app)
    if files.kind != "s3":
        path = row.staging_path(app.config["UPLOAD_DIR"])
        return [path.name] if path.exists() else []
    obj = files.object_key(row.id)
    listed = files.client.list_objects_v2(Bucket=files.bucket, Prefix=obj + ".")
    found = [item["Key"] for item in listed.get("Contents", [])]
    uploads = files.client.list_multipart_uploads(Bucket=files.bucket, Prefix=obj)
    return sorted(found + [f"mpu:{u['Key']}" for u in uploads.get("Uploads", [])])


def kept_bytes(app: Any, row: store.TusUpload) -> int:
    """Every byte stored for ``row``: the staging file's size, or (S3) its parts and tails."""
    files = backend(app)
    if files.kind != "s3":
        return row.staging_path(app.config["UPLOAD_DIR"]).stat().st_size
    _, upload_id = s3tus.parse_name(row.staging_name)
    obj = files.object_key(row.id)
    parts = files.client.list_parts(Bucket=files.bucket, Key=obj, UploadId=upload_id)
    tails = files.client.list_objects_v2(Bucket=files.bucket, Prefix=obj + s3tus.TAIL)
    return int(sum(p["Size"] for p in parts.get("Parts", []))
               + sum(t["Size"] for t in tails.get("Contents", [])))


def durable_bytes(client: Any, bucket: str, obj: str, name: str, offset: int) -> int:
    """How many of the first ``offset`` bytes the bucket really holds for an upload: the
    whole parts before it plus its tail object (``offset`` when the offset is durable)."""
    part_size, upload_id = s3tus.parse_name(name)
    whole, rest = divmod(offset, part_size)
    parts = client.list_parts(Bucket=bucket, Key=obj, UploadId=upload_id).get("Parts", [])
    size = sum(p["Size"] for p in parts if p["PartNumber"] <= whole and p["Size"] == part_size)
    if rest:
        tails = client.list_objects_v2(Bucket=bucket, Prefix=f"{obj}{s3tus.TAIL}{whole + 1}")
        size += min([rest, *[int(t["Size"]) for t in tails.get("Contents", [])]]) \
            if tails.get("Contents") else 0
    return int(size)
