-- +goose NO TRANSACTION
-- +goose Up
-- When the events producer changed its partitioner (docs/ARCHITECTURE.md, "Partitioner"): from
-- kafka-go's Hash (FNV-1a) to Murmur2Balancer, the Java client's. A device's events may then
-- land on another partition than before, so in the tenant-months that were open across the
-- change a device can be in two partitions' exact sets. The counter answers the real-time read
-- of those months with uniqExact over mau_devices instead of the sum of its sets; the billed
-- MAU is uniqExact over mau_devices anyway. Recorded only when devices were already counted
-- (a new installation starts on murmur2 and has nothing to move).
CREATE TABLE IF NOT EXISTS kafka_partitioner_changes
(
    partitioner LowCardinality(String) COMMENT 'the partitioner of the events producer from this instant on',
    since       DateTime64(3, 'UTC') COMMENT 'when the change was deployed (this migration applied)',
    note        String
)
ENGINE = MergeTree
ORDER BY since;

INSERT INTO kafka_partitioner_changes (partitioner, since, note)
SELECT 'murmur2', now64(3), 'migration 008: events producer switched from FNV-1a (kafka.Hash) to murmur2 (kafka.Murmur2Balancer)'
FROM (SELECT count() AS n FROM mau_devices) WHERE n > 0;

-- +goose Down
DROP TABLE IF EXISTS kafka_partitioner_changes;
