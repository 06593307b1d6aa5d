package chstore

import (
	"context"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/maumeter/maumeter/pkg/event"
)

// TestCapQueries: the counts and key lists the POC cap publisher reads, with rows written twice
// (as after a crash) and tenants and months it did not ask for.
func TestCapQueries(t *testing.T) {
	s := openMigrated(t)
	ctx := context.Background()
	base := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	row := func(tenant, month, guid string, minute int) DeviceRow {
		return DeviceRow{TenantID: tenant, Month: month, AppID: "app", Key: event.KeyOf(tenant, "app", guid), GUID: guid,
			FirstSeenAt: base.Add(time.Duration(minute) * time.Minute), FirstEvent: event.Search}
	}
	rows := []DeviceRow{
		row("poc", "2026-11", "late", 30), row("poc", "2026-11", "early", 1), row("poc", "2026-11", "mid", 10),
		row("poc", "2026-10", "old", 0), row("poc", "2026-09", "older", 0),
		row("pro", "2026-11", "x", 0),
	}
	for range 2 {
		if err := s.InsertDevices(ctx, rows); err != nil {
			t.Fatal(err)
		}
	}
	counts, err := s.DeviceCounts(ctx, []string{"poc", "nobody"}, "2026-10")
	if err != nil {
		t.Fatal(err)
	}
	want := map[TenantMonth]uint64{{"poc", "2026-11"}: 3, {"poc", "2026-10"}: 1}
	if !maps.Equal(counts, want) {
		t.Errorf("DeviceCounts = %v, want %v", counts, want)
	}
	if counts, err := s.DeviceCounts(ctx, nil, "2026-10"); err != nil || len(counts) != 0 {
		t.Errorf("DeviceCounts(no tenants) = %v, %v; want nothing", counts, err)
	}
	f := func(limit int, guids ...string) {
		t.Helper()
		got, err := s.DeviceKeys(ctx, TenantMonth{"poc", "2026-11"}, limit)
		if err != nil {
			t.Fatal(err)
		}
		var wantKeys []event.DeviceKey
		for _, g := range guids {
			wantKeys = append(wantKeys, event.KeyOf("poc", "app", g))
		}
		if !slices.Equal(got, wantKeys) {
			t.Errorf("DeviceKeys(limit %d) = %v, want %v (%v)", limit, got, wantKeys, guids)
		}
	}
	f(10, "early", "mid", "late") // first seen first, each once
	f(2, "early", "mid")
}
