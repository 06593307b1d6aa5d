package main

import (
	"bytes"
	"testing"
	"time"

	"github.com/maumeter/maumeter/pkg/calendar"
	"github.com/maumeter/maumeter/pkg/plan"
)

// The demo's catalogue, written from the clock, prices every month its traffic touches (the
// last 30 days, so this month and the one before) with the tenant's plan, whatever the date:
// month ends and starts, January (the year before), a February 29, years ahead.
func TestDemoCatalogueNeverExpires(t *testing.T) {
	plans, err := plan.Default()
	if err != nil {
		t.Fatal(err)
	}
	// In the month it was written for, the file as it is; 31 months later, every day 31 months on.
	if data, err := demoCatalogue(time.Date(2026, 12, 31, 23, 0, 0, 0, time.UTC)); err != nil || !bytes.Equal(data, demoTenants) {
		t.Errorf("in December 2026: %v\n%s", err, data)
	}
	if data, err := demoCatalogue(time.Date(2029, 7, 15, 10, 0, 0, 0, time.UTC)); err != nil ||
		!bytes.Contains(data, []byte("purchased: 2028-10-15\n")) || !bytes.Contains(data, []byte("purchased: 2028-08-10\n")) ||
		!bytes.Contains(data, []byte("purchased: 2029-04-01\n")) {
		t.Errorf("in July 2029: %v\n%s", err, data)
	}
	want := map[string]string{"acme": "pro", "globex": "enterprise", "initech": "poc_pro"}
	for _, now := range []time.Time{
		time.Date(2026, 12, 2, 11, 0, 0, 0, time.UTC),
		time.Date(2027, 1, 1, 0, 30, 0, 0, time.UTC),
		time.Date(2027, 12, 31, 23, 59, 0, 0, time.UTC),
		time.Date(2028, 2, 29, 12, 0, 0, 0, time.UTC),
		time.Date(2028, 3, 31, 20, 0, 0, 0, time.UTC),
		time.Date(2029, 7, 15, 10, 0, 0, 0, time.UTC),
		time.Date(2041, 10, 31, 23, 0, 0, 0, time.UTC),
	} {
		data, err := demoCatalogue(now)
		if err != nil {
			t.Fatalf("%s: %v", now, err)
		}
		cat, err := plans.ParseTenants("demo_tenants.yaml", data)
		if err != nil {
			t.Fatalf("%s: %v\n%s", now, err, data)
		}
		if len(cat.Tenants) != len(want) {
			t.Fatalf("%s: %d tenants, want %d", now, len(cat.Tenants), len(want))
		}
		for _, tn := range cat.Tenants {
			for _, at := range []time.Time{now, now.Add(-30 * 24 * time.Hour)} {
				m := calendar.MonthOf(at, tn.Location())
				if b := plans.Price(tn, plan.Usage{Month: m}); b.Plan != want[tn.ID] {
					t.Errorf("at %s, %s %s is priced on %q (purchased %s), want %s", now.Format(time.RFC3339), tn.ID, m, b.Plan, tn.Purchased, want[tn.ID])
				}
			}
			if limit, poc := plans.HardCap(tn, calendar.MonthOf(now, tn.Location())); poc != (tn.ID == "initech") || poc && limit != 200 {
				t.Errorf("at %s, %s: cap %d %v", now.Format(time.RFC3339), tn.ID, limit, poc)
			}
		}
	}
}
