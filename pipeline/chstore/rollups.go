package chstore

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

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

// Watermark is, per partition of mau.events.v1, an offset: a rollup version covers every
// device with a mau_devices row below its partition's offset (a partition absent counts as 0).
// The closer takes it from Kafka's end offsets when a close begins and waits until the counters
// have committed past it; a counter stores a partition's rows before it commits their offsets,
// so every device first seen below the watermark is then in mau_devices, whatever the server
// clocks say. Versions of a month never lower a partition's offset (MaxWith).
type Watermark map[int32]int64

// MaxWith returns the partition-wise maximum of w and o, a new map.
func (w Watermark) MaxWith(o Watermark) Watermark {
	out := make(Watermark, max(len(w), len(o)))
	for p, off := range w {
		out[p] = off
	}
	for p, off := range o {
		out[p] = max(out[p], off)
	}
	return out
}

// Below reports whether every offset of frontier (one past the newest row per partition) is
// within w: no row lies at or beyond w, so nothing is new since the version w belongs to.
func (w Watermark) Below(frontier Watermark) bool {
	for p, next := range frontier {
		if next > w[p] {
			return false
		}
	}
	return true
}

// SQL renders w as a ClickHouse map literal, partitions in order: the condition
// kafka_offset < <SQL>[kafka_partition] selects the rows w covers (a missing partition reads 0
// and selects nothing).
func (w Watermark) SQL() string {
	parts := slices.Sorted(maps.Keys(w))
	if len(parts) == 0 {
		return "map(0, 0)"
	}
	var b strings.Builder
	b.WriteString("map(")
	for i, p := range parts {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%d, %d", p, max(w[p], 0))
	}
	b.WriteString(")")
	return b.String()
}

// column is w as clickhouse-go reads and writes Map(UInt32, Int64).
func (w Watermark) column() map[uint32]int64 {
	out := make(map[uint32]int64, len(w))
	for p, o := range w {
		out[uint32(p)] = o
	}
	return out
}

func watermarkOf(col map[uint32]int64) Watermark {
	out := make(Watermark, len(col))
	for p, o := range col {
		out[int32(p)] = o
	}
	return out
}

// coveredBy is the condition on mau_devices rows that a watermark covers.
func coveredBy(w Watermark) string { return "kafka_offset < " + w.SQL() + "[kafka_partition]" }

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
	// Watermark says which devices the version covers: those with a mau_devices row below it.
	Watermark Watermark `json:"watermark"`
	// Writer identifies the close that wrote the version; of two closes that raced for one
	// version, the stored row names the winner (WriteRollup).
	Writer   string    `json:"writer"`
	ClosedAt time.Time `json:"closed_at"`
}

// ErrVersionTaken is returned by WriteRollup when another writer holds the rollup version.
var ErrVersionTaken = errors.New("rollup version written by another close")

// WriteRollup stores rollup version r.Version of its tenant-month unless another writer holds
// it, in which case it returns ErrVersionTaken and stores nothing: two closes (the automatic
// closer, `maumeter close`, an import, a zombie owner of partition 0) can never leave two
// contents under one version. r.Writer must be unique to this write.
//
// The insert carries insert_deduplication_token rollup/<tenant>/<month>/<version>, and
// mau_rollups keeps a deduplication window (migration 005): ClickHouse drops a second block with
// the same token, so of two concurrent inserts exactly one lands; reading the row back says
// which. The version is checked to be free first, so the window only has to cover the moment
// between that check and the insert. Retrying after an unknown outcome is safe: the retry is
// dropped or lands, and the read-back tells.
func (s *Store) WriteRollup(ctx context.Context, r *Rollup) error {
	if r.Writer == "" {
		return fmt.Errorf("write rollup %s %s v%d: writer id is required", r.TenantID, r.Month, r.Version)
	}
	tm := TenantMonth{r.TenantID, r.Month}
	switch w, err := s.rollupWriter(ctx, tm, r.Version); {
	case err != nil:
		return err
	case w == r.Writer:
		return nil
	case w != "" || s.rollupExists(ctx, tm, r.Version):
		return fmt.Errorf("write rollup %s %s v%d: %w", r.TenantID, r.Month, r.Version, ErrVersionTaken)
	}
	token := fmt.Sprintf("rollup/%s/%s/%d", r.TenantID, r.Month, r.Version)
	ictx := clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"insert_deduplication_token": token}))
	b, err := s.conn.PrepareBatch(ictx, `INSERT INTO mau_rollups (tenant_id, month, version, kind, mau, mau_memory,
		hll_estimate, hll_relative_error, mau_by_app, mini_programs, dau, sketches, watermark, writer, closed_at)`)
	if err != nil {
		return fmt.Errorf("insert rollup %s %s v%d: %w", r.TenantID, r.Month, r.Version, err)
	}
	defer b.Abort()
	if err := b.Append(r.TenantID, r.Month, r.Version, r.Kind, r.MAU, r.MAUMemory, r.HLLEstimate, r.HLLRelativeError,
		nonNil(r.MAUByApp), r.MiniPrograms, nonNil(r.DAU), string(r.Sketches), r.Watermark.column(), r.Writer, r.ClosedAt.UTC()); err != nil {
		return fmt.Errorf("insert rollup %s %s v%d: %w", r.TenantID, r.Month, r.Version, err)
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("insert rollup %s %s v%d: %w", r.TenantID, r.Month, r.Version, err)
	}
	switch w, err := s.rollupWriter(ctx, tm, r.Version); {
	case err != nil:
		return err
	case w != r.Writer:
		return fmt.Errorf("write rollup %s %s v%d: %w (held by %q)", r.TenantID, r.Month, r.Version, ErrVersionTaken, w)
	}
	return nil
}

