package api

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/shopspring/decimal"
	"gopkg.in/yaml.v3"

	"github.com/maumeter/maumeter/pipeline/chstore"
	"github.com/maumeter/maumeter/pkg/calendar"
	"github.com/maumeter/maumeter/pkg/plan"
	"github.com/maumeter/maumeter/pkg/tenant"
	"github.com/maumeter/maumeter/schemas"
)

// fakeUsage answers AppUsage from a table and records the windows it was asked for.
type fakeUsage struct {
	usage   map[chstore.TenantMonth]chstore.AppUsage
	asked   map[chstore.TenantMonth][2]time.Time
	failing bool
}

func (f *fakeUsage) AppUsage(_ context.Context, tm chstore.TenantMonth, from, to time.Time) (chstore.AppUsage, error) {
	if f.failing {
		return chstore.AppUsage{}, errors.New("clickhouse down")
	}
	f.asked[tm] = [2]time.Time{from.UTC(), to.UTC()}
	u := f.usage[tm]
	if u.MAUByApp == nil {
		u.MAUByApp = map[string]uint64{}
	}
	if from.IsZero() { // what chstore counts in a zero window
		u.NewByApp = map[string]uint64{}
	}
	return u, nil
}

// fakeCounter answers like a counter: by_app estimates that must never price anything, and
// the months in closed as closed.
type fakeCounter struct{ closed map[string]bool }

func (fakeCounter) MAU(context.Context, string, string) (uint64, error) { return 0, nil }

func (c fakeCounter) MAUDetail(_ context.Context, _, month string) (uint64, MAUDetail, error) {
	return 1234, MAUDetail{Source: "fake counter", Closed: c.closed[month], ByApp: map[string]uint64{"a": 99999, "qa": 99999, "p": 99999}}, nil
}

const billingTenants = `tenants:
  - {id: acme, plan: pro, purchased: 2026-01-01, time_zone: America/New_York, apps: [a], testing_apps: [qa], contract: {included_mau: 1000, unit_price_usd: "0.012"}}
  - {id: poc, plan: poc_pro, purchased: 2026-01-01, testing_apps: [p]}
  - {id: lapsed, plan: pro, purchased: 2024-01-01, apps: [l]}
operator_keys: [%s]
`

