-- +goose Up
-- The raw events, written by the archive role (`maumeter archive`, pipeline/archive) from
-- mau.events.v1 in its own consumer group: the answer to "which events made device X count in
-- October" in a dispute, and the table analysts query for behaviour (DAU, funnels) that the
-- billing record (mau_devices: one row per device-month) does not hold. Never read by billing.
--
-- Partitioned by the billing month (tenant time zone), ordered for per-tenant, per-device queries.
-- A replayed batch (the archive crashed between its insert and its offset commit) writes its
-- events again: rows fold by (tenant_id, month, app_id, guid, ts, dedup_id) when parts merge, and
-- queries that must count each event once read FINAL (docs/ANALYST.md). dedup_id is the event's
-- event_id, or partition:offset for an event sent without one (two sends of such an event are two
-- rows). Of two copies of an event (a client's retry), the one at the lower offset survives, as in
-- mau_devices: the offset a billed device's first sighting names is always an archived row.
CREATE TABLE IF NOT EXISTS events
(
    tenant_id       LowCardinality(String),
    month           LowCardinality(String) COMMENT 'billing month YYYY-MM in the tenant time zone',
    app_id          LowCardinality(String),
    guid            String,
    device_key      FixedString(16) COMMENT 'as in mau_devices: first 128 bits of SHA-256(tenant_id NUL app_id NUL guid)',
    event           Enum8('search' = 1, 'pre_download' = 2, 'open' = 3),
    mini_program_id String,
    ts              DateTime64(3, 'UTC'),
    event_id        String COMMENT 'as sent; empty when the SDK sent none',
    dedup_id        String COMMENT 'event_id, or kafka_partition:kafka_offset when empty',
    kafka_partition UInt32,
    kafka_offset    UInt64,
    archived_at     DateTime64(3, 'UTC') DEFAULT now64(3),
    first_rank      UInt64 DEFAULT 18446744073709551615 - kafka_offset COMMENT 'merge version: the copy at the lowest offset survives, as in mau_devices'
)
ENGINE = ReplacingMergeTree(first_rank)
PARTITION BY month
ORDER BY (tenant_id, month, app_id, guid, ts, dedup_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- +goose Down
DROP TABLE IF EXISTS events;
