package plan

import (
	"fmt"
	"strings"
	"testing"

	"github.com/maumeter/maumeter/pkg/tenant"
)

// inForce writes Bill.InForce in one line: plan, purchase day, the days of the month it is in
// force, what it alone charges, and "*" for the purchase that priced the month or "~" for one
// that could not (a POC purchase beside a paid one).
func inForce(b Bill) string {
	var out []string
	for _, c := range b.InForce {
		mark := ""
		switch {
		case c.Priced:
			mark = " *"
		case !c.Considered:
			mark = " ~"
		}
		out = append(out, fmt.Sprintf("%s@%s %s..%s %s%s", c.Plan, c.Purchased, c.From[5:], c.Through[5:], c.Amount.StringFixed(2), mark))
	}
	return strings.Join(out, "; ")
}

// purchases is a tenant entry with production app a and testing app qa, the first purchase as
// its plan and the others as its history: "pro 2026-01-15", "enterprise 2026-06-01 {included_mau: 5}".
func purchases(ps ...string) string {
	one := func(p string) (plan, day, contract string) {
		f := strings.SplitN(p, " ", 3)
		if len(f) == 3 {
			contract = ", contract: " + f[2]
		}
		return f[0], f[1], contract
	}
	plan, day, contract := one(ps[0])
	entry := fmt.Sprintf("id: t, plan: %s, purchased: %s%s, apps: [a], testing_apps: [qa]", plan, day, contract)
	var hist []string
	for _, p := range ps[1:] {
		plan, day, contract := one(p)
		hist = append(hist, fmt.Sprintf("{plan: %s, purchased: %s%s}", plan, day, contract))
	}
	if len(hist) > 0 {
		entry += ", plan_history: [" + strings.Join(hist, ", ") + "]"
	}
	return entry
}

