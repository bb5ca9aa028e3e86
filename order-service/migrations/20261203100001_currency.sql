-- Prices carry a currency since product-service's ProductCreated and PriceChanged, and this
-- service's OrderPlaced, reached version 2. Rows written before came from version-1 events,
-- whose prices are in USD (their upcasts say the same).
ALTER TABLE orders ADD COLUMN currency text NOT NULL DEFAULT 'USD';
ALTER TABLE catalog_products ADD COLUMN currency text NOT NULL DEFAULT 'USD';
