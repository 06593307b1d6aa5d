package chstore

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/maumeter/maumeter/internal/servicetest"
	"github.com/maumeter/maumeter/pkg/event"
)

// openTest connects to the ClickHouse that `make test` starts, in a fresh database.
func openTest(t *testing.T) *Store {
	t.Helper()
	addr := servicetest.Require(t, servicetest.ClickHouse)[0]
	ctx := context.Background()
	s, err := Open(ctx, Config{Addr: addr, Database: fmt.Sprintf("chstore_test_%d", time.Now().UnixNano())}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	// The database is left behind, like every other test's: the services' data dir is thrown
	// away after the run. A DROP DATABASE here, while other packages' tests use the same server,
	// is a suspect (unconfirmed) in the two runs in which the embedded ClickHouse died.
	t.Cleanup(func() { s.Close() })
	return s
}

// openMigrated is openTest with every migration applied.
func openMigrated(t *testing.T) *Store {
	t.Helper()
	s := openTest(t)
	if _, err := s.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestMigrateTwiceIsANoOp(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	first, err := s.Migrate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(first) == 0 || first[0] != 1 {
		t.Fatalf("first migrate applied %v, want versions from 1", first)
	}
	second, err := s.Migrate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(second) != 0 {
		t.Errorf("second migrate applied %v, want nothing", second)
	}
}

func TestDevicesAreASet(t *testing.T) {
	s := openMigrated(t)
	ctx := context.Background()
	row := func(tenant, month, guid string, part int32) DeviceRow {
		return DeviceRow{TenantID: tenant, Month: month, AppID: "app", Key: event.KeyOf(tenant, "app", guid), GUID: guid,
			FirstSeenAt: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), FirstEvent: event.Open, MiniProgramID: "mp", Partition: part}
	}
	rows := []DeviceRow{row("a", "2026-11", "g1", 0), row("a", "2026-11", "g2", 1), row("a", "2026-10", "g1", 0), row("b", "2026-11", "g1", 0)}
	// The same rows twice, as after a crash between insert and commit: MAU must not move.
	for range 2 {
		if err := s.InsertDevices(ctx, rows); err != nil {
			t.Fatal(err)
		}
	}
	f := func(tenant, month string, want uint64) {
		t.Helper()
		got, err := s.MAU(ctx, tenant, month)
		if err != nil || got != want {
			t.Errorf("MAU(%s, %s) = %d, %v; want %d", tenant, month, got, err, want)
		}
	}
	f("a", "2026-11", 2)
	f("a", "2026-10", 1)
	f("b", "2026-11", 1)
	f("b", "2026-10", 0)
	all, err := s.AllMAU(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []MonthlyMAU{{"a", "2026-10", 1}, {"a", "2026-11", 2}, {"b", "2026-11", 1}}
	if !slices.Equal(all, want) {
		t.Errorf("AllMAU = %v, want %v", all, want)
	}
	var got []string
	err = s.PartitionDevices(ctx, 0, func(tenant, month string, k event.DeviceKey) {
		got = append(got, fmt.Sprintf("%s %s %s", tenant, month, k))
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	got = slices.Compact(got) // the copies fold in a merge, not necessarily yet
	wantKeys := []string{
		fmt.Sprintf("a 2026-10 %s", event.KeyOf("a", "app", "g1")),
		fmt.Sprintf("a 2026-11 %s", event.KeyOf("a", "app", "g1")),
		fmt.Sprintf("b 2026-11 %s", event.KeyOf("b", "app", "g1")),
	}
	slices.Sort(wantKeys)
	if !slices.Equal(got, wantKeys) {
		t.Errorf("PartitionDevices(0) = %v, want %v", got, wantKeys)
	}
}

func TestAppUsage(t *testing.T) {
	s := openMigrated(t)
	ctx := context.Background()
	day := func(d, h, m, sec, ms int) time.Time { return time.Date(2026, 11, d, h, m, sec, ms*1e6, time.UTC) }
	row := func(tenant, month, app, guid string, seen time.Time) DeviceRow {
		return DeviceRow{TenantID: tenant, Month: month, AppID: app, Key: event.KeyOf(tenant, app, guid), GUID: guid,
			FirstSeenAt: seen, FirstEvent: event.Search}
	}
	rows := []DeviceRow{
		row("a", "2026-11", "x", "g1", day(1, 0, 0, 0, 0)),
		row("a", "2026-11", "x", "g2", day(8, 0, 0, 0, 0)),       // the window's first instant: in
		row("a", "2026-11", "x", "g3", day(14, 23, 59, 59, 999)), // its last millisecond: in
		row("a", "2026-11", "x", "g4", day(15, 0, 0, 0, 0)),      // its end: out
		row("a", "2026-11", "x", "g5", day(7, 23, 59, 59, 999)),  // a millisecond early: out
		row("a", "2026-11", "y", "g1", day(10, 12, 0, 0, 0)),     // same guid, other app: another device
		row("a", "2026-10", "x", "g9", day(10, 12, 0, 0, 0)),     // another month
		row("b", "2026-11", "x", "g1", day(10, 12, 0, 0, 0)),     // another tenant
	}
	// Then a replayed copy, in a block of its own: it counts once.
	for _, batch := range [][]DeviceRow{rows, rows[1:2]} {
		if err := s.InsertDevices(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	f := func(from, to time.Time, wantMAU, wantNew map[string]uint64) {
		t.Helper()
		u, err := s.AppUsage(ctx, TenantMonth{"a", "2026-11"}, from, to)
		if err != nil {
			t.Fatal(err)
		}
		if !maps.Equal(u.MAUByApp, wantMAU) || !maps.Equal(u.NewByApp, wantNew) {
			t.Errorf("AppUsage [%s, %s) = %v new %v, want %v new %v", from, to, u.MAUByApp, u.NewByApp, wantMAU, wantNew)
		}
	}
	mau := map[string]uint64{"x": 5, "y": 1}
	f(day(8, 0, 0, 0, 0), day(15, 0, 0, 0, 0), mau, map[string]uint64{"x": 2, "y": 1})
	f(time.Time{}, time.Time{}, mau, map[string]uint64{})
	u, err := s.AppUsage(ctx, TenantMonth{"nobody", "2026-11"}, day(8, 0, 0, 0, 0), day(15, 0, 0, 0, 0))
	if err != nil || len(u.MAUByApp) != 0 || len(u.NewByApp) != 0 {
		t.Errorf("AppUsage of a tenant without devices = %+v, %v; want empty", u, err)
	}
}