// TestSelection: with several purchases in force in a month, each that may price it prices the
// whole usage alone and the lowest amount wins (ties: the most included MAU, then the latest
// purchased); a POC purchase prices a month only when no paid purchase is in force in it.
func TestSelection(t *testing.T) {
	incl, mar1 := theDefault(t), withValidity(t, true, LeapDayMar1)
	excl := withValidity(t, false, LeapDayFeb28)
	f := func(c *Catalog, tenantPurchases []string, m string, prod, qa uint64, wantBill, wantInForce string) {
		t.Helper()
		entry := purchases(tenantPurchases...)
		b := c.Price(tenantOf(t, c, entry), Usage{Month: month(t, m), MAUByApp: map[string]uint64{"a": prod, "qa": qa}})
		if got := summary(b) + " purchased=" + b.PlanPurchased; got != wantBill {
			t.Errorf("%v %s, %d+%d MAU:\n got %s\nwant %s", tenantPurchases, m, prod, qa, got, wantBill)
		}
		if got := inForce(b); got != wantInForce {
			t.Errorf("%v %s, %d+%d MAU: in force\n got %s\nwant %s", tenantPurchases, m, prod, qa, got, wantInForce)
		}
	}
	p := func(ps ...string) []string { return ps }

	// The case: an Enterprise holder also buys Pro. 900,000 MAU: 0 on Enterprise, not
	// 700,000 × 0.015 = 10,500 on Pro, the latest purchase.
	entPro := p("enterprise 2026-01-15", "pro 2026-06-01")
	f(incl, entPro, "2026-07", 900_000, 0,
		"plan=enterprise mau=900000 testing=0 total=900000 included=1000000 overage=0 price=0.01 amount=0.00 contract=false flags=[several_purchases_in_force] purchased=2026-01-15",
		"enterprise@2026-01-15 07-01..07-31 0.00 *; pro@2026-06-01 07-01..07-31 10500.00")
	f(incl, entPro, "2026-07", 1_200_000, 0, // Enterprise still the lower: 2,000 against 15,000
		"plan=enterprise mau=1200000 testing=0 total=1200000 included=1000000 overage=200000 price=0.01 amount=2000.00 contract=false flags=[several_purchases_in_force] purchased=2026-01-15",
		"enterprise@2026-01-15 07-01..07-31 2000.00 *; pro@2026-06-01 07-01..07-31 15000.00")
	// Both 0: the most included MAU, Enterprise, whatever was bought last.
	f(incl, entPro, "2026-07", 100_000, 0,
		"plan=enterprise mau=100000 testing=0 total=100000 included=1000000 overage=0 price=0.01 amount=0.00 contract=false flags=[several_purchases_in_force] purchased=2026-01-15",
		"enterprise@2026-01-15 07-01..07-31 0.00 *; pro@2026-06-01 07-01..07-31 0.00")
	// Before the Pro purchase, and after Enterprise's anniversary (2027-01-15, in force): alone.
	f(incl, entPro, "2026-05", 900_000, 0,
		"plan=enterprise mau=900000 testing=0 total=900000 included=1000000 overage=0 price=0.01 amount=0.00 contract=false flags=[] purchased=2026-01-15",
		"enterprise@2026-01-15 05-01..05-31 0.00 *")
	f(incl, entPro, "2027-01", 900_000, 0,
		"plan=enterprise mau=900000 testing=0 total=900000 included=1000000 overage=0 price=0.01 amount=0.00 contract=false flags=[several_purchases_in_force] purchased=2026-01-15",
		"enterprise@2026-01-15 01-01..01-15 0.00 *; pro@2026-06-01 01-01..01-31 10500.00")
	f(incl, entPro, "2027-02", 900_000, 0,
		"plan=pro mau=900000 testing=0 total=900000 included=200000 overage=700000 price=0.015 amount=10500.00 contract=false flags=[] purchased=2026-06-01",
		"pro@2026-06-01 02-01..02-28 10500.00 *")

	// A contract cheaper per MAU crosses over: Pro at 0.005 against Enterprise.
	cheapPro := p("pro 2026-01-15 {unit_price_usd: '0.005'}", "enterprise 2026-06-01")
	f(incl, cheapPro, "2026-07", 1_100_000, 0, // Pro 900,000 × 0.005 = 4,500; Enterprise 100,000 × 0.01 = 1,000
		"plan=enterprise mau=1100000 testing=0 total=1100000 included=1000000 overage=100000 price=0.01 amount=1000.00 contract=false flags=[several_purchases_in_force] purchased=2026-06-01",
		"pro@2026-01-15 07-01..07-31 4500.00; enterprise@2026-06-01 07-01..07-31 1000.00 *")
	f(incl, cheapPro, "2026-07", 3_000_000, 0, // Pro 2,800,000 × 0.005 = 14,000; Enterprise 20,000
		"plan=pro mau=3000000 testing=0 total=3000000 included=200000 overage=2800000 price=0.005 amount=14000.00 contract=true flags=[several_purchases_in_force] purchased=2026-01-15",
		"pro@2026-01-15 07-01..07-31 14000.00 *; enterprise@2026-06-01 07-01..07-31 20000.00")
	// A contract lowering one purchase's included MAU: Enterprise with 100,000 included.
	f(incl, p("enterprise 2026-01-15 {included_mau: 100000}", "pro 2026-06-01"), "2026-07", 300_000, 0,
		"plan=pro mau=300000 testing=0 total=300000 included=200000 overage=100000 price=0.015 amount=1500.00 contract=false flags=[several_purchases_in_force] purchased=2026-06-01",
		"enterprise@2026-01-15 07-01..07-31 2000.00; pro@2026-06-01 07-01..07-31 1500.00 *")

	// Ties. The same amount and included MAU: the latest purchased (a renewal takes over on
	// its anniversary, the old purchase's last day).
	renewal := p("pro 2025-07-10", "pro 2026-07-10")
	f(incl, renewal, "2026-07", 212_345, 0,
		"plan=pro mau=212345 testing=0 total=212345 included=200000 overage=12345 price=0.015 amount=185.18 contract=false flags=[several_purchases_in_force] purchased=2026-07-10",
		"pro@2025-07-10 07-01..07-10 185.18; pro@2026-07-10 07-10..07-31 185.18 *")
	f(excl, renewal, "2026-07", 212_345, 0, // back to back: July 9 is the old one's last day, no day without a plan
		"plan=pro mau=212345 testing=0 total=212345 included=200000 overage=12345 price=0.015 amount=185.18 contract=false flags=[several_purchases_in_force] purchased=2026-07-10",
		"pro@2025-07-10 07-01..07-09 185.18; pro@2026-07-10 07-10..07-31 185.18 *")
	// A renewal at a higher price does not price the month the old purchase still covers.
	f(incl, p("pro 2025-07-10", "pro 2026-07-10 {unit_price_usd: '0.02'}"), "2026-07", 212_345, 0,
		"plan=pro mau=212345 testing=0 total=212345 included=200000 overage=12345 price=0.015 amount=185.18 contract=false flags=[several_purchases_in_force] purchased=2025-07-10",
		"pro@2025-07-10 07-01..07-10 185.18 *; pro@2026-07-10 07-10..07-31 246.90")
	f(incl, p("pro 2025-07-10", "pro 2026-07-10 {unit_price_usd: '0.02'}"), "2026-08", 212_345, 0,
		"plan=pro mau=212345 testing=0 total=212345 included=200000 overage=12345 price=0.02 amount=246.90 contract=true flags=[] purchased=2026-07-10",
		"pro@2026-07-10 08-01..08-31 246.90 *")
	// The same amount, more included MAU first, whichever order they were bought in.
	f(incl, p("pro 2026-01-15 {included_mau: 250000}", "pro 2026-06-01"), "2026-07", 150_000, 0,
		"plan=pro mau=150000 testing=0 total=150000 included=250000 overage=0 price=0.015 amount=0.00 contract=true flags=[several_purchases_in_force] purchased=2026-01-15",
		"pro@2026-01-15 07-01..07-31 0.00 *; pro@2026-06-01 07-01..07-31 0.00")
	f(incl, p("pro 2026-01-15", "pro 2026-06-01 {included_mau: 250000}"), "2026-07", 150_000, 0,
		"plan=pro mau=150000 testing=0 total=150000 included=250000 overage=0 price=0.015 amount=0.00 contract=true flags=[several_purchases_in_force] purchased=2026-06-01",
		"pro@2026-01-15 07-01..07-31 0.00; pro@2026-06-01 07-01..07-31 0.00 *")
	// The amounts compared are the billed ones, in cents: 1 × 0.0149 → 0.01 beats 1 × 0.0151 →
	// 0.02, and 1 × 0.0051 → 0.01 ties with 0.0149 → 0.01.
	f(incl, p("pro 2026-01-15 {unit_price_usd: '0.0151'}", "pro 2026-06-01 {unit_price_usd: '0.0149'}"), "2026-07", 200_001, 0,
		"plan=pro mau=200001 testing=0 total=200001 included=200000 overage=1 price=0.0149 amount=0.01 contract=true flags=[several_purchases_in_force] purchased=2026-06-01",
		"pro@2026-01-15 07-01..07-31 0.02; pro@2026-06-01 07-01..07-31 0.01 *")
	f(incl, p("pro 2026-01-15 {unit_price_usd: '0.0051'}", "pro 2026-06-01 {unit_price_usd: '0.0149'}"), "2026-07", 200_001, 0, // 0.01 both: a tie, the later
		"plan=pro mau=200001 testing=0 total=200001 included=200000 overage=1 price=0.0149 amount=0.01 contract=true flags=[several_purchases_in_force] purchased=2026-06-01",
		"pro@2026-01-15 07-01..07-31 0.01; pro@2026-06-01 07-01..07-31 0.01 *")

	// Plans that start or end within the month price it whole, flagged days_without_plan.
	f(incl, p("pro 2026-07-20"), "2026-07", 212_345, 0,
		"plan=pro mau=212345 testing=0 total=212345 included=200000 overage=12345 price=0.015 amount=185.18 contract=false flags=[days_without_plan] purchased=2026-07-20",
		"pro@2026-07-20 07-20..07-31 185.18 *")
	f(incl, p("pro 2025-07-10"), "2026-07", 212_345, 0,
		"plan=pro mau=212345 testing=0 total=212345 included=200000 overage=12345 price=0.015 amount=185.18 contract=false flags=[days_without_plan] purchased=2025-07-10",
		"pro@2025-07-10 07-01..07-10 185.18 *")
	// A lapse within the month: Pro through July 10, Enterprise from July 20.
	f(incl, p("pro 2025-07-10", "enterprise 2026-07-20"), "2026-07", 212_345, 0,
		"plan=enterprise mau=212345 testing=0 total=212345 included=1000000 overage=0 price=0.01 amount=0.00 contract=false flags=[days_without_plan several_purchases_in_force] purchased=2026-07-20",
		"pro@2025-07-10 07-01..07-10 185.18; enterprise@2026-07-20 07-20..07-31 0.00 *")

	// POC beside a paid plan: the paid one prices the month, however free the POC would be.
	pocThenPro := p("poc_pro 2026-01-15", "pro 2026-07-20")
	f(incl, pocThenPro, "2026-07", 300_000, 150,
		"plan=pro mau=300000 testing=150 total=300150 included=200000 overage=100000 price=0.015 amount=1500.00 contract=false flags=[several_purchases_in_force] purchased=2026-07-20",
		"poc_pro@2026-01-15 07-01..07-31 0.00 ~; pro@2026-07-20 07-20..07-31 1500.00 *")
	f(incl, pocThenPro, "2026-07", 0, 150, // nothing to charge: still Pro's month, so no POC cap flag
		"plan=pro mau=0 testing=150 total=150 included=200000 overage=0 price=0.015 amount=0.00 contract=false flags=[several_purchases_in_force] purchased=2026-07-20",
		"poc_pro@2026-01-15 07-01..07-31 0.00 ~; pro@2026-07-20 07-20..07-31 0.00 *")
	f(incl, pocThenPro, "2026-06", 0, 250, // before Pro: the POC prices, cap 200 over every app
		"plan=poc_pro mau=250 testing=250 total=250 included=200 overage=50 price=0 amount=0.00 contract=false flags=[poc_cap_exceeded] purchased=2026-01-15",
		"poc_pro@2026-01-15 06-01..06-30 0.00 *")
	// A POC that ends on the 10th prices its month alone (and caps July 1-10, cap_test.go).
	f(incl, p("poc_pro 2025-07-10"), "2026-07", 0, 250,
		"plan=poc_pro mau=250 testing=250 total=250 included=200 overage=50 price=0 amount=0.00 contract=false flags=[days_without_plan poc_cap_exceeded] purchased=2025-07-10",
		"poc_pro@2025-07-10 07-01..07-10 0.00 *")
	// A POC that ends on the 10th, Pro from the 20th: Pro's month.
	f(incl, p("poc_pro 2025-07-10", "pro 2026-07-20"), "2026-07", 1000, 250,
		"plan=pro mau=1000 testing=250 total=1250 included=200000 overage=0 price=0.015 amount=0.00 contract=false flags=[days_without_plan several_purchases_in_force] purchased=2026-07-20",
		"poc_pro@2025-07-10 07-01..07-10 0.00 ~; pro@2026-07-20 07-20..07-31 0.00 *")
	// Two POC purchases: the larger cap prices (the figure the gateway caps at on days both run).
	f(incl, p("poc_pro 2026-01-15", "poc_enterprise 2026-07-10"), "2026-07", 0, 400,
		"plan=poc_enterprise mau=400 testing=400 total=400 included=500 overage=0 price=0 amount=0.00 contract=false flags=[several_purchases_in_force] purchased=2026-07-10",
		"poc_pro@2026-01-15 07-01..07-31 0.00; poc_enterprise@2026-07-10 07-10..07-31 0.00 *")
	f(incl, p("poc_pro 2026-01-15 {included_mau: 1000}", "poc_enterprise 2026-07-10"), "2026-07", 0, 400,
		"plan=poc_pro mau=400 testing=400 total=400 included=1000 overage=0 price=0 amount=0.00 contract=true flags=[several_purchases_in_force] purchased=2026-01-15",
		"poc_pro@2026-01-15 07-01..07-31 0.00 *; poc_enterprise@2026-07-10 07-10..07-31 0.00")

	// February 29. Its anniversary is February 28 (feb28): a renewal that day shares it.
	f(incl, p("pro 2024-02-29", "pro 2025-02-28"), "2025-02", 212_345, 0,
		"plan=pro mau=212345 testing=0 total=212345 included=200000 overage=12345 price=0.015 amount=185.18 contract=false flags=[several_purchases_in_force] purchased=2025-02-28",
		"pro@2024-02-29 02-01..02-28 185.18; pro@2025-02-28 02-28..02-28 185.18 *")
	// With mar1, March 1: the renewal on March 1 shares that day.
	f(mar1, p("pro 2024-02-29", "pro 2025-03-01"), "2025-03", 212_345, 0,
		"plan=pro mau=212345 testing=0 total=212345 included=200000 overage=12345 price=0.015 amount=185.18 contract=false flags=[several_purchases_in_force] purchased=2025-03-01",
		"pro@2024-02-29 03-01..03-01 185.18; pro@2025-03-01 03-01..03-31 185.18 *")
	// Enterprise bought on February 29 covers February 2025 whole; March is Pro's alone.
	leapEnt := p("enterprise 2024-02-29", "pro 2025-01-10")
	f(incl, leapEnt, "2025-02", 900_000, 0,
		"plan=enterprise mau=900000 testing=0 total=900000 included=1000000 overage=0 price=0.01 amount=0.00 contract=false flags=[several_purchases_in_force] purchased=2024-02-29",
		"enterprise@2024-02-29 02-01..02-28 0.00 *; pro@2025-01-10 02-01..02-28 10500.00")
	f(incl, leapEnt, "2025-03", 900_000, 0,
		"plan=pro mau=900000 testing=0 total=900000 included=200000 overage=700000 price=0.015 amount=10500.00 contract=false flags=[] purchased=2025-01-10",
		"pro@2025-01-10 03-01..03-31 10500.00 *")
	f(mar1, leapEnt, "2025-03", 900_000, 0, // mar1: Enterprise's anniversary, March 1, is in March
		"plan=enterprise mau=900000 testing=0 total=900000 included=1000000 overage=0 price=0.01 amount=0.00 contract=false flags=[several_purchases_in_force] purchased=2024-02-29",
		"enterprise@2024-02-29 03-01..03-01 0.00 *; pro@2025-01-10 03-01..03-31 10500.00")

	// No purchase on any day of the month.
	f(incl, p("pro 2025-07-10"), "2026-08", 212_345, 0,
		"plan= mau=212345 testing=0 total=212345 included=0 overage=0 price=0 amount=0.00 contract=false flags=[no_active_plan] purchased=",
		"")
}

