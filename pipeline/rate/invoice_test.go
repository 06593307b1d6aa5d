package rate

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
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
		!inv.AdjustmentUSD.IsZero() || inv.PreviousInvoiceID != "" || inv.BillingSeq != 1 || !inv.BilledBeforeUSD.IsZero() ||
		!inv.ChargeUSD.Equal(inv.AmountUSD) {
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

	// A restatement with 3 more devices: 12,348 × 0.015 = 185.22; 185.18 billed before it, so
	// it charges an adjustment of 0.04.
	r2 := *r
	r2.Version, r2.Kind, r2.MAU = 2, "restatement", 212_403
	r2.MAUByApp = map[string]uint64{"acme-app": 212_348, "acme-qa": 55}
	inv2, err := Build(a, plans(t), &r2, []*chstore.Invoice{inv}, "maumeter", now)
	if err != nil {
		t.Fatal(err)
	}
	if inv2.AmountUSD.StringFixed(2) != "185.22" || inv2.AdjustmentUSD.StringFixed(2) != "0.04" || inv2.ChargeUSD.StringFixed(2) != "0.04" ||
		inv2.BilledBeforeUSD.StringFixed(2) != "185.18" || inv2.BillingSeq != 2 ||
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
	// acme: September billed (run 1), then restated (v2, pending); October v1, v3 and a stale v2
	// rated after v3. globex: October went on its November bill (run 1).
	invs := []*chstore.Invoice{
		{TenantID: "acme", Month: "2026-09", InvoiceID: "inv_a9", RollupVersion: 1, AmountUSD: d("1.5"), Flags: []string{},
			BillingSeq: 1, ChargeUSD: d("1.5")},
		{TenantID: "acme", Month: "2026-09", InvoiceID: "inv_a9v2", RollupVersion: 2, AmountUSD: d("2"), BillingSeq: 2,
			BilledBeforeUSD: d("1.5"), ChargeUSD: d("0.5"), AdjustmentUSD: d("0.5"), PreviousInvoiceID: "inv_a9", PreviousRollupVersion: 1},
		{TenantID: "acme", Month: "2026-10", InvoiceID: "inv_a10", RollupVersion: 1, AmountUSD: d("0.23"), MAU: 25, BillingSeq: 1, ChargeUSD: d("0.23")},
		{TenantID: "acme", Month: "2026-10", InvoiceID: "inv_a10v2", RollupVersion: 2, AmountUSD: d("0.25"), MAU: 26, BillingSeq: 3,
			BilledBeforeUSD: d("0.27"), PreviousInvoiceID: "inv_a10v3", PreviousRollupVersion: 3, SupersededByVersion: 3, Flags: []string{FlagStaleVersion}},
		{TenantID: "acme", Month: "2026-10", InvoiceID: "inv_a10v3", RollupVersion: 3, AmountUSD: d("0.27"), MAU: 28, BillingSeq: 2,
			BilledBeforeUSD: d("0.23"), PreviousInvoiceID: "inv_a10", PreviousRollupVersion: 1, AdjustmentUSD: d("0.04"), ChargeUSD: d("0.04"),
			Flags: []string{"poc_cap_exceeded"}},
		{TenantID: "globex", Month: "2026-10", InvoiceID: "inv_g10", RollupVersion: 1, AmountUSD: d("0"), Flags: []string{"no_active_plan"}, BillingSeq: 1},
	}
	posted := time.Date(2026, 10, 2, 9, 0, 0, 0, time.UTC)
	runs := []*chstore.BillingRun{
		{TenantID: "acme", RunSeq: 1, BillMonth: "2026-09", PostedThrough: map[string]uint32{"2026-09": 1}, PostedAt: posted, PostedBy: PostedBy},
		{TenantID: "globex", RunSeq: 1, BillMonth: "2026-11", PostedThrough: map[string]uint32{"2026-10": 1}, PostedAt: posted, PostedBy: PostedBy},
	}
	sts := Statements(invs, runs)
	if len(sts) != 3 {
		t.Fatalf("%d statements, want 3: %+v", len(sts), sts)
	}
	f := func(st Statement, want string) {
		t.Helper()
		got := fmt.Sprintf("%s %s %s %s adj[%s] bill %s %s+%s=%s [%s]", st.TenantID, st.Month, st.InvoiceID, st.AmountUSD,
			adjustments(st.Adjustments, false), st.Bill.Status, st.Bill.MonthUSD, st.Bill.AdjustmentsUSD, st.Bill.TotalUSD,
			adjustments(st.Bill.Adjustments, true))
		if got != want {
			t.Errorf("statement:\n got %s\nwant %s", got, want)
		}
	}
	f(sts[0], "acme 2026-09 inv_a9v2 2.00 adj[v2:0.50:pending] bill posted 1.50+0.00=1.50 []")
	f(sts[1], "acme 2026-10 inv_a10v3 0.27 adj[v3:0.04:pending;v2:0.00:stale] bill draft 0.27+0.50=0.77 [2026-09/v2:0.50:pending]")
	f(sts[2], "globex 2026-10 inv_g10 0.00 adj[] bill skipped 0.00+0.00=0.00 []")
	if a := sts[1].Adjustments[1]; a.SupersededByVersion != 3 || a.BillingSeq != 3 || a.BilledBeforeUSD != "0.27" || a.PreviousRollupVersion != 3 {
		t.Errorf("stale adjustment = %+v", a)
	}
	if b := sts[0].Bill; b.RunSeq != 1 || b.PostedAt == nil || !b.PostedAt.Equal(posted) || b.PostedBy != PostedBy {
		t.Errorf("posted bill = %+v", b)
	}

	// October posted: every line of the draft is now on it, the stale one still stale.
	runs = append(runs, &chstore.BillingRun{TenantID: "acme", RunSeq: 2, BillMonth: "2026-10",
		PostedThrough: map[string]uint32{"2026-09": 2, "2026-10": 3}, PostedAt: posted.AddDate(0, 1, 0)})
	after := Statements(invs, runs)
	f(after[0], "acme 2026-09 inv_a9v2 2.00 adj[v2:0.50:posted] bill posted 1.50+0.00=1.50 []")
	f(after[1], "acme 2026-10 inv_a10v3 0.27 adj[v3:0.04:posted;v2:0.00:stale] bill posted 0.27+0.50=0.77 [2026-09/v2:0.50:posted]")
	if a := after[1].Adjustments; a[0].PostedOn != "2026-10" || a[1].PostedOn != "2026-10" || after[0].Adjustments[0].PostedOn != "2026-10" {
		t.Errorf("posted_on: %+v, %+v", a, after[0].Adjustments)
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
		"unit_price_usd", "amount_usd", "flags", "adjustments", "rollup_version", "invoice_id", "bill"} {
		if _, ok := obj[field]; !ok {
			t.Errorf("json statement has no %s: %s", field, lines[1])
		}
	}
	if obj["amount_usd"] != "0.27" || obj["bill"].(map[string]any)["total_usd"] != "0.77" {
		t.Errorf("amount_usd = %v, bill = %v; want the strings 0.27 and total 0.77", obj["amount_usd"], obj["bill"])
	}

	var cs bytes.Buffer
	if err := Write(&cs, "csv", sts); err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(&cs).ReadAll()
	if err != nil || len(recs) != 4 || recs[2][8] != "0.27" || recs[2][10] != "v3:0.04:pending;v2:0.00:stale" || recs[3][9] != "no_active_plan" ||
		strings.Join(recs[0][20:], ",") != "bill_status,bill_month_usd,bill_adjustments_usd,bill_total_usd,bill_adjustments" ||
		strings.Join(recs[2][20:], ",") != "draft,0.27,0.50,0.77,2026-09/v2:0.50:pending" {
		t.Errorf("csv = %v, %v", recs, err)
	}

	var tb bytes.Buffer
	if err := Write(&tb, "table", sts); err != nil {
		t.Fatal(err)
	}
	// The statements (a header and 3 rows), a blank line, the section's title, its header and
	// its 4 rows: September's v2, October's v3 and v2, and September's v2 on October's bill.
	if out := tb.String(); !strings.Contains(out, "inv_a10v3") || strings.Count(out, "\n") != 11 ||
		!strings.Contains(out, "adjustments: the month's own, and the earlier months' on its bill") || strings.Count(out, "inv_a9v2") != 3 {
		t.Errorf("table =\n%s", out)
	}
	if err := Write(&tb, "xml", sts); err == nil {
		t.Error("format xml accepted")
	}
}

