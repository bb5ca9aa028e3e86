-- Positions that survive a move to another Postgres cluster.
--
-- A position is ((xid8 + xid_offset) << 20) + ordinal. Transaction ids belong to a cluster: a
-- database moved with pg_dump/pg_restore (a backup restored, a major-version upgrade, logical
-- replication to a new cluster) finds the new server's ids far below the ones its events were
-- written with. Without an offset every new event would get a position below the readers'
-- checkpoints and never be handed out. `xid_offset` is 0 until then; when the store is
-- migrated at start it raises the offset, if needed, so that every transaction from then on
-- draws positions above every stored one (EventStore::continue_positions). The table travels
-- with the dump, so offsets add up over several moves. docs/adr/0001-no-skip-positions.md
CREATE TABLE position_epoch (
    xid_offset  bigint      NOT NULL CHECK (xid_offset >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
-- Exactly one row: the append statements read it as a scalar.
CREATE UNIQUE INDEX position_epoch_one_row ON position_epoch ((true));
INSERT INTO position_epoch (xid_offset) VALUES (0);

-- With an offset the position's high bits are no longer the transaction id itself, only never
-- below it (the offset never goes below 0). Every stored row satisfied the former, stronger
-- check (equality), so the new one is added NOT VALID rather than re-checked by a scan of the
-- whole table at start; Postgres enforces it on every row written from now on.
ALTER TABLE events DROP CONSTRAINT events_position_matches_transaction;
ALTER TABLE events ADD CONSTRAINT events_position_not_below_transaction
    CHECK (position >> 20 >= transaction_id::text::bigint) NOT VALID;
