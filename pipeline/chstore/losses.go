package chstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// OffsetLoss is a range of a topic partition that a consumer group never read because the
// records were deleted first (retention), accepted by an operator (migration 007).
type OffsetLoss struct {
	Topic      string
	Group      string
	Partition  int32
	From, To   int64 // [From, To) was never counted
	AcceptedBy string
	Reason     string
	AcceptedAt time.Time
}

// InsertOffsetLoss records an accepted loss.
func (s *Store) InsertOffsetLoss(ctx context.Context, l OffsetLoss) error {
	if l.From < 0 || l.To <= l.From {
		return fmt.Errorf("record offset loss: bad range [%d, %d)", l.From, l.To)
	}
	err := s.conn.Exec(ctx, `INSERT INTO kafka_offset_losses (topic, consumer_group, kafka_partition, from_offset, to_offset,
		accepted_by, reason) VALUES (?, ?, ?, ?, ?, ?, ?)`, l.Topic, l.Group, uint32(l.Partition), l.From, l.To, l.AcceptedBy, l.Reason)
	if err != nil {
		return fmt.Errorf("record offset loss: %w", err)
	}
	return nil
}

// AcceptedLoss returns the accepted loss of (topic, group, partition) whose range holds offset
// (the one reaching furthest), or nil when there is none.
func (s *Store) AcceptedLoss(ctx context.Context, topic, group string, partition int32, offset int64) (*OffsetLoss, error) {
	row := s.conn.QueryRow(ctx, `SELECT from_offset, to_offset, accepted_by, reason, accepted_at FROM kafka_offset_losses
		WHERE topic = ? AND consumer_group = ? AND kafka_partition = ? AND from_offset <= ? AND to_offset > ?
		ORDER BY to_offset DESC LIMIT 1`, topic, group, uint32(partition), offset, offset)
	l := OffsetLoss{Topic: topic, Group: group, Partition: partition}
	if err := row.Scan(&l.From, &l.To, &l.AcceptedBy, &l.Reason, &l.AcceptedAt); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, nil
		}
		return nil, fmt.Errorf("accepted offset loss: %w", err)
	}
	return &l, nil
}

// OffsetLosses lists the accepted losses of a topic and group, oldest first.
func (s *Store) OffsetLosses(ctx context.Context, topic, group string) ([]OffsetLoss, error) {
	rows, err := s.conn.Query(ctx, `SELECT kafka_partition, from_offset, to_offset, accepted_by, reason, accepted_at
		FROM kafka_offset_losses WHERE topic = ? AND consumer_group = ? ORDER BY accepted_at, kafka_partition`, topic, group)
	if err != nil {
		return nil, fmt.Errorf("offset losses: %w", err)
	}
	defer rows.Close()
	var out []OffsetLoss
	for rows.Next() {
		l := OffsetLoss{Topic: topic, Group: group}
		var p uint32
		if err := rows.Scan(&p, &l.From, &l.To, &l.AcceptedBy, &l.Reason, &l.AcceptedAt); err != nil {
			return nil, fmt.Errorf("offset losses: scan: %w", err)
		}
		l.Partition = int32(p)
		out = append(out, l)
	}
	return out, rows.Err()
}

// RecordPartitionerSwitch records that the events producer places keys with partitioner from
// since on (migration 008 records the switch to murmur2 itself; this is for a later change,
// and for tests).
func (s *Store) RecordPartitionerSwitch(ctx context.Context, partitioner string, since time.Time, note string) error {
	if err := s.conn.Exec(ctx, `INSERT INTO kafka_partitioner_changes (partitioner, since, note) VALUES (?, ?, ?)`,
		partitioner, since, note); err != nil {
		return fmt.Errorf("record partitioner switch: %w", err)
	}
	return nil
}

// PartitionerSwitch is when the events producer last changed its partitioner (migration 008),
// or the zero time when it never did on this database.
func (s *Store) PartitionerSwitch(ctx context.Context) (time.Time, error) {
	var since time.Time
	var n uint64
	if err := s.conn.QueryRow(ctx, `SELECT max(since), count() FROM kafka_partitioner_changes`).Scan(&since, &n); err != nil {
		return time.Time{}, fmt.Errorf("partitioner switch: %w", err)
	}
	if n == 0 {
		return time.Time{}, nil
	}
	return since, nil
}

// Exec runs one statement that returns no rows, in the store's database: for tests that
// change the schema under a running pipeline (e.g. take a table away to hold the counter's
// writes).
func (s *Store) Exec(ctx context.Context, query string) error {
	if err := s.conn.Exec(ctx, query); err != nil {
		return fmt.Errorf("exec: %w", err)
	}
	return nil
}
