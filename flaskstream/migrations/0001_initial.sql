-- 0001 initial: every table of flaskstream 0.2 in its own schema (@schema@ is the
-- quoted DB_SCHEMA). Before this file runs, flaskstream.migrate.adopt_0_1 has moved
-- the tables of a 0.1.x install out of `public` (recognised by public.flaskstream_meta)
-- with their rows, ids and sequences; hence CREATE ... IF NOT EXISTS, and the columns
-- added after 0.1 come as ADD COLUMN IF NOT EXISTS. Later migrations need neither.
-- Runs in one transaction with search_path = pg_catalog: an unqualified name fails.

CREATE TABLE IF NOT EXISTS @schema@.flaskstream_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);
INSERT INTO @schema@.flaskstream_meta (key, value) VALUES ('schema', '1') ON CONFLICT (key) DO NOTHING;

-- ETL pattern: the default target (users), the log pipeline's target (requests),
-- and the job/reject bookkeeping every worker can read.
--
-- users is shaped for bulk loads: email compares bytewise (COLLATE "C": it is
-- stored lower-cased, so only equality matters, and a libc collation made the
-- unique index ~11% of COPY's server time), and the id sequence hands each
-- session 100 values at a time (one sequence update per row was another ~8%;
-- ids may skip, as they already do after a rollback).
CREATE TABLE IF NOT EXISTS @schema@.users (
    id    bigint GENERATED ALWAYS AS IDENTITY (CACHE 100) PRIMARY KEY,
    email text COLLATE "C" NOT NULL UNIQUE,
    age   integer CHECK (age BETWEEN 0 AND 150),
    name  text
);
CREATE TABLE IF NOT EXISTS @schema@.requests (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time        timestamptz NOT NULL,
    remote_addr text,
    method      text NOT NULL,
    path        text NOT NULL,
    protocol    text,
    status      integer NOT NULL,
    bytes       bigint,
    referrer    text,
    agent       text
);
CREATE TABLE IF NOT EXISTS @schema@.etl_jobs (
    id                text PRIMARY KEY,
    table_name        text NOT NULL,
    mode              text NOT NULL DEFAULT 'insert',
    source            text,
    status            text NOT NULL DEFAULT 'running',
    error             text,
    bytes_read        bigint NOT NULL DEFAULT 0,
    rows_read         bigint NOT NULL DEFAULT 0,
    rows_loaded       bigint NOT NULL DEFAULT 0,
    rows_rejected     bigint NOT NULL DEFAULT 0,
    rows_committed    bigint NOT NULL DEFAULT 0,
    checkpoint_line   bigint,
    checkpoint_offset bigint,
    worker            text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz
);
-- The X-Request-ID of the HTTP request that ran the job (NULL from the CLI).
ALTER TABLE @schema@.etl_jobs ADD COLUMN IF NOT EXISTS request_id text;
-- Job leases (issue 12): the worker running a job renews lease_expires while the
-- load runs; a janitor on any worker marks a `running` job whose lease ran out as
-- `failed` (its worker was killed, or its outcome could not be recorded).
-- NULL for finished jobs and for rows written by 0.1.
ALTER TABLE @schema@.etl_jobs ADD COLUMN IF NOT EXISTS lease_expires timestamptz;
CREATE INDEX IF NOT EXISTS etl_jobs_created ON @schema@.etl_jobs (created_at DESC);
CREATE INDEX IF NOT EXISTS etl_jobs_running_lease ON @schema@.etl_jobs (lease_expires)
    WHERE status = 'running';
CREATE TABLE IF NOT EXISTS @schema@.etl_rejects (
    job_id text NOT NULL REFERENCES @schema@.etl_jobs (id) ON DELETE CASCADE,
    line   bigint NOT NULL,
    reason text NOT NULL,
    text   text NOT NULL
);
CREATE INDEX IF NOT EXISTS etl_rejects_job_line ON @schema@.etl_rejects (job_id, line);
-- Access control (issue 15): the `sub` of the token that ran the job.
ALTER TABLE @schema@.etl_jobs ADD COLUMN IF NOT EXISTS owner text;

-- Events: the store behind SSE replay and the source the LISTEN connection reads.
-- Ids come from one sequence and are assigned under a transaction-level advisory
-- lock (see events/store.py), so ids commit in increasing order: a reader that has
-- seen id N has seen every event with a smaller id.
CREATE TABLE IF NOT EXISTS @schema@.events (
    id         bigserial PRIMARY KEY,
    channel    text NOT NULL,
    event      text,
    data       text NOT NULL,
    idem_key   text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS events_channel_id ON @schema@.events (channel, id);
CREATE INDEX IF NOT EXISTS events_created_at ON @schema@.events (created_at);
CREATE UNIQUE INDEX IF NOT EXISTS events_channel_idem_key ON @schema@.events (channel, idem_key)
    WHERE idem_key IS NOT NULL;
-- Highest id removed by retention, per channel ('*' = marks that were themselves
-- trimmed): a Last-Event-ID below it may have missed events, so it gets `reset`.
CREATE TABLE IF NOT EXISTS @schema@.events_pruned (
    channel    text PRIMARY KEY,
    through_id bigint NOT NULL,
    pruned_at  timestamptz NOT NULL DEFAULT now()
);

-- Resumable uploads (tus 1.0): one row per upload resource at /uploads/tus/<id>.
-- The bytes received so far live in UPLOAD_DIR/.staging/<staging_name>; on completion
-- they move to UPLOAD_DIR/<id> and a row goes into `uploads` (same id).
-- upload_offset is the durable offset: bytes up to it were fsync'd before it was written.
-- lock_token/lock_expires are a lease: the request holding it is the only writer;
-- release_requested asks the holder to stop (takeover by a newer request).
CREATE TABLE IF NOT EXISTS @schema@.tus_uploads (
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
CREATE INDEX IF NOT EXISTS tus_uploads_active_expires_idx ON @schema@.tus_uploads (expires)
    WHERE state = 'active';
CREATE INDEX IF NOT EXISTS tus_uploads_updated_idx ON @schema@.tus_uploads (updated)
    WHERE state <> 'active';
-- Access control (issue 15): the `sub` of the token that created the upload.
ALTER TABLE @schema@.tus_uploads ADD COLUMN IF NOT EXISTS owner text;

-- Uploads pattern: one row per stored file (multipart, raw PUT, or a finished tus upload).
-- The bytes live at UPLOAD_DIR/<id>; the client's filename is metadata only.
CREATE TABLE IF NOT EXISTS @schema@.uploads (
    id           text PRIMARY KEY,
    filename     text NOT NULL,
    size         bigint NOT NULL CHECK (size >= 0),
    sha256       text NOT NULL,
    content_type text NOT NULL,
    field        text,
    created      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS uploads_created_id_idx ON @schema@.uploads (created DESC, id DESC);
-- Access control (issue 15): the `sub` of the token that created the upload.
ALTER TABLE @schema@.uploads ADD COLUMN IF NOT EXISTS owner text;
CREATE INDEX IF NOT EXISTS uploads_owner_created_idx ON @schema@.uploads (owner, created DESC, id DESC);

-- Access control (issue 15): revoked token ids (`flask auth revoke JTI`).
CREATE TABLE IF NOT EXISTS @schema@.auth_revoked (
    jti     text PRIMARY KEY,
    revoked timestamptz NOT NULL DEFAULT now()
);