// rollupWriter returns the writer of a stored rollup version, "" when there is none (or it was
// written before writers were recorded). Two stored writers of one version would be a broken
// fence: an error, never a silent choice.
func (s *Store) rollupWriter(ctx context.Context, tm TenantMonth, version uint32) (string, error) {
	var writers []string
	if err := s.conn.QueryRow(ctx, `SELECT groupUniqArray(writer) FROM mau_rollups WHERE tenant_id = ? AND month = ? AND version = ?`,
		tm.TenantID, tm.Month, version).Scan(&writers); err != nil {
		return "", fmt.Errorf("read rollup writer %s %s v%d: %w", tm.TenantID, tm.Month, version, err)
	}
	switch len(writers) {
	case 0:
		return "", nil
	case 1:
		return writers[0], nil
	}
	return "", fmt.Errorf("rollup %s %s v%d has %d writers %v: the version fence was broken", tm.TenantID, tm.Month, version, len(writers), writers)
}

// rollupExists reports whether a version is stored (legacy rows have no writer); on error it
// reports true, which makes the caller back off rather than write.
func (s *Store) rollupExists(ctx context.Context, tm TenantMonth, version uint32) bool {
	var n uint64
	if err := s.conn.QueryRow(ctx, `SELECT count() FROM mau_rollups WHERE tenant_id = ? AND month = ? AND version = ?`,
		tm.TenantID, tm.Month, version).Scan(&n); err != nil {
		return true
	}
	return n > 0
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

// MonthFacts are what ClickHouse knows of a tenant-month's devices under a watermark.
type MonthFacts struct {
	MAU   uint64
	ByApp map[string]uint64
}

// Facts computes the exact MAU of a tenant-month, per app and in total, over the devices with a
// mau_devices row below wm (nil: every device): what a rollup with that watermark bills. A
// merge of mau_devices keeps each device's lowest-offset row, so it cannot change the answer.
func (s *Store) Facts(ctx context.Context, tm TenantMonth, wm Watermark) (MonthFacts, error) {
	f := MonthFacts{ByApp: map[string]uint64{}}
	covered := "1"
	if wm != nil {
		covered = coveredBy(wm)
	}
	rows, err := s.conn.Query(ctx, `SELECT app_id, uniqExact(device_key) FROM mau_devices
		WHERE tenant_id = ? AND month = ? AND `+covered+` GROUP BY app_id`, tm.TenantID, tm.Month)
	if err != nil {
		return f, fmt.Errorf("month facts %s %s: %w", tm.TenantID, tm.Month, err)
	}
	defer rows.Close()
	for rows.Next() {
		var app string
		var n uint64
		if err := rows.Scan(&app, &n); err != nil {
			return f, fmt.Errorf("month facts: scan: %w", err)
		}
		f.ByApp[app] = n
		f.MAU += n // device keys include the app, so apps never share a device
	}
	return f, rows.Err()
}

// Frontiers lists the tenant-months not before fromMonth (YYYY-MM) present in mau_devices (one
// tenant-month when tm is not nil), each with its frontier: per partition, one past the highest
// kafka_offset of its rows. A month has devices a rollup version does not cover exactly when
// its frontier is not Below the version's watermark.
func (s *Store) Frontiers(ctx context.Context, fromMonth string, tm *TenantMonth) (map[TenantMonth]Watermark, error) {
	q := `SELECT tenant_id, month, kafka_partition, max(kafka_offset) + 1 FROM mau_devices WHERE month >= ?`
	args := []any{fromMonth}
	if tm != nil {
		q += ` AND tenant_id = ? AND month = ?`
		args = append(args, tm.TenantID, tm.Month)
	}
	rows, err := s.conn.Query(ctx, q+` GROUP BY tenant_id, month, kafka_partition`, args...)
	if err != nil {
		return nil, fmt.Errorf("device frontiers: %w", err)
	}
	defer rows.Close()
	out := map[TenantMonth]Watermark{}
	for rows.Next() {
		var tm TenantMonth
		var p uint32
		var next uint64
		if err := rows.Scan(&tm.TenantID, &tm.Month, &p, &next); err != nil {
			return nil, fmt.Errorf("device frontiers: scan: %w", err)
		}
		if out[tm] == nil {
			out[tm] = Watermark{}
		}
		out[tm][int32(p)] = int64(next)
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
	// NewByDay is, per app, the devices of that app first seen on each day of the month in
	// the tenant's zone: index 0 = day 1, length = days elapsed up to and including the
	// current (partial) day. The projection fits its curve on it (plan.Horizon.Project).
	NewByDay map[string][]uint64
	// PrevByApp is the exact MAU per app of the previous month when known, nil otherwise.
	PrevByApp map[string]uint64
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
