-- Access control (issue 15): revoked token ids (`flask auth revoke JTI`).
-- Owner columns live with their tables (uploads/, tus/, etl/ schema.sql).
CREATE TABLE IF NOT EXISTS auth_revoked (
    jti     text PRIMARY KEY,
    revoked timestamptz NOT NULL DEFAULT now()
);