// TestNeverAboveTheBestSingle: whatever the purchases in force and the usage, the month costs
// exactly the lowest of what each purchase that may price it would charge alone (each priced on
// a tenant holding only that purchase, by the same Price): never more, and, while a paid
// purchase is in force, never less than the best paid one (a POC purchase gives nothing away).
// A POC purchase prices only months without a paid one; then its cap flag is that of the
// largest cap (HardCap).
func TestNeverAboveTheBestSingle(t *testing.T) {
	c := theDefault(t)
	sets := [][]string{
		{"enterprise 2026-01-15", "pro 2026-06-01"},
		{"pro 2026-01-15 {unit_price_usd: '0.005'}", "enterprise 2026-06-01"},
		{"enterprise 2026-01-15 {included_mau: 100000}", "pro 2026-06-01", "pro 2025-07-01 {unit_price_usd: '0.02'}"},
		{"poc_pro 2026-01-15", "pro 2026-07-20"},
		{"poc_pro 2026-01-15", "poc_enterprise 2026-07-10 {included_mau: 300}"},
		{"poc_enterprise 2026-02-01", "enterprise 2026-07-31 {included_mau: 0}"},
		{"pro 2025-07-10", "pro 2026-07-10 {included_mau: 150000}", "enterprise 2026-07-25 {unit_price_usd: '0.013'}"},
	}
	usages := []map[string]uint64{
		{}, {"qa": 150}, {"qa": 250}, {"qa": 600, "a": 5}, {"a": 150_000}, {"a": 212_345, "qa": 3},
		{"a": 900_000}, {"a": 1_100_000}, {"a": 3_000_000}, {"a": 50_000_000},
	}
	for _, set := range sets {
		tn := tenantOf(t, c, purchases(set...))
		singles := make([]*tenant.Tenant, len(set))
		for i, pu := range set {
			singles[i] = tenantOf(t, c, purchases(pu))
		}
		for _, m := range []string{"2026-06", "2026-07", "2026-08", "2027-07"} {
			for _, byApp := range usages {
				u := Usage{Month: month(t, m), MAUByApp: byApp}
				b := c.Price(tn, u)
				var best, bestPaid *Bill
				for _, s := range singles {
					sb := c.Price(s, u)
					if sb.Plan == "" {
						continue // not in force in m
					}
					p, _ := c.Plan(sb.Plan)
					if p.PayAsYouGo && (bestPaid == nil || sb.Amount.LessThan(bestPaid.Amount)) {
						bestPaid = &sb
					}
					if best == nil || sb.Amount.LessThan(best.Amount) {
						best = &sb
					}
				}
				want := best
				if bestPaid != nil {
					want = bestPaid
				}
				switch {
				case want == nil && b.Plan != "":
					t.Errorf("%v %s %v: priced by %s, no purchase in force", set, m, byApp, b.Plan)
				case want == nil:
				case !b.Amount.Equal(want.Amount) || b.MAU != want.MAU:
					t.Errorf("%v %s %v: %s %s (%d MAU), want %s %s (%d MAU), the best single purchase (%s)",
						set, m, byApp, b.Plan, b.Amount.StringFixed(2), b.MAU, want.Plan, want.Amount.StringFixed(2), want.MAU, inForce(b))
				}
				if p, ok := c.Plan(b.Plan); ok && p.HardCap {
					limit, capped := c.HardCap(tn, u.Month)
					exceeded := strings.Contains(fmt.Sprint(b.Flags), FlagPOCCapExceeded)
					if !capped || limit != b.IncludedMAU || exceeded != (b.TotalMAU > limit) {
						t.Errorf("%v %s %v: priced by %s with %d included, flags %v; HardCap %d, %v", set, m, byApp, b.Plan, b.IncludedMAU, b.Flags, limit, capped)
					}
				}
			}
		}
	}
}

