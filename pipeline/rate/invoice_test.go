package rate

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/maumeter/maumeter/pipeline/chstore"
	"github.com/maumeter/maumeter/pkg/calendar"
	"github.com/maumeter/maumeter/pkg/plan"
	"github.com/maumeter/maumeter/pkg/tenant"
)

func TestDueByIsTheEndOfDay3InTheTenantsZone(t *testing.T) {
	for _, c := range []struct {
		month, zone string
		want        string // UTC
	}{
		{"2026-10", "UTC", "2026-11-04T00:00:00Z"},
		{"2026-10", "Asia/Shanghai", "2026-11-03T16:00:00Z"},
		{"2026-10", "America/New_York", "2026-11-04T05:00:00Z"}, // EST from Nov 1
		{"2026-02", "Pacific/Auckland", "2026-03-03T11:00:00Z"}, // NZDT
		{"2026-12", "UTC", "2027-01-04T00:00:00Z"},
	} {
		m, _ := calendar.ParseMonth(c.month)
		loc, err := time.LoadLocation(c.zone)
		if err != nil {
			t.Fatal(err)
		}
		if got := DueBy(m, loc).UTC().Format(time.RFC3339); got != c.want {
			t.Errorf("DueBy(%s, %s) = %s, want %s", c.month, c.zone, got, c.want)
		}
	}
}

func TestInvoiceIDDerivesFromTenantMonthVersion(t *testing.T) {
	a := InvoiceID("acme", "2026-10", 1)
	if a != InvoiceID("acme", "2026-10", 1) || len(a) != 24 || !strings.HasPrefix(a, "inv_") {
		t.Fatalf("InvoiceID = %q: want a stable inv_ + 20 hex", a)
	}
	seen := map[string]bool{a: true}
	for _, other := range []string{InvoiceID("acme", "2026-10", 2), InvoiceID("acme", "2026-11", 1), InvoiceID("acme2", "026-10", 1)} {
		if seen[other] {
			t.Errorf("InvoiceID collision: %s", other)
		}
		seen[other] = true
	}
}

func TestHLLAgrees(t *testing.T) {
	for _, c := range []struct {
		exact, est uint64
		want       bool
	}{
		{0, 0, true}, {0, 3, true}, {0, 4, false},
		{1_000_000, 1_024_000, true},  // 2.4% with a 0.81% error: 3σ = 2.43%
		{1_000_000, 1_025_000, false}, // 2.5%
		{1_000_000, 975_000, false},
	} {
		if got := HLLAgrees(c.exact, c.est, 0.0081); got != c.want {
			t.Errorf("HLLAgrees(%d, %d) = %v, want %v", c.exact, c.est, got, c.want)
		}
	}
}

func testTenant(t *testing.T, extra string) *tenant.Tenant {
	t.Helper()
	cat, err := tenant.Parse("t.yaml", []byte(`tenants:
  - id: acme
    plan: pro
    purchased: 2026-03-15
    time_zone: Asia/Shanghai
    apps: [acme-app]
    testing_apps: [acme-qa]
`+extra))
	if err != nil {
		t.Fatal(err)
	}
	a, _ := cat.Tenant("acme")
	return a
}

