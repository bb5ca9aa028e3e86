-- Repairing what the broker lost (docs/adr/0008-repair-from-the-store.md).
--
-- A consumer compares the producer's watermark ("N events up to position H have been
-- published") with what it accounts for up to H: inbox rows by their source position, and the
-- producer's events it dead-lettered for good. So both are found by source position, and a
-- dead letter names the event it held when the message decoded (NULL when it did not).
CREATE INDEX inbox_source_position_idx ON inbox (source_position);
ALTER TABLE dead_letters ADD COLUMN event_id uuid;
ALTER TABLE dead_letters ADD COLUMN source_position bigint;
CREATE INDEX dead_letters_source_position_idx ON dead_letters (source_position)
    WHERE source_position IS NOT NULL;
CREATE INDEX dead_letters_event_id_idx ON dead_letters (event_id) WHERE event_id IS NOT NULL;
