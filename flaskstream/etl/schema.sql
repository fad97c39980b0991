-- ETL pattern: the default target (users), the log pipeline's target (requests),
-- and the job/reject bookkeeping every worker can read.
CREATE TABLE IF NOT EXISTS users (
    id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email text NOT NULL UNIQUE,
    age   integer CHECK (age BETWEEN 0 AND 150),
    name  text
);
CREATE TABLE IF NOT EXISTS requests (
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
CREATE TABLE IF NOT EXISTS etl_jobs (
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
CREATE INDEX IF NOT EXISTS etl_jobs_created ON etl_jobs (created_at DESC);
CREATE TABLE IF NOT EXISTS etl_rejects (
    job_id text NOT NULL REFERENCES etl_jobs (id) ON DELETE CASCADE,
    line   bigint NOT NULL,
    reason text NOT NULL,
    text   text NOT NULL
);
CREATE INDEX IF NOT EXISTS etl_rejects_job_line ON etl_rejects (job_id, line);
