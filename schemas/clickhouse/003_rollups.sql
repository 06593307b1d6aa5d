-- +goose NO TRANSACTION
-- +goose Up
-- The counter's flush protocol: at every flush, for each (tenant, month) a partition touched,
-- the partition's exact-set size and its HyperLogLog sketches (pkg/sketch binary format),
-- written after the flush's mau_devices rows and before its offset commit. The highest version
-- of a (tenant, month, partition) is that partition's current state: on assignment the counter
-- reloads its sketches from it, and MAU reads of partitions this process does not own sum it.
CREATE TABLE IF NOT EXISTS mau_partition_rollups
(
    tenant_id       LowCardinality(String),
    month           LowCardinality(String),
    kafka_partition UInt32,
    version         UInt64 COMMENT 'flush time in ns since the epoch; the highest is current',
    next_offset     Int64 COMMENT 'every message below this offset is reflected',
    exact_devices   UInt64 COMMENT 'size of the partition exact set for the tenant-month',
    hll_estimate    UInt64 COMMENT 'estimate of the partition tenant-month sketch',
    sketches        String COMMENT 'pkg/sketch binary: tenant-month, per app, per mini program, per day',
    written_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, month, kafka_partition);

-- Monthly rollups: version 1 is written when the month closes, each later version is a
-- restatement after late devices. The billed figure is mau (uniqExact over mau_devices); the
-- in-memory sum and the HLL estimate are recorded beside it as cross-checks.
CREATE TABLE IF NOT EXISTS mau_rollups
(
    tenant_id          LowCardinality(String),
    month              LowCardinality(String),
    version            UInt32,
    kind               Enum8('close' = 1, 'restatement' = 2),
    mau                UInt64 COMMENT 'uniqExact(device_key) over mau_devices: the billed MAU',
    mau_memory         UInt64 COMMENT 'sum over partitions of the exact sets at close',
    hll_estimate       UInt64 COMMENT 'estimate of the merged tenant-month sketch',
    hll_relative_error Float64 COMMENT 'standard error of the sketch; beyond 3 of it is a disagreement',
    mau_by_app         Map(String, UInt64) COMMENT 'exact MAU per app, from mau_devices',
    dau                Map(String, UInt64) COMMENT 'estimated daily active devices per day (tenant zone)',
    sketches           String COMMENT 'merged pkg/sketch binary',
    devices_through    DateTime64(3, 'UTC') COMMENT 'max(inserted_at) of the mau_devices rows covered',
    watermark          Map(UInt32, Int64) COMMENT 'end offsets of mau.events.v1 when the close began',
    closed_at          DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (tenant_id, month, version);

-- The current rollup of every closed tenant-month.
CREATE VIEW IF NOT EXISTS mau_rollups_latest AS
SELECT
    tenant_id,
    month,
    max(version)                  AS latest_version,
    argMax(kind, version)         AS kind,
    argMax(mau, version)          AS mau,
    argMax(mau_memory, version)   AS mau_memory,
    argMax(hll_estimate, version) AS hll_estimate,
    argMax(closed_at, version)    AS closed_at
FROM mau_rollups
GROUP BY tenant_id, month;

-- +goose Down
DROP VIEW IF EXISTS mau_rollups_latest;
DROP TABLE IF EXISTS mau_rollups;
DROP TABLE IF EXISTS mau_partition_rollups;
