// Package chstore is maumeter's ClickHouse adapter: migrations, the first-seen device record
// (mau_devices) that the counter writes and rebuilds its sets from, and the exact MAU queries.
//
// A *Store is safe for concurrent use; Close it when done.
package chstore

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/pressly/goose/v3"

	"github.com/maumeter/maumeter/pkg/event"
	"github.com/maumeter/maumeter/schemas"
)

// ErrConfig wraps configuration errors.
var ErrConfig = errors.New("clickhouse config")

// Config says where ClickHouse is.
type Config struct {
	Addr        string // host:port of the native protocol
	Database    string
	Username    string
	Password    string
	DialTimeout time.Duration
	TLS         *tls.Config // nil: plaintext native protocol
}

// Validate checks c and fills defaults.
func (c *Config) Validate() error {
	if c.Addr == "" {
		return fmt.Errorf("%w: addr is required", ErrConfig)
	}
	if !event.ValidID(c.Database) {
		return fmt.Errorf("%w: database %q must be 1-64 of [A-Za-z0-9._-]", ErrConfig, c.Database)
	}
	if c.Username == "" {
		c.Username = "default"
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 5 * time.Second
	}
	return nil
}

// Store talks to one ClickHouse database.
type Store struct {
	cfg  Config
	conn driver.Conn
	log  *slog.Logger
}

// Open connects to ClickHouse and pings it. The database need not exist yet (Migrate creates it).
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	conn, err := clickhouse.Open(options(cfg, cfg.Database))
	if err != nil {
		return nil, fmt.Errorf("open clickhouse %s: %w", cfg.Addr, err)
	}
	s := &Store{cfg: cfg, conn: detached{conn}, log: log}
	if err := s.ensureDatabase(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	return s, nil
}

func options(cfg Config, db string) *clickhouse.Options {
	return &clickhouse.Options{
		Addr:        []string{cfg.Addr},
		Auth:        clickhouse.Auth{Database: db, Username: cfg.Username, Password: cfg.Password},
		DialTimeout: cfg.DialTimeout,
		TLS:         cfg.TLS,
		Compression: &clickhouse.Compression{Method: clickhouse.CompressionLZ4},
		// async_insert off, whatever the server's profile says: an insert must be stored when it
		// returns, because the counter commits Kafka offsets right after it.
		Settings: clickhouse.Settings{"max_execution_time": 600, "async_insert": 0},
	}
}

// ensureDatabase creates the database over a connection that does not select it.
func (s *Store) ensureDatabase(ctx context.Context) error {
	raw, err := clickhouse.Open(options(s.cfg, ""))
	if err != nil {
		return fmt.Errorf("open clickhouse %s: %w", s.cfg.Addr, err)
	}
	defer raw.Close()
	conn := detached{raw}
	if err := conn.Ping(ctx); err != nil {
		return fmt.Errorf("ping clickhouse %s: %w", s.cfg.Addr, err)
	}
	if err := conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS `"+s.cfg.Database+"`"); err != nil {
		return fmt.Errorf("create database %s: %w", s.cfg.Database, err)
	}
	return nil
}

// Close closes the connection pool.
func (s *Store) Close() error { return s.conn.Close() }

// Ping checks that ClickHouse answers.
func (s *Store) Ping(ctx context.Context) error { return s.conn.Ping(ctx) }

// Migrate applies the migrations of schemas/clickhouse that are not applied yet, recording them
// in goose_db_version; a second run is a no-op. It returns the versions it applied.
func (s *Store) Migrate(ctx context.Context) ([]int64, error) {
	db := clickhouse.OpenDB(options(s.cfg, s.cfg.Database))
	defer db.Close()
	return migrate(ctx, db, s.log)
}

