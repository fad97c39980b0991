-- ETL pattern: the default target (users), the log pipeline's target (requests),
-- and the job/reject bookkeeping every worker can read.
--
-- users is shaped for bulk loads: email compares bytewise (COLLATE "C": it is
-- stored lower-cased, so only equality matters, and a libc collation made the
-- unique index ~11% of COPY's server time), and the id sequence hands each
-- session 100 values at a time (one sequence update per row was another ~8%;
-- ids may skip, as they already do after a rollback).
CREATE TABLE IF NOT EXISTS users (
    id    bigint GENERATED ALWAYS AS IDENTITY (CACHE 100) PRIMARY KEY,
    email text COLLATE "C" NOT NULL UNIQUE,
    age   integer CHECK (age BETWEEN 0 AND 150),
    name  text
);
-- Databases created by 0.1.0: same shape (once; the email index is rebuilt).
-- A speed-up must never stop a start-up: if the column cannot change (a view
-- of the site's own depends on it), it keeps its collation with a warning.
DO $$
BEGIN
    IF (SELECT collname FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation
        WHERE a.attrelid = 'users'::regclass AND a.attname = 'email') <> 'C' THEN
        BEGIN
            ALTER TABLE users ALTER COLUMN email TYPE text COLLATE "C";
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'users.email keeps its collation (%); ETL loads stay slower', SQLERRM;
        END;
    END IF;
    IF (SELECT seqcache FROM pg_sequence
        WHERE seqrelid = pg_get_serial_sequence('users', 'id')::regclass) < 100 THEN
        ALTER TABLE users ALTER COLUMN id SET CACHE 100;
    END IF;
END
$$;
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
-- The X-Request-ID of the HTTP request that ran the job (NULL from the CLI).
ALTER TABLE etl_jobs ADD COLUMN IF NOT EXISTS request_id text;
CREATE INDEX IF NOT EXISTS etl_jobs_created ON etl_jobs (created_at DESC);
CREATE TABLE IF NOT EXISTS etl_rejects (
    job_id text NOT NULL REFERENCES etl_jobs (id) ON DELETE CASCADE,
    line   bigint NOT NULL,
    reason text NOT NULL,
    text   text NOT NULL
);
CREATE INDEX IF NOT EXISTS etl_rejects_job_line ON etl_rejects (job_id, line);
-- Job leases (issue 12): the worker running a job renews lease_expires while the
-- load runs; a janitor on any worker marks a `running` job whose lease ran out as
-- `failed` (its worker was killed, or its outcome could not be recorded).
-- NULL for finished jobs and for rows written before this column existed.
ALTER TABLE etl_jobs ADD COLUMN IF NOT EXISTS lease_expires timestamptz;
CREATE INDEX IF NOT EXISTS etl_jobs_running_lease ON etl_jobs (lease_expires) WHERE status = 'running';
-- Access control (issue 15): the `sub` of the token that ran the job.
ALTER TABLE etl_jobs ADD COLUMN IF NOT EXISTS owner text;
