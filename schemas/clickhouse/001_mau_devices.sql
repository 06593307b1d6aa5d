-- +goose NO TRANSACTION
-- +goose Up
-- The billing record: one row per device the first time it is seen in a tenant's billing month.
-- A disputed bill is answered by exporting this table. The counter may write a row twice after
-- a crash or a rebalance (at-least-once); ReplacingMergeTree folds such copies, and MAU is
-- always uniqExact(device_key), which a copy cannot change.
CREATE TABLE IF NOT EXISTS mau_devices
(
    tenant_id       LowCardinality(String),
    month           LowCardinality(String) COMMENT 'billing month YYYY-MM in the tenant time zone',
    app_id          LowCardinality(String),
    device_key      FixedString(16) COMMENT 'first 128 bits of SHA-256(tenant_id NUL app_id NUL guid)',
    guid            String,
    first_seen_at   DateTime64(3, 'UTC') COMMENT 'ts of the first event of the device in the month',
    first_event     Enum8('search' = 1, 'pre_download' = 2, 'open' = 3),
    mini_program_id String,
    kafka_partition UInt32 COMMENT 'partition of mau.events.v1 that carried the event',
    kafka_offset    UInt64,
    inserted_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (tenant_id, month, device_key);

-- +goose Down
DROP TABLE IF EXISTS mau_devices;
