-- The products read model, kept by the `products` projection from the product streams.
-- `version` is the product stream's version the row reflects, so a client that just wrote
-- version N can wait for the row to reach it. Rebuilt at will by replaying the product events.
CREATE TABLE products (
    id               uuid        PRIMARY KEY,
    name             text        NOT NULL,
    price_cents      bigint      NOT NULL,
    stock_available  bigint      NOT NULL,
    stock_reserved   bigint      NOT NULL,
    version          bigint      NOT NULL,
    -- When the last applied event was recorded (not when it was applied), so a rebuild
    -- reproduces the live rows exactly.
    updated_at       timestamptz NOT NULL
);

-- GET /products lists by name, then id.
CREATE INDEX products_name_id_idx ON products (name, id);
