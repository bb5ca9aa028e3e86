-- Idempotency-Key: what a client's key was used for, and the response kept for it.
-- A row is claimed (in flight: status NULL, locked_until a lease) in a short transaction of its
-- own before the command runs; the response is stored in the command's append transaction.
-- `generation` is the time of the key's first claim: it seeds the command's event ids and
-- survives a takeover of a lapsed lease, but a key reused after its expiry starts a new one.
CREATE TABLE idempotency_keys (
    key          text PRIMARY KEY,
    fingerprint  text NOT NULL,
    generation   timestamptz NOT NULL DEFAULT now(),
    holder       uuid NOT NULL,
    locked_until timestamptz NOT NULL,
    status       int2,
    location     text,
    body         bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);

CREATE INDEX idempotency_keys_expires_at ON idempotency_keys (expires_at);
