package chstore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/pressly/goose/v3"

	"github.com/maumeter/maumeter/pkg/event"
	"github.com/maumeter/maumeter/schemas"
)

func TestWatermark(t *testing.T) {
	f := func(w, frontier Watermark, below bool, sql string) {
		t.Helper()
		if got := w.Below(frontier); got != below {
			t.Errorf("%v.Below(%v) = %v, want %v", w, frontier, got, below)
		}
		if got := w.SQL(); got != sql {
			t.Errorf("%v.SQL() = %q, want %q", w, got, sql)
		}
	}
	f(Watermark{0: 10, 1: 5}, Watermark{0: 10, 1: 3}, true, "map(0, 10, 1, 5)")
	f(Watermark{0: 10, 1: 5}, Watermark{1: 6}, false, "map(0, 10, 1, 5)")
	f(Watermark{1: 5, 0: 10}, Watermark{2: 1}, false, "map(0, 10, 1, 5)") // a partition the version never saw
	f(Watermark{}, Watermark{}, true, "map(0, 0)")
	f(nil, Watermark{0: 1}, false, "map(0, 0)")
	if got := (Watermark{0: 10, 1: 5}).MaxWith(Watermark{1: 7, 2: 1}).SQL(); got != "map(0, 10, 1, 7, 2, 1)" {
		t.Errorf("MaxWith = %s", got)
	}
}

// TestWriteRollupOneWriterPerVersion: eight writers write version 1 (then 2) of one month at
// once, each with other contents; exactly one wins each version, the others get
// ErrVersionTaken, and the stored row is the winner's.
func TestWriteRollupOneWriterPerVersion(t *testing.T) {
	s := openMigrated(t)
	ctx := context.Background()
	for _, v := range []uint32{1, 2} {
		var wg sync.WaitGroup
		results := make([]error, 8)
		for i := range results {
			wg.Go(func() {
				results[i] = s.WriteRollup(ctx, &Rollup{TenantID: "acme", Month: "2026-10", Version: v, Kind: "close",
					MAU: uint64(100*v) + uint64(i), MAUByApp: map[string]uint64{"a": uint64(100*v) + uint64(i)},
					Watermark: Watermark{0: int64(i)}, Writer: fmt.Sprintf("w%d-%d", v, i), ClosedAt: time.Now()})
			})
		}
		wg.Wait()
		winner := -1
		for i, err := range results {
			switch {
			case err == nil && winner < 0:
				winner = i
			case err == nil:
				t.Errorf("v%d: writers %d and %d both won", v, winner, i)
			case !errors.Is(err, ErrVersionTaken):
				t.Errorf("v%d writer %d: %v", v, i, err)
			}
		}
		ros, err := s.Rollups(ctx, "acme", "2026-10")
		if err != nil {
			t.Fatal(err)
		}
		stored := ros[len(ros)-1]
		if winner < 0 || stored.Version != v || stored.Writer != fmt.Sprintf("w%d-%d", v, winner) || stored.MAU != uint64(100*v)+uint64(winner) {
			t.Errorf("v%d: winner %d, stored %+v", v, winner, stored)
		}
		var rows uint64
		if err := s.conn.QueryRow(ctx, `SELECT count() FROM mau_rollups WHERE version = ?`, v).Scan(&rows); err != nil || rows != 1 {
			t.Errorf("v%d: %d rows stored (%v), want 1", v, rows, err)
		}
		// The winner writing again (a retry after an unknown outcome) is fine and adds nothing.
		if winner >= 0 {
			if err := s.WriteRollup(ctx, &Rollup{TenantID: "acme", Month: "2026-10", Version: v, Kind: "close",
				Writer: fmt.Sprintf("w%d-%d", v, winner), ClosedAt: time.Now()}); err != nil {
				t.Errorf("v%d: the winner's retry: %v", v, err)
			}
		}
	}
}