// rateInOrder rates rollup versions in the order given, as Rate does without I/O: a version
// already rated is skipped (a replay), any other is placed by Adjust after the invoices so far.
// It returns the invoices in billing order.
func rateInOrder(order []uint32, amounts map[uint32]string) []*chstore.Invoice {
	var rated []*chstore.Invoice
	for _, v := range order {
		if slices.ContainsFunc(rated, func(inv *chstore.Invoice) bool { return inv.RollupVersion == v }) {
			continue
		}
		inv := &chstore.Invoice{InvoiceID: fmt.Sprint("inv_v", v), TenantID: "acme", Month: "2026-10", RollupVersion: v,
			AmountUSD: decimal.RequireFromString(amounts[v]), Flags: []string{}}
		Adjust(inv, rated)
		rated = append(rated, inv)
	}
	return rated
}

// checkBillingOrder checks the invariants of a month's invoices in billing order: gapless
// billing_seq, billed_before the sum of the charges before, every charge by the rule, and the
// charges adding up to the newest version's amount after every invoice.
func checkBillingOrder(t *testing.T, name string, invs []*chstore.Invoice) {
	t.Helper()
	sum := decimal.Zero
	var newest *chstore.Invoice
	for i, inv := range invs {
		stale := newest != nil && inv.RollupVersion < newest.RollupVersion
		want := inv.AmountUSD.Sub(sum)
		if stale {
			want = decimal.Zero
		}
		wantAdj := want
		if i == 0 {
			wantAdj = decimal.Zero // the month's own bill, not an adjustment
		}
		if inv.BillingSeq != uint32(i+1) || !inv.BilledBeforeUSD.Equal(sum) || !inv.ChargeUSD.Equal(want) ||
			slices.Contains(inv.Flags, FlagStaleVersion) != stale || (inv.SupersededByVersion != 0) != stale ||
			!inv.AdjustmentUSD.Equal(wantAdj) {
			t.Errorf("%s: invoice %d = v%d seq %d billed before %s charge %s adjustment %s flags %v superseded by %d; want seq %d, billed before %s, charge %s, stale %v",
				name, i, inv.RollupVersion, inv.BillingSeq, inv.BilledBeforeUSD, inv.ChargeUSD, inv.AdjustmentUSD, inv.Flags,
				inv.SupersededByVersion, i+1, sum, want, stale)
		}
		if stale && inv.SupersededByVersion != newest.RollupVersion {
			t.Errorf("%s: stale v%d superseded by %d, want %d", name, inv.RollupVersion, inv.SupersededByVersion, newest.RollupVersion)
		}
		if newest == nil || inv.RollupVersion > newest.RollupVersion {
			newest = inv
		}
		sum = sum.Add(inv.ChargeUSD)
		if !sum.Equal(newest.AmountUSD) {
			t.Errorf("%s: after v%d the month has billed %s, its newest version v%d is %s", name, inv.RollupVersion, sum,
				newest.RollupVersion, newest.AmountUSD)
		}
	}
}

