package chstore

import (
	"context"
	"fmt"
	"time"

	"github.com/maumeter/maumeter/pkg/event"
)

// TenantMonth names one billing month of one tenant.
type TenantMonth struct {
	TenantID string
	Month    string // YYYY-MM
}

// PartitionRollup is a partition's state for one tenant-month after a flush.
type PartitionRollup struct {
	TenantID     string
	Month        string
	Partition    int32
	Version      uint64 // flush time in ns
	NextOffset   int64
	ExactDevices uint64
	HLLEstimate  uint64
	Sketches     []byte
}

// InsertPartitionRollups writes partition rollups in one batch.
func (s *Store) InsertPartitionRollups(ctx context.Context, rows []PartitionRollup) error {
	if len(rows) == 0 {
		return nil
	}
	b, err := s.conn.PrepareBatch(ctx, `INSERT INTO mau_partition_rollups (tenant_id, month, kafka_partition, version,
		next_offset, exact_devices, hll_estimate, sketches)`)
	if err != nil {
		return fmt.Errorf("insert partition rollups: prepare: %w", err)
	}
	defer b.Abort()
	for _, r := range rows {
		if err := b.Append(r.TenantID, r.Month, uint32(r.Partition), r.Version, r.NextOffset, r.ExactDevices,
			r.HLLEstimate, string(r.Sketches)); err != nil {
			return fmt.Errorf("insert partition rollups: append: %w", err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("insert partition rollups: send: %w", err)
	}
	return nil
}

// LatestPartitionRollups returns the current rollup of every (tenant, month, partition), of one
// partition (partition ≥ 0) or all, of one tenant-month (tm not nil) or all.
func (s *Store) LatestPartitionRollups(ctx context.Context, partition int32, tm *TenantMonth) ([]PartitionRollup, error) {
	q := `SELECT tenant_id, month, kafka_partition, max(version), argMax(next_offset, version),
		argMax(exact_devices, version), argMax(hll_estimate, version), argMax(sketches, version)
		FROM mau_partition_rollups WHERE (? < 0 OR kafka_partition = ?)`
	args := []any{int64(partition), uint32(max(partition, 0))}
	if tm != nil {
		q += ` AND tenant_id = ? AND month = ?`
		args = append(args, tm.TenantID, tm.Month)
	}
	q += ` GROUP BY tenant_id, month, kafka_partition`
	rows, err := s.conn.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("load partition rollups: %w", err)
	}
	defer rows.Close()
	var out []PartitionRollup
	for rows.Next() {
		var r PartitionRollup
		var part uint32
		var sk string
		if err := rows.Scan(&r.TenantID, &r.Month, &part, &r.Version, &r.NextOffset, &r.ExactDevices, &r.HLLEstimate, &sk); err != nil {
			return nil, fmt.Errorf("load partition rollups: scan: %w", err)
		}
		r.Partition, r.Sketches = int32(part), []byte(sk)
		out = append(out, r)
	}
	return out, rows.Err()
}

// Rollup is one version of a tenant-month's monthly rollup.
type Rollup struct {
	TenantID         string            `json:"tenant_id"`
	Month            string            `json:"month"`
	Version          uint32            `json:"version"`
	Kind             string            `json:"kind"` // close | restatement
	MAU              uint64            `json:"mau"`
	MAUMemory        uint64            `json:"mau_memory"`
	HLLEstimate      uint64            `json:"hll_estimate"`
	HLLRelativeError float64           `json:"hll_relative_error"`
	MAUByApp         map[string]uint64 `json:"mau_by_app"`
	MiniPrograms     uint32            `json:"mini_programs"` // distinct mini programs seen (exact up to sketch.MaxMiniPrograms)
	DAU              map[string]uint64 `json:"dau"`
	Sketches         []byte            `json:"-"`
	DevicesThrough   time.Time         `json:"devices_through"`
	Watermark        map[int32]int64   `json:"watermark"`
	ClosedAt         time.Time         `json:"closed_at"`
}

// InsertRollup writes one rollup version. Writing the same version again replaces it.
func (s *Store) InsertRollup(ctx context.Context, r *Rollup) error {
	wm := make(map[uint32]int64, len(r.Watermark))
	for p, o := range r.Watermark {
		wm[uint32(p)] = o
	}
	// A batch, not Exec with bound parameters: binding would cut the DateTime64 milliseconds
	// that devices_through is compared with.
	b, err := s.conn.PrepareBatch(ctx, `INSERT INTO mau_rollups (tenant_id, month, version, kind, mau, mau_memory,
		hll_estimate, hll_relative_error, mau_by_app, mini_programs, dau, sketches, devices_through, watermark, closed_at)`)
	if err != nil {
		return fmt.Errorf("insert rollup %s %s v%d: %w", r.TenantID, r.Month, r.Version, err)
	}
	defer b.Abort()
	if err := b.Append(r.TenantID, r.Month, r.Version, r.Kind, r.MAU, r.MAUMemory, r.HLLEstimate, r.HLLRelativeError,
		nonNil(r.MAUByApp), r.MiniPrograms, nonNil(r.DAU), string(r.Sketches), r.DevicesThrough.UTC(), wm, r.ClosedAt.UTC()); err != nil {
		return fmt.Errorf("insert rollup %s %s v%d: %w", r.TenantID, r.Month, r.Version, err)
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("insert rollup %s %s v%d: %w", r.TenantID, r.Month, r.Version, err)
	}
	return nil
}

func nonNil(m map[string]uint64) map[string]uint64 {
	if m == nil {
		return map[string]uint64{}
	}
	return m
}

// LatestRollups returns the highest version of every closed tenant-month.
func (s *Store) LatestRollups(ctx context.Context) (map[TenantMonth]*Rollup, error) {
	all, err := s.Rollups(ctx, "", "")
	if err != nil {
		return nil, err
	}
	out := map[TenantMonth]*Rollup{}
	for _, r := range all {
		out[TenantMonth{r.TenantID, r.Month}] = r // ordered by version: the last is the highest
	}
	return out, nil
}

// RollupSketches returns the sketches of one rollup version.
func (s *Store) RollupSketches(ctx context.Context, tm TenantMonth, version uint32) ([]byte, error) {
	var sk string
	err := s.conn.QueryRow(ctx, `SELECT sketches FROM mau_rollups FINAL WHERE tenant_id = ? AND month = ? AND version = ?`,
		tm.TenantID, tm.Month, version).Scan(&sk)
	if err != nil {
		return nil, fmt.Errorf("load rollup sketches %s %s v%d: %w", tm.TenantID, tm.Month, version, err)
	}
	return []byte(sk), nil
}

// MonthFacts are what ClickHouse knows of a tenant-month's devices.
type MonthFacts struct {
	MAU            uint64
	ByApp          map[string]uint64
	DevicesThrough time.Time // max(inserted_at)
}

// Facts computes the exact MAU of a tenant-month, per app and in total, from mau_devices.
func (s *Store) Facts(ctx context.Context, tm TenantMonth) (MonthFacts, error) {
	f := MonthFacts{ByApp: map[string]uint64{}}
	rows, err := s.conn.Query(ctx, `SELECT app_id, uniqExact(device_key), max(inserted_at) FROM mau_devices
		WHERE tenant_id = ? AND month = ? GROUP BY app_id`, tm.TenantID, tm.Month)
	if err != nil {
		return f, fmt.Errorf("month facts %s %s: %w", tm.TenantID, tm.Month, err)
	}
	defer rows.Close()
	for rows.Next() {
		var app string
		var n uint64
		var through time.Time
		if err := rows.Scan(&app, &n, &through); err != nil {
			return f, fmt.Errorf("month facts: scan: %w", err)
		}
		f.ByApp[app] = n
		f.MAU += n // device keys include the app, so apps never share a device
		if through.After(f.DevicesThrough) {
			f.DevicesThrough = through
		}
	}
	return f, rows.Err()
}

// MonthsWithDevices lists the tenant-months not before fromMonth (YYYY-MM) present in
// mau_devices, with their newest insert.
func (s *Store) MonthsWithDevices(ctx context.Context, fromMonth string) (map[TenantMonth]time.Time, error) {
	rows, err := s.conn.Query(ctx, `SELECT tenant_id, month, max(inserted_at) FROM mau_devices
		WHERE month >= ? GROUP BY tenant_id, month`, fromMonth)
	if err != nil {
		return nil, fmt.Errorf("months with devices: %w", err)
	}
	defer rows.Close()
	out := map[TenantMonth]time.Time{}
	for rows.Next() {
		var tm TenantMonth
		var through time.Time
		if err := rows.Scan(&tm.TenantID, &tm.Month, &through); err != nil {
			return nil, fmt.Errorf("months with devices: scan: %w", err)
		}
		out[tm] = through
	}
	return out, rows.Err()
}

// KnownDevices returns which of keys are already recorded for a tenant-month. The counter asks
// it for events of closed months, whose sets are no longer in memory.
func (s *Store) KnownDevices(ctx context.Context, tm TenantMonth, keys []event.DeviceKey) (map[event.DeviceKey]bool, error) {
	out := make(map[event.DeviceKey]bool, len(keys))
	for start := 0; start < len(keys); start += 10000 {
		chunk := keys[start:min(start+10000, len(keys))]
		strs := make([]string, len(chunk))
		for i, k := range chunk {
			strs[i] = string(k[:])
		}
		rows, err := s.conn.Query(ctx, `SELECT DISTINCT device_key FROM mau_devices WHERE tenant_id = ? AND month = ? AND device_key IN ?`,
			tm.TenantID, tm.Month, strs)
		if err != nil {
			return nil, fmt.Errorf("known devices %s %s: %w", tm.TenantID, tm.Month, err)
		}
		for rows.Next() {
			var k string
			if err := rows.Scan(&k); err != nil {
				rows.Close()
				return nil, fmt.Errorf("known devices: scan: %w", err)
			}
			var dk event.DeviceKey
			copy(dk[:], k)
			out[dk] = true
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("known devices: %w", err)
		}
	}
	return out, nil
}

// AppUsage is the exact MAU of a tenant-month per app, from mau_devices, and how many of those
// devices were first seen in a window: what the MAU read prices and projects.
type AppUsage struct {
	MAUByApp map[string]uint64
	// NewByApp counts, per app, the devices whose first_seen_at (the earliest of a device's
	// rows) lies in the window; apps with none are absent.
	NewByApp map[string]uint64
}

// AppUsage reads the exact per-app MAU of tm and the devices first seen in [from, to) in one
// query (a zero window counts nothing). Like Facts it groups by device: copies of a row (a
// replay) count once, at the earliest first_seen_at among the copies not yet folded
// (ReplacingMergeTree keeps the last inserted copy when it merges them).
func (s *Store) AppUsage(ctx context.Context, tm TenantMonth, from, to time.Time) (AppUsage, error) {
	u := AppUsage{MAUByApp: map[string]uint64{}, NewByApp: map[string]uint64{}}
	// Milliseconds, not bound times: a bound time.Time may lose the DateTime64 precision.
	rows, err := s.conn.Query(ctx, `SELECT app_id, count(), countIf(first >= ? AND first < ?) FROM (
			SELECT app_id, device_key, toUnixTimestamp64Milli(min(first_seen_at)) AS first FROM mau_devices
			WHERE tenant_id = ? AND month = ? GROUP BY app_id, device_key)
		GROUP BY app_id`, from.UnixMilli(), to.UnixMilli(), tm.TenantID, tm.Month)
	if err != nil {
		return u, fmt.Errorf("app usage %s %s: %w", tm.TenantID, tm.Month, err)
	}
	defer rows.Close()
	for rows.Next() {
		var app string
		var n, fresh uint64
		if err := rows.Scan(&app, &n, &fresh); err != nil {
			return u, fmt.Errorf("app usage %s %s: scan: %w", tm.TenantID, tm.Month, err)
		}
		u.MAUByApp[app] = n
		if fresh > 0 {
			u.NewByApp[app] = fresh
		}
	}
	if err := rows.Err(); err != nil {
		return u, fmt.Errorf("app usage %s %s: %w", tm.TenantID, tm.Month, err)
	}
	return u, nil
}