// TestMigration005KeepsTheFirstSighting: devices stored under the schema before migration 005
// (with a later copy of one of them) move to the new table, and after it a merge keeps each
// device's lowest-offset row whatever the insert order.
func TestMigration005KeepsTheFirstSighting(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	db := clickhouse.OpenDB(options(s.cfg, s.cfg.Database))
	defer db.Close()
	fsys, err := fs.Sub(schemas.ClickHouseMigrations, schemas.ClickHouseDir)
	if err != nil {
		t.Fatal(err)
	}
	p, err := goose.NewProvider(goose.DialectClickHouse, db, fsys)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, 4); err != nil {
		t.Fatal(err)
	}
	row := func(guid string, offset int64) DeviceRow {
		return DeviceRow{TenantID: "acme", Month: "2026-10", AppID: "a", Key: event.KeyOf("acme", "a", guid), GUID: guid,
			FirstSeenAt: time.Date(2026, 10, 2, 0, 0, 0, 0, time.UTC), FirstEvent: event.Open, Offset: offset}
	}
	// Old schema, no tokens: written the way the old code did.
	for _, rows := range [][]DeviceRow{{row("x", 10), row("y", 11)}, {row("x", 500)}} {
		b, err := s.conn.PrepareBatch(ctx, `INSERT INTO mau_devices (tenant_id, month, app_id, device_key, guid, first_seen_at,
			first_event, mini_program_id, kafka_partition, kafka_offset)`)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			if err := b.Append(r.TenantID, r.Month, r.AppID, string(r.Key[:]), r.GUID, r.FirstSeenAt, r.FirstEvent.String(), "", uint32(0), uint64(r.Offset)); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.Send(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	// After it: a late copy inserted last, then one with a lower offset than the stored copy.
	if err := s.InsertDevices(ctx, []DeviceRow{row("y", 900)}); err != nil {
		t.Fatal(err)
	}
	if err := s.InsertDevices(ctx, []DeviceRow{row("x", 7)}); err != nil {
		t.Fatal(err)
	}
	if err := s.conn.Exec(ctx, `OPTIMIZE TABLE mau_devices FINAL`); err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	rows, err := s.conn.Query(ctx, `SELECT guid, kafka_offset FROM mau_devices`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var g string
		var off uint64
		if err := rows.Scan(&g, &off); err != nil {
			t.Fatal(err)
		}
		got[g] = off
	}
	if len(got) != 2 || got["x"] != 7 || got["y"] != 11 {
		t.Errorf("after the migration and a merge: %v, want x at offset 7 and y at 11", got)
	}
}

// TestInsertDevicesRetryIsDropped: the same flush written twice leaves one copy of its rows; a
// flush that differs in one row is not dropped.
func TestInsertDevicesRetryIsDropped(t *testing.T) {
	s := openMigrated(t)
	ctx := context.Background()
	mk := func(off int64) []DeviceRow {
		return []DeviceRow{{TenantID: "acme", Month: "2026-10", AppID: "a", Key: event.KeyOf("acme", "a", "g"), GUID: "g",
			FirstSeenAt: time.Date(2026, 10, 2, 0, 0, 0, 0, time.UTC), FirstEvent: event.Open, Offset: off}}
	}
	for _, rows := range [][]DeviceRow{mk(1), mk(1), mk(2)} {
		if err := s.InsertDevices(ctx, rows); err != nil {
			t.Fatal(err)
		}
	}
	var n uint64
	if err := s.conn.QueryRow(ctx, `SELECT count() FROM mau_devices`).Scan(&n); err != nil || n != 2 {
		t.Errorf("rows stored = %d (%v), want 2: the retry dropped, the other flush kept", n, err)
	}
}

// TestMAUSQLLegacyInvoice: an invoice rated before migration 005 has no watermark; its evidence
// keeps selecting rows by its inserted_at bound, a later one by its watermark.
func TestMAUSQLLegacyInvoice(t *testing.T) {
	inv := &Invoice{TenantID: "acme", Month: "2026-10", BillableApps: []string{"a"},
		LegacyDevicesThrough: time.Date(2026, 11, 3, 1, 2, 3, 456e6, time.UTC)}
	want := "SELECT uniqExact(device_key) AS mau FROM db.mau_devices WHERE tenant_id = 'acme' AND month = '2026-10'" +
		" AND has(['a'], app_id) AND inserted_at <= toDateTime64('2026-11-03 01:02:03.456', 3, 'UTC')"
	if got := MAUSQL("db", inv); got != want {
		t.Errorf("legacy mau_sql =\n%s\nwant\n%s", got, want)
	}
	inv.Watermark = Watermark{0: 5}
	want = "SELECT uniqExact(device_key) AS mau FROM db.mau_devices WHERE tenant_id = 'acme' AND month = '2026-10'" +
		" AND has(['a'], app_id) AND kafka_offset < map(0, 5)[kafka_partition]"
	if got := MAUSQL("db", inv); got != want {
		t.Errorf("mau_sql =\n%s\nwant\n%s", got, want)
	}
}

// TestCancelledCallsLeaveTheServerUp: calls whose contexts end at random moments, some before
// the call and most during it, never reach the server as a torn connection (which kills the
// embedded ClickHouse: see detached); the server answers afterwards and every insert that
// returned nil is stored.
func TestCancelledCallsLeaveTheServerUp(t *testing.T) {
	s := openMigrated(t)
	ctx := context.Background()
	var mu sync.Mutex
	stored, cancelled := 0, 0
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 60 {
				rows := make([]DeviceRow, 2000)
				for j := range rows {
					g := fmt.Sprintf("w%d-%d-%d", w, i, j)
					rows[j] = DeviceRow{TenantID: "acme", Month: "2026-10", AppID: "a", Key: event.KeyOf("acme", "a", g), GUID: g,
						FirstSeenAt: time.Date(2026, 10, 2, 0, 0, 0, 0, time.UTC), FirstEvent: event.Open, Offset: int64(j)}
				}
				cctx, cancel := context.WithTimeout(ctx, time.Duration(i%20)*time.Millisecond)
				err := s.InsertDevices(cctx, rows)
				_, ferr := s.Facts(cctx, TenantMonth{"acme", "2026-10"}, nil)
				cancel()
				mu.Lock()
				if err == nil {
					stored += len(rows)
				}
				if errors.Is(err, context.DeadlineExceeded) || errors.Is(ferr, context.DeadlineExceeded) {
					cancelled++
				} else if err != nil || ferr != nil {
					t.Errorf("insert %v, facts %v", err, ferr)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("ClickHouse is gone after cancelled calls: %v", err)
	}
	if cancelled == 0 {
		t.Error("no call saw its context end: the test cancelled nothing")
	}
	if n, err := s.MAU(ctx, "acme", "2026-10"); err != nil || n != uint64(stored) {
		t.Errorf("MAU %d (%v); inserts that returned nil stored %d devices", n, err, stored)
	}
	t.Logf("%d calls ended by their context; %d devices stored", cancelled, stored)
}