// permutations returns every order of vs.
func permutations(vs []uint32) [][]uint32 {
	if len(vs) <= 1 {
		return [][]uint32{slices.Clone(vs)}
	}
	var out [][]uint32
	for i := range vs {
		rest := slices.Concat(vs[:i], vs[i+1:])
		for _, p := range permutations(rest) {
			out = append(out, append([]uint32{vs[i]}, p...))
		}
	}
	return out
}

// TestAdjustEveryOrderBillsTheNewestVersionOnce rates v1..v4 in every order, with replays
// (the topic read again, each message delivered twice, a version replayed after every rating)
// and `rate --stored` (every version in version order) after the first two: every way bills
// exactly v4's amount in total, and the versions rated after a newer one are flagged stale.
func TestAdjustEveryOrderBillsTheNewestVersionOnce(t *testing.T) {
	for _, amounts := range []map[uint32]string{
		{1: "150.00", 2: "450.00", 3: "300.00", 4: "512.37"}, // not monotonic: the rule must not assume it
		{1: "0.23", 2: "0.27", 3: "0.27", 4: "1.05"},
		{1: "185.18", 2: "0.00", 3: "185.22", 4: "185.19"}, // a credit
	} {
		perms := permutations([]uint32{1, 2, 3, 4})
		if len(perms) != 24 {
			t.Fatalf("%d permutations, want 24", len(perms))
		}
		cases := 0
		for _, p := range perms {
			for name, order := range map[string][]uint32{
				"once":               p,
				"topic read again":   slices.Concat(p, p),
				"each delivered 2x":  {p[0], p[0], p[1], p[1], p[2], p[2], p[3], p[3]},
				"first replayed":     {p[0], p[1], p[0], p[2], p[0], p[3], p[0]},
				"rate --stored":      slices.Concat(p[:2], []uint32{1, 2, 3, 4}, p),
				"stored then replay": slices.Concat([]uint32{1, 2, 3, 4}, p),
			} {
				name := fmt.Sprintf("%v %s (amounts %v)", p, name, amounts)
				invs := rateInOrder(order, amounts)
				cases++
				if len(invs) != 4 {
					t.Fatalf("%s: %d invoices, want 4", name, len(invs))
				}
				checkBillingOrder(t, name, invs)
				total, stale := decimal.Zero, 0
				for _, inv := range invs {
					total = total.Add(inv.ChargeUSD)
					if slices.Contains(inv.Flags, FlagStaleVersion) {
						stale++
					}
				}
				if !total.Equal(decimal.RequireFromString(amounts[4])) {
					t.Errorf("%s: billed %s in total, want v4's %s", name, total, amounts[4])
				}
				// A version is stale exactly when a newer one was rated before it.
				wantStale, top := 0, uint32(0)
				for _, inv := range invs {
					if inv.RollupVersion < top {
						wantStale++
					}
					top = max(top, inv.RollupVersion)
				}
				if stale != wantStale {
					t.Errorf("%s: %d stale, want %d", name, stale, wantStale)
				}
			}
		}
		if cases != 24*6 {
			t.Errorf("%d cases, want %d", cases, 24*6)
		}
	}

	// The case: v2 skipped (unknown tenant), v3 rated, then `rate --stored` rates v2.
	// Before, v2 was adjusted against v1 again: 150 + 150 + 300 = 600. Now v2 charges nothing.
	invs := rateInOrder([]uint32{1, 3, 2}, map[uint32]string{1: "150", 2: "450", 3: "300"})
	got := fmt.Sprintf("%v %v %v", invs[0].ChargeUSD, invs[1].ChargeUSD, invs[2].ChargeUSD)
	if got != "150 150 0" || invs[2].SupersededByVersion != 3 || invs[2].PreviousRollupVersion != 3 || !invs[2].BilledBeforeUSD.Equal(decimal.NewFromInt(300)) {
		t.Errorf("v1, v3, v2 charge %s; v2 = %+v; want 150 150 0, v2 stale, superseded by v3", got, invs[2])
	}
}

