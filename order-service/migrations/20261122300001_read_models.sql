-- order-service's read models. Both can be dropped and rebuilt by replay: `orders` from this
-- service's own events, `catalog_products` from product-service's events held in the inbox.
-- `version` is the version of the source stream the row reflects; readers use it to wait for
-- their own writes (`?min_version=`).

-- One row per order, the fold of stream `order-<id>`.
CREATE TABLE orders (
    order_id          uuid        PRIMARY KEY,
    customer_id       text        NOT NULL,
    status            text        NOT NULL
        CHECK (status IN ('pending', 'confirmed', 'rejected', 'cancelled')),
    -- [{ product_id, quantity, unit_price_cents }], as placed.
    lines             jsonb       NOT NULL,
    total_cents       bigint      NOT NULL,
    rejection_reason  text,
    version           bigint      NOT NULL CHECK (version > 0),
    -- When OrderPlaced was recorded: the event's time, not the projector's, so a rebuild
    -- produces the same rows.
    placed_at         timestamptz NOT NULL
);

-- Newest first, per customer and overall.
CREATE INDEX orders_customer_placed_idx ON orders (customer_id, placed_at DESC, order_id DESC);
CREATE INDEX orders_placed_idx ON orders (placed_at DESC, order_id DESC);

-- order-service's local copy of product-service's catalogue, one row per product stream.
CREATE TABLE catalog_products (
    product_id       uuid    PRIMARY KEY,
    name             text    NOT NULL,
    price_cents      bigint  NOT NULL,
    stock_available  bigint  NOT NULL,
    available        boolean NOT NULL,
    version          bigint  NOT NULL CHECK (version > 0)
);

CREATE INDEX catalog_products_name_idx ON catalog_products (name, product_id);
