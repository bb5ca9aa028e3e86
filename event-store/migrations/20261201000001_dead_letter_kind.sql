-- Why a message was dead-lettered, so readiness and operators can tell a forged or conflicting
-- event (two different events claiming one stream version) from a malformed one.
--   poison            the message cannot be decoded or a handler refused it
--   version_conflict  another event is already recorded at its stream version
--   out_of_order      its stream's predecessor never arrived while it had deliveries left
--   exhausted         a handler kept failing until the message's deliveries ran out
ALTER TABLE dead_letters ADD COLUMN kind text NOT NULL DEFAULT 'poison';
CREATE INDEX dead_letters_kind_idx ON dead_letters (kind, id);