// TestAdjustCorrectsWhatWasBilled: the adjustment is against what was billed, not against a
// version's amount, so a month whose earlier charges do not add up to its newest amount (rows
// written before migration 006 charged a stale version again) is put right by the next version.
func TestAdjustCorrectsWhatWasBilled(t *testing.T) {
	d := decimal.RequireFromString
	billed := []*chstore.Invoice{
		{InvoiceID: "i1", RollupVersion: 1, AmountUSD: d("150"), BillingSeq: 1, ChargeUSD: d("150")},
		{InvoiceID: "i3", RollupVersion: 3, AmountUSD: d("300"), BillingSeq: 2, ChargeUSD: d("150")},
		{InvoiceID: "i2", RollupVersion: 2, AmountUSD: d("450"), BillingSeq: 3, ChargeUSD: d("300")}, // the old rule
	}
	inv := &chstore.Invoice{InvoiceID: "i4", RollupVersion: 4, AmountUSD: d("310")}
	Adjust(inv, billed)
	if inv.BillingSeq != 4 || inv.BilledBeforeUSD.String() != "600" || inv.ChargeUSD.String() != "-290" || inv.AdjustmentUSD.String() != "-290" ||
		inv.PreviousInvoiceID != "i3" || inv.PreviousAmountUSD.String() != "300" {
		t.Errorf("v4 = seq %d billed before %s charge %s adjustment %s previous %s (%s); want 4, 600, -290, -290, i3 (300)",
			inv.BillingSeq, inv.BilledBeforeUSD, inv.ChargeUSD, inv.AdjustmentUSD, inv.PreviousInvoiceID, inv.PreviousAmountUSD)
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
