-- Core schema. Each pattern adds its own tables in flaskstream/<pattern>/schema.sql.
-- Every statement is idempotent: applied at each process's first connection.
CREATE TABLE IF NOT EXISTS flaskstream_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);
INSERT INTO flaskstream_meta (key, value) VALUES ('schema', '1') ON CONFLICT (key) DO NOTHING;
