-- Prices carry a currency since ProductCreated and PriceChanged version 2. Every row written
-- before was from version-1 events, whose prices are in USD (their upcast says the same).
ALTER TABLE products ADD COLUMN currency text NOT NULL DEFAULT 'USD';
