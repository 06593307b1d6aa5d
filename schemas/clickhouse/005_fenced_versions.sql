-- +goose NO TRANSACTION
-- +goose Up
-- Evidence that survives merges. mau_devices was a ReplacingMergeTree without a version column:
-- a later copy of a billed device (a retried insert, a zombie owner, a rebuild racing a close)
-- won the merge. Now the row with the lowest kafka_offset (the device's first sighting in its
-- partition) always survives: first_rank is the version ReplacingMergeTree keeps the highest
-- of. A rollup covers the devices with a row below its offsets watermark, so a merge can only
-- keep a row that every covering version already counted. ClickHouse cannot change a table's
-- engine: the table is rebuilt and swapped. Stop the counters while this runs (`maumeter
-- migrate` before the roles start, as compose and serve do).
CREATE TABLE IF NOT EXISTS mau_devices_v5
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
    kafka_offset    UInt64 COMMENT 'offset of that event: rollups cover the devices with a row below their watermark',
    inserted_at     DateTime64(3, 'UTC') DEFAULT now64(3) COMMENT 'server time of the insert: information only, never a watermark',
    first_rank      UInt64 DEFAULT 18446744073709551615 - kafka_offset COMMENT 'merge version: the lowest offset (first sighting) survives'
)
ENGINE = ReplacingMergeTree(first_rank)
ORDER BY (tenant_id, month, device_key)
SETTINGS non_replicated_deduplication_window = 1000;

INSERT INTO mau_devices_v5 (tenant_id, month, app_id, device_key, guid, first_seen_at, first_event, mini_program_id,
    kafka_partition, kafka_offset, inserted_at)
SELECT tenant_id, month, app_id, device_key, guid, first_seen_at, first_event, mini_program_id,
    kafka_partition, kafka_offset, inserted_at
FROM mau_devices;

RENAME TABLE mau_devices TO mau_devices_v1, mau_devices_v5 TO mau_devices;

DROP TABLE mau_devices_v1;

-- One writer per version. A closer writes version N with insert_deduplication_token
-- rollup/<tenant>/<month>/<N> and its own writer id, then reads the row back: a second insert
-- of the same version within the window is dropped by ClickHouse, so the one stored row names
-- the writer that won; losers re-read and restate. The window only has to cover the seconds
-- between a closer's check that N is free and its insert.
ALTER TABLE mau_rollups ADD COLUMN IF NOT EXISTS writer String DEFAULT '' COMMENT 'id of the close that wrote this version (the winner of its insert)';
ALTER TABLE mau_rollups MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE mau_rollups COMMENT COLUMN watermark 'the version covers every device with a mau_devices row below these offsets of mau.events.v1 (per partition); never lower than the previous version''s';
ALTER TABLE mau_rollups COMMENT COLUMN devices_through 'legacy (rollups before migration 005): max(inserted_at) covered; later versions leave it at 0 and use watermark';

-- Invoices carry the watermark their MAU was counted under; mau_sql reproduces it from mau_devices.
ALTER TABLE invoices ADD COLUMN IF NOT EXISTS watermark Map(UInt32, Int64) COMMENT 'the rollup version''s watermark: mau counts the devices with a row below these offsets';
ALTER TABLE invoices COMMENT COLUMN devices_through 'legacy (invoices before migration 005): the server-time bound of their mau_sql';

-- +goose Down
ALTER TABLE invoices DROP COLUMN IF EXISTS watermark;
ALTER TABLE mau_rollups DROP COLUMN IF EXISTS writer;
