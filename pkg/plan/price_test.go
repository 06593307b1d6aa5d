package plan

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/maumeter/maumeter/pkg/calendar"
	"github.com/maumeter/maumeter/pkg/tenant"
)

func decimalOf(t *testing.T, s string) decimal.Decimal {
	t.Helper()
	if s == "" {
		return decimal.Zero
	}
	d, err := decimal.NewFromString(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func month(t *testing.T, s string) calendar.Month {
	t.Helper()
	m, err := calendar.ParseMonth(s)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// tenantOf parses one tenant, written as the flow mapping of a tenants.yaml entry, against c.
func tenantOf(t *testing.T, c *Catalog, entry string) *tenant.Tenant {
	t.Helper()
	tc, err := c.ParseTenants("tenants.yaml", []byte("tenants:\n  - {"+entry+"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	return tc.Tenants[0]
}

func theDefault(t *testing.T) *Catalog {
	t.Helper()
	c, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// withValidity is the default catalogue with other validity settings.
func withValidity(t *testing.T, anniversaryIncluded bool, leapDay string) *Catalog {
	t.Helper()
	y := strings.Replace(string(DefaultYAML), "anniversary_included: true", fmt.Sprintf("anniversary_included: %v", anniversaryIncluded), 1)
	y = strings.Replace(y, "leap_day_anniversary: feb28", "leap_day_anniversary: "+leapDay, 1)
	c, err := ParseCatalog("plans.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	if c.Validity.AnniversaryIncluded != anniversaryIncluded || c.Validity.LeapDayAnniversary != leapDay {
		t.Fatalf("validity %+v", c.Validity)
	}
	return c
}

// summary is the part of a bill the tables compare, in one line.
func summary(b Bill) string {
	return fmt.Sprintf("plan=%s mau=%d testing=%d total=%d included=%d overage=%d price=%s amount=%s contract=%v flags=%v",
		b.Plan, b.MAU, b.TestingMAU, b.TotalMAU, b.IncludedMAU, b.OverageMAU, b.UnitPrice.String(), b.Amount.StringFixed(2),
		b.Contract, b.Flags)
}

// TestPriceTable: every plan at 0, below, at and above its quota, far above, and each direction
// of rounding (half-up, so 0.045 is 0.05 where banker's rounding gives 0.04), with and without
// contracts. A tenant's only app is production, its purchase in force.
func TestPriceTable(t *testing.T) {
	c := theDefault(t)
	f := func(plan, contract string, mau uint64, want string) {
		t.Helper()
		entry := "id: t, plan: " + plan + ", purchased: 2026-01-01, apps: [app]"
		if strings.HasPrefix(plan, "poc_") { // POC plans have testing apps only
			entry = "id: t, plan: " + plan + ", purchased: 2026-01-01, testing_apps: [app]"
		}
		if contract != "" {
			entry += ", contract: {" + contract + "}"
		}
		b := c.Price(tenantOf(t, c, entry), Usage{Month: month(t, "2026-06"), MAUByApp: map[string]uint64{"app": mau}})
		if got := summary(b); got != want {
			t.Errorf("%s %s, %d MAU:\n got %s\nwant %s", plan, contract, mau, got, want)
		}
		if b.Amount.Exponent() < -2 {
			t.Errorf("%s %d MAU: amount %s has more than 2 decimals", plan, mau, b.Amount)
		}
	}
	// Pro: 200,000 included, 0.015 USD per MAU above.
	f("pro", "", 0, "plan=pro mau=0 testing=0 total=0 included=200000 overage=0 price=0.015 amount=0.00 contract=false flags=[]")
	f("pro", "", 199_999, "plan=pro mau=199999 testing=0 total=199999 included=200000 overage=0 price=0.015 amount=0.00 contract=false flags=[]")
	f("pro", "", 200_000, "plan=pro mau=200000 testing=0 total=200000 included=200000 overage=0 price=0.015 amount=0.00 contract=false flags=[]")
	f("pro", "", 200_001, "plan=pro mau=200001 testing=0 total=200001 included=200000 overage=1 price=0.015 amount=0.02 contract=false flags=[]")                    // 0.015: half, up
	f("pro", "", 200_002, "plan=pro mau=200002 testing=0 total=200002 included=200000 overage=2 price=0.015 amount=0.03 contract=false flags=[]")                    // exact
	f("pro", "", 200_003, "plan=pro mau=200003 testing=0 total=200003 included=200000 overage=3 price=0.015 amount=0.05 contract=false flags=[]")                    // 0.045: half, up (banker's: 0.04)
	f("pro", "", 212_345, "plan=pro mau=212345 testing=0 total=212345 included=200000 overage=12345 price=0.015 amount=185.18 contract=false flags=[]")              // 185.175
	f("pro", "", 10_200_000, "plan=pro mau=10200000 testing=0 total=10200000 included=200000 overage=10000000 price=0.015 amount=150000.00 contract=false flags=[]") // far above
	f("pro", "", 1_000_000_000, "plan=pro mau=1000000000 testing=0 total=1000000000 included=200000 overage=999800000 price=0.015 amount=14997000.00 contract=false flags=[]")
	// Enterprise: 1,000,000 included, 0.01 USD.
	f("enterprise", "", 0, "plan=enterprise mau=0 testing=0 total=0 included=1000000 overage=0 price=0.01 amount=0.00 contract=false flags=[]")
	f("enterprise", "", 999_999, "plan=enterprise mau=999999 testing=0 total=999999 included=1000000 overage=0 price=0.01 amount=0.00 contract=false flags=[]")
	f("enterprise", "", 1_000_000, "plan=enterprise mau=1000000 testing=0 total=1000000 included=1000000 overage=0 price=0.01 amount=0.00 contract=false flags=[]")
	f("enterprise", "", 1_000_001, "plan=enterprise mau=1000001 testing=0 total=1000001 included=1000000 overage=1 price=0.01 amount=0.01 contract=false flags=[]")
	f("enterprise", "", 1_000_777, "plan=enterprise mau=1000777 testing=0 total=1000777 included=1000000 overage=777 price=0.01 amount=7.77 contract=false flags=[]")
	f("enterprise", "", 50_000_000, "plan=enterprise mau=50000000 testing=0 total=50000000 included=1000000 overage=49000000 price=0.01 amount=490000.00 contract=false flags=[]")
	// POC plans: a hard cap over all apps, never charged, flagged above the cap.
	f("poc_pro", "", 0, "plan=poc_pro mau=0 testing=0 total=0 included=200 overage=0 price=0 amount=0.00 contract=false flags=[]")
	f("poc_pro", "", 199, "plan=poc_pro mau=199 testing=199 total=199 included=200 overage=0 price=0 amount=0.00 contract=false flags=[]")
	f("poc_pro", "", 200, "plan=poc_pro mau=200 testing=200 total=200 included=200 overage=0 price=0 amount=0.00 contract=false flags=[]")
	f("poc_pro", "", 201, "plan=poc_pro mau=201 testing=201 total=201 included=200 overage=1 price=0 amount=0.00 contract=false flags=[poc_cap_exceeded]")
	f("poc_pro", "", 1_000_000, "plan=poc_pro mau=1000000 testing=1000000 total=1000000 included=200 overage=999800 price=0 amount=0.00 contract=false flags=[poc_cap_exceeded]")
	f("poc_enterprise", "", 0, "plan=poc_enterprise mau=0 testing=0 total=0 included=500 overage=0 price=0 amount=0.00 contract=false flags=[]")
	f("poc_enterprise", "", 499, "plan=poc_enterprise mau=499 testing=499 total=499 included=500 overage=0 price=0 amount=0.00 contract=false flags=[]")
	f("poc_enterprise", "", 500, "plan=poc_enterprise mau=500 testing=500 total=500 included=500 overage=0 price=0 amount=0.00 contract=false flags=[]")
	f("poc_enterprise", "", 501, "plan=poc_enterprise mau=501 testing=501 total=501 included=500 overage=1 price=0 amount=0.00 contract=false flags=[poc_cap_exceeded]")
	f("poc_enterprise", "", 5_000, "plan=poc_enterprise mau=5000 testing=5000 total=5000 included=500 overage=4500 price=0 amount=0.00 contract=false flags=[poc_cap_exceeded]")
	// Contracts: 250,000 included at 0.012.
	const k = "included_mau: 250000, unit_price_usd: '0.012'"
	f("pro", k, 212_345, "plan=pro mau=212345 testing=0 total=212345 included=250000 overage=0 price=0.012 amount=0.00 contract=true flags=[]")
	f("pro", k, 249_999, "plan=pro mau=249999 testing=0 total=249999 included=250000 overage=0 price=0.012 amount=0.00 contract=true flags=[]")
	f("pro", k, 250_000, "plan=pro mau=250000 testing=0 total=250000 included=250000 overage=0 price=0.012 amount=0.00 contract=true flags=[]")
	f("pro", k, 250_001, "plan=pro mau=250001 testing=0 total=250001 included=250000 overage=1 price=0.012 amount=0.01 contract=true flags=[]")  // 0.012: down
	f("pro", k, 250_004, "plan=pro mau=250004 testing=0 total=250004 included=250000 overage=4 price=0.012 amount=0.05 contract=true flags=[]")  // 0.048: up
	f("pro", k, 250_010, "plan=pro mau=250010 testing=0 total=250010 included=250000 overage=10 price=0.012 amount=0.12 contract=true flags=[]") // exact
	// A price only (the plan's included MAU stay), and rounding once: 3 × 0.0149 = 0.0447 → 0.04,
	// not 3 × 0.01 (a price rounded first) = 0.03.
	f("enterprise", "unit_price_usd: '0.0125'", 1_000_001, "plan=enterprise mau=1000001 testing=0 total=1000001 included=1000000 overage=1 price=0.0125 amount=0.01 contract=true flags=[]") // 0.0125: down
	f("enterprise", "unit_price_usd: '0.0125'", 1_000_002, "plan=enterprise mau=1000002 testing=0 total=1000002 included=1000000 overage=2 price=0.0125 amount=0.03 contract=true flags=[]") // 0.025: half, up (banker's: 0.02)
	f("enterprise", "unit_price_usd: '0.0125'", 1_000_003, "plan=enterprise mau=1000003 testing=0 total=1000003 included=1000000 overage=3 price=0.0125 amount=0.04 contract=true flags=[]") // 0.0375: up
	f("pro", "unit_price_usd: '0.0149'", 200_003, "plan=pro mau=200003 testing=0 total=200003 included=200000 overage=3 price=0.0149 amount=0.04 contract=true flags=[]")
	// Included MAU only: every MAU charged at the plan's price; a POC cap raised by contract.
	f("enterprise", "included_mau: 0", 777, "plan=enterprise mau=777 testing=0 total=777 included=0 overage=777 price=0.01 amount=7.77 contract=true flags=[]")
	f("poc_pro", "included_mau: 1000", 1_000, "plan=poc_pro mau=1000 testing=1000 total=1000 included=1000 overage=0 price=0 amount=0.00 contract=true flags=[]")
	f("poc_pro", "included_mau: 1000", 1_001, "plan=poc_pro mau=1001 testing=1001 total=1001 included=1000 overage=1 price=0 amount=0.00 contract=true flags=[poc_cap_exceeded]")
}

// TestValidity: a purchase is in force from its day through its anniversary (the default) or
// the day before; a February 29 purchase has its anniversary on February 28 (the default) or
// March 1. Days are dates of the tenant's calendar.
func TestValidity(t *testing.T) {
	type cat struct {
		included bool
		leap     string
	}
	cats := map[cat]*Catalog{}
	for _, k := range []cat{{true, LeapDayFeb28}, {false, LeapDayFeb28}, {true, LeapDayMar1}, {false, LeapDayMar1}} {
		cats[k] = withValidity(t, k.included, k.leap)
	}
	f := func(included bool, leap, purchased, day string, want string) {
		t.Helper()
		c := cats[cat{included, leap}]
		tn := tenantOf(t, c, "id: t, plan: pro, purchased: "+purchased+", apps: [a]")
		d, err := time.Parse(time.DateOnly, day)
		if err != nil {
			t.Fatal(err)
		}
		terms, err := c.TermsOn(tn, d.Year(), d.Month(), d.Day())
		got := "none"
		switch {
		case err == nil && len(terms) == 1:
			got = fmt.Sprintf("in force, until %s through %s", terms[0].ValidUntil, terms[0].ValidThrough)
		case err == nil:
			t.Fatalf("one purchase, %d in force", len(terms))
		case !errors.Is(err, ErrNoActivePlan):
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("purchased %s, anniversary_included=%v, leap day %s: on %s got %s, want %s", purchased, included, leap, day, got, want)
		}
	}
	for _, leap := range []string{LeapDayFeb28, LeapDayMar1} {
		f(true, leap, "2023-03-01", "2023-02-28", "none")
		f(true, leap, "2023-03-01", "2023-03-01", "in force, until 2024-03-01 through 2024-03-01") // purchase day
		f(true, leap, "2023-03-01", "2024-02-29", "in force, until 2024-03-01 through 2024-03-01") // the day before the anniversary
		f(true, leap, "2023-03-01", "2024-03-01", "in force, until 2024-03-01 through 2024-03-01") // the anniversary
		f(true, leap, "2023-03-01", "2024-03-02", "none")
		f(false, leap, "2023-03-01", "2023-03-01", "in force, until 2024-03-01 through 2024-02-29")
		f(false, leap, "2023-03-01", "2024-02-29", "in force, until 2024-03-01 through 2024-02-29")
		f(false, leap, "2023-03-01", "2024-03-01", "none")
		f(true, leap, "2025-12-31", "2026-12-31", "in force, until 2026-12-31 through 2026-12-31")
		f(false, leap, "2025-12-31", "2026-12-31", "none")
		f(false, leap, "2026-01-01", "2026-12-31", "in force, until 2027-01-01 through 2026-12-31")
	}
	// February 29.
	f(true, LeapDayFeb28, "2024-02-29", "2025-02-28", "in force, until 2025-02-28 through 2025-02-28")
	f(true, LeapDayFeb28, "2024-02-29", "2025-03-01", "none")
	f(false, LeapDayFeb28, "2024-02-29", "2025-02-27", "in force, until 2025-02-28 through 2025-02-27")
	f(false, LeapDayFeb28, "2024-02-29", "2025-02-28", "none")
	f(true, LeapDayMar1, "2024-02-29", "2025-03-01", "in force, until 2025-03-01 through 2025-03-01")
	f(true, LeapDayMar1, "2024-02-29", "2025-03-02", "none")
	f(false, LeapDayMar1, "2024-02-29", "2025-02-28", "in force, until 2025-03-01 through 2025-02-28")
	f(false, LeapDayMar1, "2024-02-29", "2025-03-01", "none")
	f(true, LeapDayFeb28, "2023-02-28", "2024-02-29", "none") // a Feb 28 purchase ends on Feb 28
}

// TestMonthValidity: a month with a purchase in force on any of its days is priced by one of
// them, whole (no proration: the overview prices a calendar month's MAU); a month with none is
// flagged no_active_plan. Days without a purchase are flagged days_without_plan.
func TestMonthValidity(t *testing.T) {
	usage := map[string]uint64{"a": 212_345}
	f := func(c *Catalog, entry, m, want string) {
		t.Helper()
		b := c.Price(tenantOf(t, c, entry), Usage{Month: month(t, m), MAUByApp: usage})
		got := fmt.Sprintf("%s %s..%s/%s %s %v", b.Plan, b.PlanPurchased, b.PlanValidUntil, b.PlanValidThrough, b.Amount.StringFixed(2), b.Flags)
		if got != want {
			t.Errorf("%s, %s:\n got %s\nwant %s", entry, m, got, want)
		}
		if b.MAU != 212_345 || b.TotalMAU != 212_345 {
			t.Errorf("%s, %s: MAU %d total %d, want them reported with or without a plan", entry, m, b.MAU, b.TotalMAU)
		}
	}
	incl, excl := theDefault(t), withValidity(t, false, LeapDayFeb28)
	// Bought on the last day of March: March is priced on it; its anniversary is March 31, 2026.
	const mar31 = "id: t, plan: pro, purchased: 2025-03-31, apps: [a]"
	f(incl, mar31, "2025-02", " ../ 0.00 [no_active_plan]")
	f(incl, mar31, "2025-03", "pro 2025-03-31..2026-03-31/2026-03-31 185.18 [days_without_plan]") // purchase day, the month's last
	f(incl, mar31, "2026-02", "pro 2025-03-31..2026-03-31/2026-03-31 185.18 []")
	f(incl, mar31, "2026-03", "pro 2025-03-31..2026-03-31/2026-03-31 185.18 []")                  // the anniversary is in
	f(excl, mar31, "2026-03", "pro 2025-03-31..2026-03-31/2026-03-30 185.18 [days_without_plan]") // or not: March 1-30
	f(incl, mar31, "2026-04", " ../ 0.00 [no_active_plan]")
	// Bought on May 1: in force on May 1, 2026 only (the anniversary), which prices May.
	const may1 = "id: t, plan: pro, purchased: 2025-05-01, apps: [a]"
	f(incl, may1, "2025-04", " ../ 0.00 [no_active_plan]")
	f(incl, may1, "2025-05", "pro 2025-05-01..2026-05-01/2026-05-01 185.18 []")
	f(excl, may1, "2026-04", "pro 2025-05-01..2026-05-01/2026-04-30 185.18 []")
	f(incl, may1, "2026-05", "pro 2025-05-01..2026-05-01/2026-05-01 185.18 [days_without_plan]")
	f(excl, may1, "2026-05", " ../ 0.00 [no_active_plan]")
	// Bought mid-month: the month of purchase and the month of the anniversary are priced on it.
	const mid = "id: t, plan: pro, purchased: 2025-03-15, apps: [a]"
	f(incl, mid, "2025-03", "pro 2025-03-15..2026-03-15/2026-03-15 185.18 [days_without_plan]")
	f(incl, mid, "2026-03", "pro 2025-03-15..2026-03-15/2026-03-15 185.18 [days_without_plan]")
	f(incl, mid, "2026-04", " ../ 0.00 [no_active_plan]")
	// A February 29 purchase: February 2025 ends on the anniversary (feb28) or the day after its
	// last day (feb28, anniversary excluded); with mar1 its anniversary prices March 2025.
	const leap = "id: t, plan: pro, purchased: 2024-02-29, apps: [a]"
	f(incl, leap, "2024-02", "pro 2024-02-29..2025-02-28/2025-02-28 185.18 [days_without_plan]")
	f(incl, leap, "2025-02", "pro 2024-02-29..2025-02-28/2025-02-28 185.18 []")
	f(excl, leap, "2025-02", "pro 2024-02-29..2025-02-28/2025-02-27 185.18 [days_without_plan]")
	f(withValidity(t, false, LeapDayMar1), leap, "2025-02", "pro 2024-02-29..2025-03-01/2025-02-28 185.18 []")
	f(withValidity(t, true, LeapDayMar1), leap, "2025-03", "pro 2024-02-29..2025-03-01/2025-03-01 185.18 [days_without_plan]")
	f(withValidity(t, false, LeapDayMar1), leap, "2025-03", " ../ 0.00 [no_active_plan]")
	f(incl, leap, "2025-03", " ../ 0.00 [no_active_plan]")
	// Several purchases, each with its own contract: the lowest amount of the purchases in force
	// in the month prices it, whichever was bought last. 12,345 MAU above 200,000.
	const hist = "id: t, plan: pro, purchased: 2025-03-31, apps: [a], contract: {unit_price_usd: '0.02'}, " +
		"plan_history: [{plan: pro, purchased: 2026-03-31}, {plan: enterprise, purchased: 2025-09-30, contract: {included_mau: 200000}}, {plan: pro, purchased: 2024-03-31}]"
	f(incl, hist, "2025-02", "pro 2024-03-31..2025-03-31/2025-03-31 185.18 []")
	f(incl, hist, "2025-03", "pro 2024-03-31..2025-03-31/2025-03-31 185.18 [several_purchases_in_force]")        // its last day; the renewal at 0.02 would be 246.90
	f(incl, hist, "2025-08", "pro 2025-03-31..2026-03-31/2026-03-31 246.90 []")                                  // 12,345 × 0.02
	f(incl, hist, "2025-09", "enterprise 2025-09-30..2026-09-30/2026-09-30 123.45 [several_purchases_in_force]") // 12,345 × 0.01 over 200,000
	f(incl, hist, "2026-02", "enterprise 2025-09-30..2026-09-30/2026-09-30 123.45 [several_purchases_in_force]")
	f(incl, hist, "2026-03", "enterprise 2025-09-30..2026-09-30/2026-09-30 123.45 [several_purchases_in_force]") // three in force; the renewal would be 185.18
	f(incl, hist, "2026-09", "enterprise 2025-09-30..2026-09-30/2026-09-30 123.45 [several_purchases_in_force]")
	f(incl, hist, "2026-10", "pro 2026-03-31..2027-03-31/2027-03-31 185.18 []")
	f(incl, hist, "2027-03", "pro 2026-03-31..2027-03-31/2027-03-31 185.18 []")
	f(incl, hist, "2027-04", " ../ 0.00 [no_active_plan]")
}

// TestTimeZones: the days of a month and purchase days are dates of the tenant's billing
// calendar, whatever UTC says at that moment. Auckland (UTC+13 in January), Shanghai (UTC+8),
// Kiritimati (UTC+14) and Los Angeles (UTC−8) price the same month the same way; an instant
// falls into a month by the tenant's zone (the counter's job), and that month is priced on the
// purchases in force on its own days.
func TestTimeZones(t *testing.T) {
	c := theDefault(t)
	usage := map[string]uint64{"a": 212_345}
	for _, zone := range []string{"Pacific/Auckland", "Asia/Shanghai", "America/Los_Angeles", "UTC", "Pacific/Kiritimati", "Pacific/Pago_Pago"} {
		// A switch to enterprise on January 31, the last day: January is enterprise's (in force
		// on one of its days, and the lower amount).
		onLast := tenantOf(t, c, "id: t, plan: pro, purchased: 2024-06-10, time_zone: "+zone+", apps: [a], plan_history: [{plan: enterprise, purchased: 2025-01-31}]")
		// A switch on February 1: January is still pro's.
		onFirst := tenantOf(t, c, "id: t, plan: pro, purchased: 2024-06-10, time_zone: "+zone+", apps: [a], plan_history: [{plan: enterprise, purchased: 2025-02-01}]")
		// Pro through January 31 (bought 2024-01-31), Enterprise from February 1: back to back,
		// each month priced by one purchase alone, no day without a plan.
		backToBack := tenantOf(t, c, "id: t, plan: pro, purchased: 2024-01-31, time_zone: "+zone+", apps: [a], plan_history: [{plan: enterprise, purchased: 2025-02-01}]")
		for _, tc := range []struct {
			tn         *tenant.Tenant
			m, want    string
			wantAmount string
		}{
			{onLast, "2024-12", "pro", "185.18"},
			{onLast, "2025-01", "enterprise", "0.00"},
			{onFirst, "2025-01", "pro", "185.18"},
			{onFirst, "2025-02", "enterprise", "0.00"},
			{backToBack, "2025-01", "pro", "185.18"},
			{backToBack, "2025-02", "enterprise", "0.00"},
		} {
			b := c.Price(tc.tn, Usage{Month: month(t, tc.m), MAUByApp: usage})
			if tc.tn == backToBack && (len(b.Flags) != 0 || len(b.InForce) != 1) {
				t.Errorf("%s, %s back to back: flags %v, in force %s; want one purchase, no flag", zone, tc.m, b.Flags, inForce(b))
			}
			if b.Plan != tc.want || b.Amount.StringFixed(2) != tc.wantAmount {
				t.Errorf("%s, %s (purchases %v): plan %s amount %s, want %s %s", zone, tc.m, tc.tn.Purchases()[1].Purchased,
					b.Plan, b.Amount.StringFixed(2), tc.want, tc.wantAmount)
			}
		}
	}
	// One instant, several calendars: 2025-01-31T20:00Z is February 1, 09:00 in Auckland, 04:00
	// in Shanghai, 10:00 in Kiritimati, and January 31, 12:00 in Los Angeles. With enterprise
	// bought on February 1, the first three count the device in February (enterprise), Los
	// Angeles in January (pro).
	instant := time.Date(2025, 1, 31, 20, 0, 0, 0, time.UTC)
	for zone, want := range map[string]string{"Pacific/Auckland": "2025-02 enterprise", "Asia/Shanghai": "2025-02 enterprise",
		"Pacific/Kiritimati": "2025-02 enterprise", "America/Los_Angeles": "2025-01 pro"} {
		tn := tenantOf(t, c, "id: t, plan: pro, purchased: 2024-06-10, time_zone: "+zone+", apps: [a], plan_history: [{plan: enterprise, purchased: 2025-02-01}]")
		m := calendar.MonthOf(instant, tn.Location())
		b := c.Price(tn, Usage{Month: m, MAUByApp: usage})
		if got := b.Month + " " + b.Plan; got != want {
			t.Errorf("%s: %s is priced as %s, want %s", zone, instant, got, want)
		}
	}
}

// TestApps: testing apps are reported and billed only with bill_testing_apps; apps the
// catalogue does not list are billed as production and flagged; entitlements count the apps
// and mini programs seen against the plan's limits.
func TestApps(t *testing.T) {
	c := theDefault(t)
	f := func(entry string, byApp map[string]uint64, miniPrograms uint64, wantBill, wantEnt string) {
		t.Helper()
		b := c.Price(tenantOf(t, c, entry), Usage{Month: month(t, "2026-06"), MAUByApp: byApp, MiniPrograms: miniPrograms})
		if got := summary(b) + fmt.Sprintf(" unlisted=%v", b.UnlistedApps); got != wantBill {
			t.Errorf("%s %v:\n got %s\nwant %s", entry, byApp, got, wantBill)
		}
		e := b.Entitlements
		if got := fmt.Sprintf("production %d/%d testing %d/%d mini programs %d/%d %v", e.ProductionApps, e.ProductionAppsLimit,
			e.TestingApps, e.TestingAppsLimit, e.MiniPrograms, e.MiniProgramsLimit, e.Flags); got != wantEnt {
			t.Errorf("%s %v: entitlements\n got %s\nwant %s", entry, byApp, got, wantEnt)
		}
	}
	const pro = "id: t, plan: pro, purchased: 2026-01-01, apps: [a], testing_apps: [q1, q2, q3]"
	f(pro, map[string]uint64{"a": 150_000, "q1": 60_000}, 50,
		"plan=pro mau=150000 testing=60000 total=210000 included=200000 overage=0 price=0.015 amount=0.00 contract=false flags=[] unlisted=[]",
		"production 1/1 testing 1/2 mini programs 50/50 []")
	f(pro+", bill_testing_apps: true", map[string]uint64{"a": 150_000, "q1": 60_000}, 50,
		"plan=pro mau=210000 testing=60000 total=210000 included=200000 overage=10000 price=0.015 amount=150.00 contract=false flags=[] unlisted=[]",
		"production 1/1 testing 1/2 mini programs 50/50 []")
	f(pro+", bill_testing_apps: false", map[string]uint64{"q1": 250_000}, 0,
		"plan=pro mau=0 testing=250000 total=250000 included=200000 overage=0 price=0.015 amount=0.00 contract=false flags=[] unlisted=[]",
		"production 0/1 testing 1/2 mini programs 0/50 []")
	// An app removed from the catalogue since: billed, flagged, named.
	f(pro, map[string]uint64{"a": 200_000, "gone": 5, "old": 0}, 0,
		"plan=pro mau=200005 testing=0 total=200005 included=200000 overage=5 price=0.015 amount=0.08 contract=false flags=[unlisted_app] unlisted=[gone]",
		"production 2/1 testing 0/2 mini programs 0/50 [super_apps_exceeded]")
	// Limits: three testing apps and 51 mini programs on Pro.
	f(pro, map[string]uint64{"a": 1, "q1": 1, "q2": 1, "q3": 1}, 51,
		"plan=pro mau=1 testing=3 total=4 included=200000 overage=0 price=0.015 amount=0.00 contract=false flags=[] unlisted=[]",
		"production 1/1 testing 3/2 mini programs 51/50 [mini_programs_exceeded testing_apps_exceeded]")
	f("id: t, plan: enterprise, purchased: 2026-01-01, apps: [a, b], testing_apps: [q]", map[string]uint64{"a": 1, "b": 1, "q": 1}, 200,
		"plan=enterprise mau=2 testing=1 total=3 included=1000000 overage=0 price=0.01 amount=0.00 contract=false flags=[] unlisted=[]",
		"production 2/1 testing 1/2 mini programs 200/200 [super_apps_exceeded]")
	// POC: the cap counts every app, testing apps whatever bill_testing_apps says.
	const poc = "id: t, plan: poc_pro, purchased: 2026-01-01, testing_apps: [q1, q2]"
	f(poc, map[string]uint64{"q1": 150, "q2": 60}, 150,
		"plan=poc_pro mau=210 testing=210 total=210 included=200 overage=10 price=0 amount=0.00 contract=false flags=[poc_cap_exceeded] unlisted=[]",
		"production 0/0 testing 2/2 mini programs 150/150 []")
	f(poc+", bill_testing_apps: true", map[string]uint64{"q1": 150, "q2": 50}, 151,
		"plan=poc_pro mau=200 testing=200 total=200 included=200 overage=0 price=0 amount=0.00 contract=false flags=[] unlisted=[]",
		"production 0/0 testing 2/2 mini programs 151/150 [mini_programs_exceeded]")
	f(poc, map[string]uint64{"q1": 150, "prod": 60}, 0,
		"plan=poc_pro mau=210 testing=150 total=210 included=200 overage=10 price=0 amount=0.00 contract=false flags=[poc_cap_exceeded unlisted_app] unlisted=[prod]",
		"production 1/0 testing 1/2 mini programs 0/150 [super_apps_exceeded]")
	f("id: t, plan: poc_enterprise, purchased: 2026-01-01, apps: [p], testing_apps: [q]", map[string]uint64{"p": 1, "q": 1}, 0,
		"plan=poc_enterprise mau=2 testing=1 total=2 included=500 overage=0 price=0 amount=0.00 contract=false flags=[] unlisted=[]",
		"production 1/0 testing 1/2 mini programs 0/600 [super_apps_exceeded]")
	// No plan in force: MAU reported, no limits, nothing charged or flagged but the month.
	f("id: t, plan: pro, purchased: 2027-01-01, apps: [a], testing_apps: [q]", map[string]uint64{"a": 300_000, "q": 7}, 99,
		"plan= mau=300000 testing=7 total=300007 included=0 overage=0 price=0 amount=0.00 contract=false flags=[no_active_plan] unlisted=[]",
		"production 1/0 testing 1/0 mini programs 99/0 []")
	// No usage at all.
	f(pro, nil, 0,
		"plan=pro mau=0 testing=0 total=0 included=200000 overage=0 price=0.015 amount=0.00 contract=false flags=[] unlisted=[]",
		"production 0/1 testing 0/2 mini programs 0/50 []")
}

// TestUnknownPlan: a tenant catalogue not checked against the plans (tenant.Load alone) may name
// a plan the catalogue lacks; Price charges nothing and says so.
func TestUnknownPlan(t *testing.T) {
	c := theDefault(t)
	tc, err := tenant.Parse("t.yaml", []byte("tenants:\n  - {id: t, plan: gold, purchased: 2026-01-01, apps: [a]}\n"), tenant.KnownPlans("gold"))
	if err != nil {
		t.Fatal(err)
	}
	if terms, err := c.TermsIn(tc.Tenants[0], month(t, "2026-06")); !errors.Is(err, ErrUnknownPlan) || len(terms) != 1 || terms[0].Plan != nil {
		t.Errorf("TermsIn: %v, %+v; want ErrUnknownPlan and the purchase without a plan", err, terms)
	}
	b := c.Price(tc.Tenants[0], Usage{Month: month(t, "2026-06"), MAUByApp: map[string]uint64{"a": 300_000}})
	want := "plan=gold mau=300000 testing=0 total=300000 included=0 overage=0 price=0 amount=0.00 contract=false flags=[unknown_plan]"
	if got := summary(b); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

// TestBillIdentity: the bill names its tenant-month and every slice is sorted and non-nil
// (JSON: [] rather than null).
func TestBillIdentity(t *testing.T) {
	c := theDefault(t)
	tn := tenantOf(t, c, "id: acme, plan: pro, purchased: 2026-01-01, apps: [a]")
	b := c.Price(tn, Usage{Month: month(t, "2026-06"), MAUByApp: map[string]uint64{"z": 1, "b": 1, "m": 1}})
	if b.TenantID != "acme" || b.Month != "2026-06" {
		t.Errorf("bill of %s %s", b.TenantID, b.Month)
	}
	if fmt.Sprint(b.UnlistedApps) != "[b m z]" {
		t.Errorf("unlisted apps %v, want sorted", b.UnlistedApps)
	}
	b = c.Price(tn, Usage{Month: month(t, "2026-06")})
	if b.Flags == nil || b.UnlistedApps == nil || b.Entitlements.Flags == nil {
		t.Errorf("nil slices in %+v", b)
	}
}
