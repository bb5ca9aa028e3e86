-- The inbox: every event received from the other service, recorded in the same transaction
-- as its effect. `event_id` is unique, so a redelivery is recognised forever (JetStream only
-- de-duplicates inside its window); (stream_id, stream_version) gives per-stream order.
-- `seq` is the local receipt order, in which projections of foreign events are replayed.
CREATE TABLE inbox (
    seq             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        uuid        NOT NULL,
    stream_id       text        NOT NULL,
    stream_version  bigint      NOT NULL CHECK (stream_version > 0),
    event_type      text        NOT NULL,
    schema_version  integer     NOT NULL,
    payload         jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    source_position bigint      NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT inbox_event_id_key UNIQUE (event_id),
    CONSTRAINT inbox_stream_version_key UNIQUE (stream_id, stream_version)
);

-- Messages a consumer could not decode or apply, with the error; also published on the
-- consumer's dead-letter subject. Kept so nothing is silently dropped.
CREATE TABLE dead_letters (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    consumer        text        NOT NULL,
    subject         text        NOT NULL,
    stream_sequence bigint,
    headers         jsonb       NOT NULL DEFAULT '{}',
    payload         bytea       NOT NULL,
    error           text        NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now()
);