func migrate(ctx context.Context, db *sql.DB, log *slog.Logger) ([]int64, error) {
	fsys, err := fs.Sub(schemas.ClickHouseMigrations, schemas.ClickHouseDir)
	if err != nil {
		return nil, fmt.Errorf("migrations: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectClickHouse, db, fsys, goose.WithSlog(log))
	if err != nil {
		return nil, fmt.Errorf("migrations: %w", err)
	}
	results, err := p.Up(ctx)
	if err != nil {
		return nil, fmt.Errorf("apply migrations: %w", err)
	}
	applied := make([]int64, 0, len(results))
	for _, r := range results {
		applied = append(applied, r.Source.Version)
	}
	return applied, nil
}

// DeviceRow is one row of mau_devices: a device seen for the first time in a tenant-month.
type DeviceRow struct {
	TenantID      string
	Month         string
	AppID         string
	Key           event.DeviceKey
	GUID          string
	FirstSeenAt   time.Time
	FirstEvent    event.Type
	MiniProgramID string
	Partition     int32
	Offset        int64
}

// InsertDevices writes rows to mau_devices in one batch. The batch is one insert block, so it
// lands whole or not at all; writing the same rows again changes no count. The block carries a
// deduplication token made of its content, so a retried flush of the same rows is dropped by
// ClickHouse (migration 005 keeps a window) instead of adding copies; rows that differ in any
// way get another token, so deduplication can never drop a device.
func (s *Store) InsertDevices(ctx context.Context, rows []DeviceRow) error {
	if len(rows) == 0 {
		return nil
	}
	ctx = clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"insert_deduplication_token": devicesToken(rows)}))
	b, err := s.conn.PrepareBatch(ctx, `INSERT INTO mau_devices (tenant_id, month, app_id, device_key, guid,
		first_seen_at, first_event, mini_program_id, kafka_partition, kafka_offset)`)
	if err != nil {
		return fmt.Errorf("insert devices: prepare: %w", err)
	}
	defer b.Abort()
	for i := range rows {
		r := &rows[i]
		if err := b.Append(r.TenantID, r.Month, r.AppID, string(r.Key[:]), r.GUID, r.FirstSeenAt.UTC(),
			r.FirstEvent.String(), r.MiniProgramID, uint32(r.Partition), uint64(r.Offset)); err != nil {
			return fmt.Errorf("insert devices: append: %w", err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("insert devices: send: %w", err)
	}
	return nil
}

// devicesToken is the deduplication token of a block of device rows: SHA-256 over every column
// the block writes, in order.
func devicesToken(rows []DeviceRow) string {
	h := sha256.New()
	var num [8]byte
	for i := range rows {
		r := &rows[i]
		for _, s := range []string{r.TenantID, r.Month, r.AppID, r.GUID, r.MiniProgramID} {
			binary.BigEndian.PutUint64(num[:], uint64(len(s)))
			h.Write(num[:])
			h.Write([]byte(s))
		}
		h.Write(r.Key[:])
		for _, n := range []uint64{uint64(r.FirstSeenAt.UnixNano()), uint64(r.FirstEvent), uint64(r.Partition), uint64(r.Offset)} {
			binary.BigEndian.PutUint64(num[:], n)
			h.Write(num[:])
		}
	}
	return "devices/" + hex.EncodeToString(h.Sum(nil))
}

// PartitionDevices calls fn for every device recorded from partition p in the months that are
// still open (no rollup in mau_rollups). The counter rebuilds its sets with it on assignment.
func (s *Store) PartitionDevices(ctx context.Context, p int32, fn func(tenant, month string, key event.DeviceKey)) error {
	rows, err := s.conn.Query(ctx, `SELECT tenant_id, month, device_key FROM mau_devices
		WHERE kafka_partition = ? AND (tenant_id, month) NOT IN (SELECT tenant_id, month FROM mau_rollups)`, uint32(p))
	if err != nil {
		return fmt.Errorf("load partition %d devices: %w", p, err)
	}
	defer rows.Close()
	var tenant, month, key string
	for rows.Next() {
		if err := rows.Scan(&tenant, &month, &key); err != nil {
			return fmt.Errorf("load partition %d devices: scan: %w", p, err)
		}
		var k event.DeviceKey
		copy(k[:], key)
		fn(tenant, month, k)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("load partition %d devices: %w", p, err)
	}
	return nil
}

// MonthlyMAU is the exact MAU of one tenant-month.
type MonthlyMAU struct {
	TenantID string `json:"tenant_id"`
	Month    string `json:"month"`
	MAU      uint64 `json:"mau"`
}

// MAU is the exact MAU of a tenant-month: uniqExact over mau_devices.
func (s *Store) MAU(ctx context.Context, tenant, month string) (uint64, error) {
	var n uint64
	err := s.conn.QueryRow(ctx, `SELECT uniqExact(device_key) FROM mau_devices WHERE tenant_id = ? AND month = ?`,
		tenant, month).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("query mau %s %s: %w", tenant, month, err)
	}
	return n, nil
}

// AllMAU lists the exact MAU of every tenant-month, ordered by tenant and month.
func (s *Store) AllMAU(ctx context.Context) ([]MonthlyMAU, error) {
	rows, err := s.conn.Query(ctx, `SELECT tenant_id, month, uniqExact(device_key) FROM mau_devices
		GROUP BY tenant_id, month ORDER BY tenant_id, month`)
	if err != nil {
		return nil, fmt.Errorf("query mau: %w", err)
	}
	defer rows.Close()
	var out []MonthlyMAU
	for rows.Next() {
		var m MonthlyMAU
		if err := rows.Scan(&m.TenantID, &m.Month, &m.MAU); err != nil {
			return nil, fmt.Errorf("query mau: scan: %w", err)
		}
		out = append(out, m)
	}
	return out, rows.Err()
}
