-- Uploads pattern: one row per stored file (multipart, raw PUT, or a finished tus upload).
-- The bytes live at UPLOAD_DIR/<id>; the client's filename is metadata only.
CREATE TABLE IF NOT EXISTS uploads (
    id           text PRIMARY KEY,
    filename     text NOT NULL,
    size         bigint NOT NULL CHECK (size >= 0),
    sha256       text NOT NULL,
    content_type text NOT NULL,
    field        text,
    created      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS uploads_created_id_idx ON uploads (created DESC, id DESC);
-- Access control (issue 15): the `sub` of the token that created the upload.
ALTER TABLE uploads ADD COLUMN IF NOT EXISTS owner text;
CREATE INDEX IF NOT EXISTS uploads_owner_created_idx ON uploads (owner, created DESC, id DESC);
