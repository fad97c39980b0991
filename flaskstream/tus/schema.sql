-- Resumable uploads (tus 1.0): one row per upload resource at /uploads/tus/<id>.
-- The bytes received so far live in UPLOAD_DIR/.staging/<staging_name>; on completion
-- they move to UPLOAD_DIR/<id> and a row goes into `uploads` (same id).
-- upload_offset is the durable offset: bytes up to it were fsync'd before it was written.
-- lock_token/lock_expires are a lease: the request holding it is the only writer;
-- release_requested asks the holder to stop (takeover by a newer request).
CREATE TABLE IF NOT EXISTS tus_uploads (
    id                text PRIMARY KEY,
    upload_length     bigint CHECK (upload_length >= 0),
    upload_offset     bigint NOT NULL DEFAULT 0 CHECK (upload_offset >= 0),
    metadata          text,
    filename          text NOT NULL,
    content_type      text NOT NULL,
    staging_name      text NOT NULL,
    state             text NOT NULL DEFAULT 'active',
    created           timestamptz NOT NULL DEFAULT now(),
    updated           timestamptz NOT NULL DEFAULT now(),
    expires           timestamptz NOT NULL,
    lock_token        text,
    lock_expires      timestamptz,
    release_requested timestamptz,
    CONSTRAINT tus_uploads_state_check CHECK (state IN ('active', 'done', 'terminated', 'expired'))
);
CREATE INDEX IF NOT EXISTS tus_uploads_active_expires_idx ON tus_uploads (expires) WHERE state = 'active';
CREATE INDEX IF NOT EXISTS tus_uploads_updated_idx ON tus_uploads (updated) WHERE state <> 'active';
-- Access control (issue 15): the `sub` of the token that created the upload.
ALTER TABLE tus_uploads ADD COLUMN IF NOT EXISTS owner text;
