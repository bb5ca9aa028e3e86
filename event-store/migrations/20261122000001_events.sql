-- The event store: one table of events per service database, plus checkpoints.
--
-- `position` is the global order. It is derived from the writing transaction's id:
-- (xid8 << 20) + ordinal within the transaction. Positions therefore grow with transaction
-- ids, and a reader that only hands out rows whose transaction id is below the oldest
-- transaction still running (pg_snapshot_xmin) can never later see a row below a position it
-- already returned. See docs/adr/0001-no-skip-positions.md. Positions are sparse by design;
-- nothing may assume they are contiguous.
CREATE TABLE events (
    position        bigint      PRIMARY KEY,
    stream_id       text        NOT NULL,
    stream_version  bigint      NOT NULL CHECK (stream_version > 0),
    event_id        uuid        NOT NULL,
    event_type      text        NOT NULL,
    schema_version  integer     NOT NULL DEFAULT 1,
    payload         jsonb       NOT NULL,
    metadata        jsonb       NOT NULL DEFAULT '{}',
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version),
    CONSTRAINT events_position_matches_transaction
        CHECK (position >> 20 = transaction_id::text::bigint)
);

-- Where each reader (the relay, each projection, each reaction) has got to.
CREATE TABLE checkpoints (
    name        text        PRIMARY KEY,
    position    bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
