-- +goose NO TRANSACTION
-- +goose Up
-- Kafka records the counters never read (docs/OPERATIONS.md, "Lost offsets"). When retention
-- (or anyone) deleted records of the events topic before the counters' group consumed them, the
-- counter stops that partition and reports the exact range; an operator who accepts the loss
-- runs `maumeter offsets accept-loss --partition P`, which records it here. The counter that
-- owns the partition sees the row, commits the partition at to_offset and resumes. The table is
-- the auditor's record of every event range that was never counted, and by whose decision.
CREATE TABLE IF NOT EXISTS kafka_offset_losses
(
    topic           LowCardinality(String),
    consumer_group  LowCardinality(String),
    kafka_partition UInt32,
    from_offset     Int64 COMMENT 'first offset lost: the group''s committed offset when the loss was accepted',
    to_offset       Int64 COMMENT 'first offset kept: the partition''s log start when the loss was accepted; [from_offset, to_offset) was never counted',
    accepted_by     String COMMENT 'who accepted the loss (--by)',
    reason          String COMMENT 'why (--reason)',
    accepted_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY (topic, consumer_group, kafka_partition, from_offset);

-- +goose Down
DROP TABLE IF EXISTS kafka_offset_losses;
