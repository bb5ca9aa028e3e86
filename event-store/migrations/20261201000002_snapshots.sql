-- Snapshots: an aggregate's state folded up to a stream version, so loading it reads the
-- snapshot and only the events after it, however long the stream's history. A snapshot is a
-- cache of what the events say: it can be deleted at any time, and one whose schema_version
-- is not the one the code folds into is ignored (and replaced by a newer one later).
CREATE TABLE snapshots (
    stream_id       text        PRIMARY KEY,
    stream_version  bigint      NOT NULL CHECK (stream_version > 0),
    schema_version  integer     NOT NULL,
    state           jsonb       NOT NULL,
    taken_at        timestamptz NOT NULL DEFAULT now()
);
