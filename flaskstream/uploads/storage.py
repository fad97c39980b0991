"""The uploads pattern's storage names, kept importable from here.

The code moved to ``flaskstream/storage/`` (the interface, ``base.py``; today's
filesystem behaviour, ``local.py``; S3, ``s3.py``) and the rows and batch commit to
``records.py``. Uploads, tus and the tests import these names from this module,
so it re-exports them.
"""

from __future__ import annotations

from flaskstream.storage.base import (
    NO_SPACE_ERRNOS,
    InsufficientStorage,
    fsync_dir,
    gevent_threadpool,
    hash_file,
    run_blocking,
)
from flaskstream.storage.local import (
    FILE_MODE,
    STAGING_DIRNAME,
    STAGING_SUFFIX,
    LocalStorage,
    StagingFile,
    owner_tag,
    staging_dir,
    staging_host,
    sweep_staging,
)
from flaskstream.uploads.records import (
    COLUMNS,
    Staged,
    Upload,
    commit_staged,
    delete_upload,
    discard_staged,
    final_path,
    get_upload,
    insert_uploads,
    is_upload_id,
    list_uploads,
    new_upload_id,
)

__all__ = [
    "COLUMNS", "FILE_MODE", "NO_SPACE_ERRNOS", "STAGING_DIRNAME", "STAGING_SUFFIX",
    "InsufficientStorage", "LocalStorage", "Staged", "StagingFile", "Upload", "commit_staged",
    "delete_upload", "discard_staged", "final_path", "fsync_dir", "get_upload",
    "gevent_threadpool", "hash_file", "insert_uploads", "is_upload_id", "list_uploads",
    "new_upload_id", "owner_tag", "run_blocking", "staging_dir", "staging_host",
    "sweep_staging",
]