func TestMAUBilling(t *testing.T) {
	plans, err := plan.Default()
	if err != nil {
		t.Fatal(err)
	}
	key, entry, err := tenant.NewOperatorKey(rand.Reader, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	cat, err := plans.ParseTenants("t.yaml", fmt.Appendf(nil, billingTenants, strings.TrimPrefix(entry.YAML(), "- ")))
	if err != nil {
		t.Fatal(err)
	}
	tm := func(tenant, month string) chstore.TenantMonth {
		return chstore.TenantMonth{TenantID: tenant, Month: month}
	}
	usage := &fakeUsage{asked: map[chstore.TenantMonth][2]time.Time{}, usage: map[chstore.TenantMonth]chstore.AppUsage{
		// March 8 in New York: 7 complete days and today's first sightings so far, a known
		// February (28 days).
		tm("acme", "2026-03"): {MAUByApp: map[string]uint64{"a": 1500, "qa": 40}, NewByApp: map[string]uint64{"a": 140, "qa": 7},
			NewByDay:  map[string][]uint64{"a": {500, 250, 180, 150, 130, 110, 100, 80}, "qa": {20, 5, 5, 3, 3, 2, 1, 1}},
			PrevByApp: map[string]uint64{"a": 1900, "qa": 60}},
		tm("acme", "2026-02"):   {MAUByApp: map[string]uint64{"a": 900, "qa": 5}, NewByApp: map[string]uint64{"a": 50}},
		tm("poc", "2026-03"):    {MAUByApp: map[string]uint64{"p": 150}, NewByApp: map[string]uint64{"p": 35}},
		tm("lapsed", "2026-03"): {MAUByApp: map[string]uint64{"l": 10}, NewByApp: map[string]uint64{"l": 7}},
	}}
	auth, err := NewAuth(cat.ReadKeyring(), nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	// 16:00Z on March 8 2026 is 12:00 EDT in New York, on the 23-hour day DST starts: 12 of its
	// 23 hours and 23 whole days are ahead. In UTC it is 16:00: 8 of 24 hours and 23 days.
	now := time.Date(2026, 3, 8, 16, 0, 0, 0, time.UTC)
	h := New(Config{Catalog: cat, MAU: fakeCounter{closed: map[string]bool{"2026-02": true}}, Plans: plans, Usage: usage,
		Auth: auth, Now: func() time.Time { return now }})
	read := func(url string) (MAUResponse, string) {
		t.Helper()
		rec := get(h, url, "Bearer "+key)
		if rec.Code != 200 {
			t.Fatalf("GET %s = %d %s", url, rec.Code, rec.Body)
		}
		var r MAUResponse
		if err := json.Unmarshal(rec.Body.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		if r.MAUBilling == nil {
			t.Fatalf("GET %s: no billing fields: %s", url, rec.Body)
		}
		return r, rec.Body.String()
	}
	f := func(name string, got, want any) {
		t.Helper()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	deref := func(p *float64) any {
		if p == nil {
			return "omitted"
		}
		return *p
	}
	deref64 := func(p *int64) any {
		if p == nil {
			return "omitted"
		}
		return *p
	}

	// acme's current month: billable 1500 (the testing app apart, the estimates ignored), 500
	// over the contract's 1,000 at 0.012.
	r, _ := read("/v1/tenants/acme/mau")
	b := r.MAUBilling
	f("acme month", r.Month, "2026-03")
	f("acme mau (the counter's)", r.MAU, 1234)
	f("acme plan", b.Plan, "pro")
	f("acme included", b.IncludedMAU, 1000)
	f("acme billable", b.BillableMAU, 1500)
	f("acme testing", b.TestingMAU, 40)
	f("acme quota_used", deref(b.QuotaUsed), 1.5)
	f("acme amount", b.AmountToDateUSD, "6.00")
	f("acme flags", b.Flags, []string{})
	// Projected: app a alone (qa is a testing app), on the curve fitted on its 7 complete days
	// blended with February's 1,900; the range priced at both ends.
	hz, _ := plan.NewHorizon(now, cat.Tenants[0].Location(), calendar.Month{Year: 2026, Month: time.March})
	want, _ := hz.ProjectApp(1500, []uint64{500, 250, 180, 150, 130, 110, 100, 80}, 1900, true)
	if p := b.Projection; p == nil {
		t.Errorf("acme: no projection for the current month")
	} else {
		f("acme month_end_mau low/point/high", []int64{p.MonthEndMAULow, p.MonthEndMAU, p.MonthEndMAUHigh},
			[]int64{int64(want.Low), int64(want.Point), int64(want.High)})
		// Whatever the curve, the month ends above today's 1500 and near February's 1,900 (the
		// last days bring 80–110 devices a day for 23.5 more days, thinning).
		if p.MonthEndMAULow < 1500 || p.MonthEndMAU < 1700 || p.MonthEndMAU > 2300 || p.MonthEndMAUHigh < p.MonthEndMAU {
			t.Errorf("acme projection %d (%d–%d), want about February's 1,900", p.MonthEndMAU, p.MonthEndMAULow, p.MonthEndMAUHigh)
		}
		over := func(mau int64) string {
			return decimal.NewFromInt(mau - 1000).Mul(decimal.RequireFromString("0.012")).StringFixed(2)
		}
		f("acme month_end_amounts", []string{p.MonthEndAmountLowUSD, p.MonthEndAmountUSD, p.MonthEndAmountHighUSD},
			[]string{over(p.MonthEndMAULow), over(p.MonthEndMAU), over(p.MonthEndMAUHigh)})
		f("acme month_end_quota", deref(p.MonthEndQuotaUsed), float64(p.MonthEndMAU)/1000)
		f("acme projection flags", p.Flags, []string{})
		f("acme history", []any{p.HistoryDays, p.HistoryFrom.Format(time.RFC3339), p.HistoryTo.Format(time.RFC3339)},
			[]any{7, "2026-03-01T05:00:00Z", "2026-03-08T05:00:00Z"})
		f("acme new billable (a's 7 complete days)", p.NewBillableMAU, 500+250+180+150+130+110+100)
		f("acme previous billable", deref64(p.PrevBillableMAU), 1900)
		f("acme days ahead", p.DaysAhead, 23.5217)
		for _, s := range []string{string(plan.BasisFit), string(plan.BasisPrev) + " (2 of 2 apps)"} {
			if !strings.Contains(p.Method, s) {
				t.Errorf("acme method %q does not say %q", p.Method, s)
			}
		}
	}
	f("acme window asked", usage.asked[tm("acme", "2026-03")], [2]time.Time{
		time.Date(2026, 3, 1, 5, 0, 0, 0, time.UTC), time.Date(2026, 3, 8, 5, 0, 0, 0, time.UTC)})

	// A closed month: exact, priced, no projection and no window asked.
	r, body := read("/v1/tenants/acme/mau?month=2026-02")
	f("acme 2026-02 closed", r.Closed, true)
	f("acme 2026-02 billable/testing/amount", []any{r.BillableMAU, r.TestingMAU, r.AmountToDateUSD, deref(r.QuotaUsed)}, []any{900, 5, "0.00", 0.9})
	f("acme 2026-02 projection", strings.Contains(body, "projection"), false)
	f("acme 2026-02 window", usage.asked[tm("acme", "2026-02")][0].IsZero(), true)
	// A month to come: nothing yet, nothing projected; the quota is used 0, not omitted.
	r, body = read("/v1/tenants/acme/mau?month=2026-04")
	f("acme 2026-04", []any{r.BillableMAU, r.AmountToDateUSD, deref(r.QuotaUsed), strings.Contains(body, "projection")}, []any{0, "0.00", 0, false})

	// POC: the cap counts the testing app. No daily counts (a store that has none): the prior
	// curve scaled to the MAU so far. 16:00Z on March 8 is 7⅔ days into 31 in UTC, day 1 and
	// 6⅔/30 of the prior's tail: 150 / ((1 + 3 × 2/9) / 4) = 360 (range 245–475), over the cap
	// of 200: warned, never charged.
	r, _ = read("/v1/tenants/poc/mau")
	f("poc", []any{r.Plan, r.IncludedMAU, r.BillableMAU, r.TestingMAU, deref(r.QuotaUsed), r.AmountToDateUSD, r.Flags},
		[]any{"poc_pro", 200, 150, 150, 0.75, "0.00", []string{}})
	if p := r.Projection; p == nil {
		t.Errorf("poc: no projection")
	} else {
		f("poc projection", []any{p.MonthEndMAULow, p.MonthEndMAU, p.MonthEndMAUHigh, p.MonthEndAmountUSD, p.MonthEndAmountHighUSD, p.Flags, p.DaysAhead},
			[]any{245, 360, 475, "0.00", "0.00", []string{plan.FlagPOCCapExceeded}, 23.3333})
		f("poc method", strings.Contains(p.Method, string(plan.BasisMAU)), true)
		f("poc previous billable", deref64(p.PrevBillableMAU), "omitted")
	}

	// No plan in force: empty plan, flagged, no quota, nothing charged; still projected.
	r, body = read("/v1/tenants/lapsed/mau")
	f("lapsed", []any{r.Plan, r.IncludedMAU, r.BillableMAU, deref(r.QuotaUsed), r.AmountToDateUSD, r.Flags},
		[]any{"", 0, 10, "omitted", "0.00", []string{plan.FlagNoActivePlan}})
	f("lapsed plan field present", strings.Contains(body, `"plan":""`), true)
	// 10 devices 7⅔ days in: 24 at the prior's 4×, nothing charged, flagged.
	if p := r.Projection; p == nil || p.MonthEndMAU != 24 || p.MonthEndAmountUSD != "0.00" || !slices.Equal(p.Flags, []string{plan.FlagNoActivePlan}) {
		t.Errorf("lapsed projection %+v, want 24 MAU, nothing charged, flagged no_active_plan", p)
	}

	// The store failing fails the read, as the MAU itself does.
	usage.failing = true
	if rec := get(h, "/v1/tenants/acme/mau", "Bearer "+key); rec.Code != 503 {
		t.Errorf("AppUsage failing: %d %s, want 503", rec.Code, rec.Body)
	}
}

// TestMAUWithoutPlans: a role without the plan catalogue or ClickHouse answers MAU only.
func TestMAUWithoutPlans(t *testing.T) {
	h, keys, _ := testRouter(t)
	rec := get(h, "/v1/tenants/acme/mau?month=2026-10", "Bearer "+keys.operator)
	for _, field := range []string{`"plan"`, `"billable_mau"`, `"amount_to_date_usd"`, `"flags"`, `"projection"`} {
		if strings.Contains(rec.Body.String(), field) {
			t.Errorf("without plans the read has %s: %s", field, rec.Body)
		}
	}
	if !strings.Contains(rec.Body.String(), `"mau":42`) {
		t.Errorf("without plans: %s, want mau 42", rec.Body)
	}
}

// TestOpenAPIDocumentsMAU checks that schemas/openapi.yaml describes every field of a full MAU
// answer (billing and projection included) and nothing it never sends.
func TestOpenAPIDocumentsMAU(t *testing.T) {
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]any `yaml:"properties"`
			} `yaml:"schemas"`
		} `yaml:"components"`
	}
	if err := yaml.Unmarshal(schemas.OpenAPI, &doc); err != nil {
		t.Fatal(err)
	}
	one := 1.0
	full := MAUResponse{RollupVersion: 1, HLLEstimate: 1, HLLRelativeError: 1, ByApp: map[string]uint64{"a": 1},
		MAUBilling: &MAUBilling{QuotaUsed: &one, Projection: &MAUProjection{MonthEndQuotaUsed: &one, PrevBillableMAU: new(int64)}}}
	data, err := json.Marshal(full)
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		t.Fatal(err)
	}
	var projection map[string]json.RawMessage
	if err := json.Unmarshal(fields["projection"], &projection); err != nil {
		t.Fatal(err)
	}
	f := func(schema string, sent map[string]json.RawMessage) {
		t.Helper()
		documented := doc.Components.Schemas[schema].Properties
		for k := range sent {
			if _, ok := documented[k]; !ok {
				t.Errorf("the MAU read sends %s, which schemas/openapi.yaml %s does not document", k, schema)
			}
		}
		for k := range documented {
			if _, ok := sent[k]; !ok {
				t.Errorf("schemas/openapi.yaml %s documents %s, which the MAU read never sends", schema, k)
			}
		}
	}
	f("MAU", fields)
	f("MAUProjection", projection)
}