// TestUnknownPlanAmongOthers: a purchase of a plan the catalogue lacks (a tenant catalogue not
// checked against it) makes the month's best price unknown: flagged, nothing charged, every
// purchase listed, none priced.
func TestUnknownPlanAmongOthers(t *testing.T) {
	c := theDefault(t)
	tc, err := tenant.Parse("t.yaml", []byte("tenants:\n  - {id: t, plan: pro, purchased: 2026-01-01, apps: [a], plan_history: [{plan: gold, purchased: 2026-06-10}]}\n"),
		tenant.KnownPlans("pro", "gold"))
	if err != nil {
		t.Fatal(err)
	}
	b := c.Price(tc.Tenants[0], Usage{Month: month(t, "2026-06"), MAUByApp: map[string]uint64{"a": 300_000}})
	want := "plan=gold mau=300000 testing=0 total=300000 included=0 overage=0 price=0 amount=0.00 contract=false flags=[several_purchases_in_force unknown_plan]" +
		" | pro@2026-01-01 06-01..06-30 0.00 ~; gold@2026-06-10 06-10..06-30 0.00 ~"
	if got := summary(b) + " | " + inForce(b); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	// Before the gold purchase, pro alone prices.
	b = c.Price(tc.Tenants[0], Usage{Month: month(t, "2026-05"), MAUByApp: map[string]uint64{"a": 300_000}})
	if got := summary(b); got != "plan=pro mau=300000 testing=0 total=300000 included=200000 overage=100000 price=0.015 amount=1500.00 contract=false flags=[]" {
		t.Errorf("2026-05: got %s", got)
	}
}
