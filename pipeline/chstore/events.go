package chstore

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/maumeter/maumeter/pkg/event"
)

// EventRow is one raw event of the events table (migration 011), as the archive writes it.
type EventRow struct {
	Month     string // billing month in the tenant's zone
	Event     event.Event
	Partition int32
	Offset    int64
}

// InsertEvents writes one batch of raw events. token (e.g. topic/partition/first-last offsets of
// the batch) makes a retried insert of the same batch a no-op.
func (s *Store) InsertEvents(ctx context.Context, rows []EventRow, token string) error {
	if len(rows) == 0 {
		return nil
	}
	ctx = clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"insert_deduplication_token": token}))
	b, err := s.conn.PrepareBatch(ctx, `INSERT INTO events (tenant_id, month, app_id, guid, device_key, event,
		mini_program_id, ts, event_id, dedup_id, kafka_partition, kafka_offset)`)
	if err != nil {
		return fmt.Errorf("insert events: prepare: %w", err)
	}
	defer b.Abort()
	for i := range rows {
		r := &rows[i]
		e := &r.Event
		key := e.Key()
		dedup := e.EventID
		if dedup == "" {
			dedup = strconv.FormatInt(int64(r.Partition), 10) + ":" + strconv.FormatInt(r.Offset, 10)
		}
		if err := b.Append(e.TenantID, r.Month, e.AppID, e.GUID, string(key[:]), e.Type.String(), e.MiniProgramID,
			e.TS.UTC(), e.EventID, dedup, uint32(r.Partition), uint64(r.Offset)); err != nil {
			return fmt.Errorf("insert events: append: %w", err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("insert events: send: %w", err)
	}
	return nil
}

// SetEventsTTL makes the events table keep rows for ttl after their ts (0: keep them forever).
func (s *Store) SetEventsTTL(ctx context.Context, ttl time.Duration) error {
	q := `ALTER TABLE events REMOVE TTL`
	if ttl > 0 {
		q = fmt.Sprintf(`ALTER TABLE events MODIFY TTL toDateTime(ts) + INTERVAL %d SECOND`, int64(ttl.Seconds()))
	}
	if err := s.conn.Exec(ctx, q); err != nil {
		// REMOVE TTL on a table without one is an error on some versions: nothing to remove.
		if ttl == 0 {
			return nil
		}
		return fmt.Errorf("events ttl: %w", err)
	}
	return nil
}