func TestBuild(t *testing.T) {
	a := testTenant(t, "")
	r := &chstore.Rollup{TenantID: "acme", Month: "2026-10", Version: 1, Kind: "close", MAU: 212_400,
		MAUByApp: map[string]uint64{"acme-app": 212_345, "acme-qa": 55}, HLLEstimate: 213_000, HLLRelativeError: 0.0081,
		Watermark: chstore.Watermark{1: 900, 0: 1200}, MiniPrograms: 60}
	now := time.Date(2026, 11, 3, 2, 0, 0, 0, time.UTC)
	inv, err := Build(a, plans(t), r, nil, "maumeter", now)
	if err != nil {
		t.Fatal(err)
	}
	if inv.MAU != 212_345 || inv.TestingMAU != 55 || inv.AmountUSD.StringFixed(2) != "185.18" || inv.Plan != "pro" ||
		strings.Join(inv.BillableApps, ",") != "acme-app" || !inv.HLLAgrees || inv.InvoiceID != InvoiceID("acme", "2026-10", 1) ||
		!inv.AdjustmentUSD.IsZero() || inv.PreviousInvoiceID != "" {
		t.Fatalf("invoice = %+v", inv)
	}
	wantSQL := "SELECT uniqExact(device_key) AS mau FROM maumeter.mau_devices WHERE tenant_id = 'acme' AND month = '2026-10'" +
		" AND has(['acme-app'], app_id) AND kafka_offset < map(0, 1200, 1, 900)[kafka_partition]"
	if inv.MAUSQL != wantSQL {
		t.Errorf("mau_sql =\n%s\nwant\n%s", inv.MAUSQL, wantSQL)
	}
	// Entitlements: 1 production app of 1, 1 testing app of 2, 60 mini programs of the 50 a Pro
	// plan may release: reported, not charged.
	var ent Entitlements
	if err := json.Unmarshal([]byte(inv.Entitlements), &ent); err != nil || ent.ProductionApps != 1 || ent.ProductionAppsLimit != 1 ||
		ent.TestingApps != 1 || ent.TestingAppsLimit != 2 || ent.MiniPrograms != 60 || ent.MiniProgramsLimit != 50 ||
		strings.Join(ent.Flags, ",") != "mini_programs_exceeded" {
		t.Errorf("entitlements %s (%v)", inv.Entitlements, err)
	}

	// A restatement with 3 more devices: 12,348 × 0.015 = 185.22, adjustment 0.04.
	r2 := *r
	r2.Version, r2.Kind, r2.MAU = 2, "restatement", 212_403
	r2.MAUByApp = map[string]uint64{"acme-app": 212_348, "acme-qa": 55}
	inv2, err := Build(a, plans(t), &r2, inv, "maumeter", now)
	if err != nil {
		t.Fatal(err)
	}
	if inv2.AmountUSD.StringFixed(2) != "185.22" || inv2.AdjustmentUSD.StringFixed(2) != "0.04" ||
		inv2.PreviousInvoiceID != inv.InvoiceID || inv2.PreviousRollupVersion != 1 || !inv2.PreviousAmountUSD.Equal(inv.AmountUSD) {
		t.Errorf("restated invoice = %+v", inv2)
	}

	// Testing apps are billed when the tenant says so.
	b := testTenant(t, "    bill_testing_apps: true\n")
	inv3, err := Build(b, plans(t), r, nil, "maumeter", now)
	if err != nil {
		t.Fatal(err)
	}
	if inv3.MAU != 212_400 || strings.Join(inv3.BillableApps, ",") != "acme-app,acme-qa" || inv3.AmountUSD.StringFixed(2) != "186.00" {
		t.Errorf("billing testing apps: %+v", inv3)
	}

	// A POC tenant: its cap covers its testing apps; above it, flagged and never charged.
	cat, err := tenant.Parse("t.yaml", []byte("tenants:\n  - {id: initech, plan: poc_pro, purchased: 2026-09-01, testing_apps: [initech-test]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	poc, _ := cat.Tenant("initech")
	ro := &chstore.Rollup{TenantID: "initech", Month: "2026-10", Version: 1, Kind: "close", MAU: 238, MAUByApp: map[string]uint64{"initech-test": 238}}
	inv4, err := Build(poc, plans(t), ro, nil, "maumeter", now)
	if err != nil {
		t.Fatal(err)
	}
	if inv4.MAU != 238 || inv4.OverageMAU != 38 || !inv4.AmountUSD.IsZero() || strings.Join(inv4.Flags, ",") != "poc_cap_exceeded" ||
		strings.Join(inv4.BillableApps, ",") != "initech-test" {
		t.Errorf("POC invoice = %+v", inv4)
	}

	// Rollups that cannot be rated as they are.
	bad := *r
	bad.MAU = 1
	if _, err := Build(a, plans(t), &bad, nil, "maumeter", now); !errors.Is(err, ErrInvalidRollup) {
		t.Errorf("MAU not the sum of its apps: err = %v, want ErrInvalidRollup", err)
	}
	bad = *r
	bad.Month = "2026-13"
	if _, err := Build(a, plans(t), &bad, nil, "maumeter", now); !errors.Is(err, ErrInvalidRollup) {
		t.Errorf("bad month: err = %v, want ErrInvalidRollup", err)
	}
}

func TestStatementsAndFormats(t *testing.T) {
	d := decimal.RequireFromString
	invs := []*chstore.Invoice{
		{TenantID: "acme", Month: "2026-09", InvoiceID: "inv_a9", RollupVersion: 1, AmountUSD: d("1.5"), Flags: []string{}},
		{TenantID: "acme", Month: "2026-10", InvoiceID: "inv_a10", RollupVersion: 1, AmountUSD: d("0.23"), MAU: 25},
		{TenantID: "acme", Month: "2026-10", InvoiceID: "inv_a10v3", RollupVersion: 3, AmountUSD: d("0.27"), MAU: 28,
			PreviousInvoiceID: "inv_a10", PreviousRollupVersion: 1, AdjustmentUSD: d("0.04"), Flags: []string{"poc_cap_exceeded"}},
		{TenantID: "globex", Month: "2026-10", InvoiceID: "inv_g10", RollupVersion: 1, AmountUSD: d("0"), Flags: []string{"no_active_plan"}},
	}
	sts := Statements(invs)
	if len(sts) != 3 || sts[1].InvoiceID != "inv_a10v3" || sts[1].AmountUSD != "0.27" || len(sts[1].Adjustments) != 1 ||
		sts[1].Adjustments[0].Cents != 4 || sts[1].Adjustments[0].AmountUSD != "0.04" || sts[0].AmountUSD != "1.50" ||
		len(sts[0].Adjustments) != 0 || sts[2].AmountUSD != "0.00" {
		t.Fatalf("statements = %+v", sts)
	}

	var js bytes.Buffer
	if err := Write(&js, "json", sts); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(js.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("json wrote %d lines, want 3", len(lines))
	}
	var obj map[string]any
	if err := json.Unmarshal([]byte(lines[1]), &obj); err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{"tenant_id", "month", "plan", "mau", "testing_mau", "included_mau", "overage_mau",
		"unit_price_usd", "amount_usd", "flags", "adjustments", "rollup_version", "invoice_id"} {
		if _, ok := obj[field]; !ok {
			t.Errorf("json statement has no %s: %s", field, lines[1])
		}
	}
	if obj["amount_usd"] != "0.27" {
		t.Errorf("amount_usd = %v, want the string 0.27", obj["amount_usd"])
	}

	var cs bytes.Buffer
	if err := Write(&cs, "csv", sts); err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(&cs).ReadAll()
	if err != nil || len(recs) != 4 || recs[2][8] != "0.27" || recs[2][10] != "v3:0.04" || recs[3][9] != "no_active_plan" {
		t.Errorf("csv = %v, %v", recs, err)
	}

	var tb bytes.Buffer
	if err := Write(&tb, "table", sts); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(tb.String(), "inv_a10v3") || strings.Count(tb.String(), "\n") != 4 {
		t.Errorf("table =\n%s", tb.String())
	}
	if err := Write(&tb, "xml", sts); err == nil {
		t.Error("format xml accepted")
	}
}

func plans(t testing.TB) *plan.Catalog {
	t.Helper()
	c, err := plan.Default()
	if err != nil {
		t.Fatal(err)
	}
	return c
}
