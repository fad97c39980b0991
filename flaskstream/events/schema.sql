-- Events: the store behind SSE replay and the source the LISTEN connection reads.
-- Ids come from one sequence and are assigned under a transaction-level advisory
-- lock (see events/store.py), so ids commit in increasing order: a reader that has
-- seen id N has seen every event with a smaller id.
CREATE TABLE IF NOT EXISTS events (
    id         bigserial PRIMARY KEY,
    channel    text NOT NULL,
    event      text,
    data       text NOT NULL,
    idem_key   text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS events_channel_id ON events (channel, id);
CREATE INDEX IF NOT EXISTS events_created_at ON events (created_at);
CREATE UNIQUE INDEX IF NOT EXISTS events_channel_idem_key ON events (channel, idem_key) WHERE idem_key IS NOT NULL;
-- Highest id removed by retention, per channel ('*' = marks that were themselves
-- trimmed): a Last-Event-ID below it may have missed events, so it gets `reset`.
CREATE TABLE IF NOT EXISTS events_pruned (
    channel    text PRIMARY KEY,
    through_id bigint NOT NULL,
    pruned_at  timestamptz NOT NULL DEFAULT now()
);
