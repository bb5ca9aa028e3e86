-- Units reserved and released per product per UTC day (of the event's recording), kept by the
-- `product_sales_daily` projection from StockReserved and StockReleased: a read model across
-- a product's whole history, not one row per stream, so a projector keeps it from its own
-- checkpoint rather than the append's transaction. Rebuilt at will by replaying the store.
CREATE TABLE product_sales_daily (
    product_id uuid   NOT NULL,
    day        date   NOT NULL,
    reserved   bigint NOT NULL DEFAULT 0,
    released   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (product_id, day)
);
