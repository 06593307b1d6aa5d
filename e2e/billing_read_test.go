package e2e

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/maumeter/maumeter/pkg/calendar"
	"github.com/maumeter/maumeter/pkg/plan"
)

// mauBilling is the part of the MAU read that prices and projects the month.
type mauBilling struct {
	AsOf            time.Time `json:"as_of"`
	Plan            *string   `json:"plan"`
	IncludedMAU     int64     `json:"included_mau"`
	BillableMAU     int64     `json:"billable_mau"`
	TestingMAU      int64     `json:"testing_mau"`
	AmountToDateUSD string    `json:"amount_to_date_usd"`
	Flags           []string  `json:"flags"`
	Projection      *struct {
		MonthEndMAU           int64     `json:"month_end_mau"`
		MonthEndMAULow        int64     `json:"month_end_mau_low"`
		MonthEndMAUHigh       int64     `json:"month_end_mau_high"`
		MonthEndAmountUSD     string    `json:"month_end_amount_usd"`
		MonthEndAmountLowUSD  string    `json:"month_end_amount_low_usd"`
		MonthEndAmountHighUSD string    `json:"month_end_amount_high_usd"`
		Method                string    `json:"method"`
		HistoryDays           int       `json:"history_days"`
		HistoryFrom           time.Time `json:"history_from"`
		HistoryTo             time.Time `json:"history_to"`
		NewBillableMAU        int64     `json:"new_billable_mau"`
		DaysAhead             float64   `json:"days_ahead"`
	} `json:"projection"`
}

// checkBilling reads the MAU of a tenant-month from the real binary and checks its billing
// fields against the truth: the billable/testing split exact and the amount to date equal to
// plan.Price of the truth's per-app MAU; for the current month, the projection's basis counted
// again from mau_devices with a query of the test's own, its bounds, and its price (its model is
// pkg/plan's, tested there and backtested in TestProjectionBacktest).
func (p *pipeline) checkBilling(t *testing.T, conn driver.Conn, tenantID, month string, truth map[string]bool) {
	t.Helper()
	plans, err := plan.Default()
	if err != nil {
		t.Fatal(err)
	}
	cat, err := plans.ParseTenants("catalogue", fmt.Appendf(nil, catalogue, "", "", "", ""))
	if err != nil {
		t.Fatal(err)
	}
	ten, _ := cat.Tenant(tenantID)
	m, err := calendar.ParseMonth(month)
	if err != nil {
		t.Fatal(err)
	}
	byApp := map[string]uint64{}
	for k := range truth {
		app, _, _ := strings.Cut(k, "/")
		byApp[app]++
	}
	want := plans.Price(ten, plan.Usage{Month: m, MAUByApp: byApp})
	var got mauBilling
	if code, err := getJSON(fmt.Sprintf("%s/v1/tenants/%s/mau?month=%s", p.countURL, tenantID, month), p.operator, &got); err != nil || code != http.StatusOK {
		t.Fatalf("API %s %s: %d %v", tenantID, month, code, err)
	}
	gotPlan := "<absent>"
	if got.Plan != nil {
		gotPlan = *got.Plan
	}
	if gotPlan != want.Plan || got.IncludedMAU != want.IncludedMAU || got.BillableMAU != want.MAU ||
		got.TestingMAU != want.TestingMAU || got.AmountToDateUSD != want.Amount.StringFixed(2) || !slices.Equal(got.Flags, want.Flags) {
		t.Errorf("%s %s billing: plan %q included %d billable %d testing %d amount %s flags %v; want %q %d %d %d %s %v (truth %v)",
			tenantID, month, gotPlan, got.IncludedMAU, got.BillableMAU, got.TestingMAU, got.AmountToDateUSD, got.Flags,
			want.Plan, want.IncludedMAU, want.MAU, want.TestingMAU, want.Amount.StringFixed(2), want.Flags, byApp)
	}

	loc := ten.Location()
	local := got.AsOf.In(loc)
	current := calendar.MonthOf(got.AsOf, loc) == m
	pr := got.Projection
	switch {
	case !current || local.Day() == 1:
		if pr != nil {
			t.Errorf("%s %s: projection %+v at %s; want none (not the current month, or its first day)", tenantID, month, *pr, local)
		}
		return
	case pr == nil:
		t.Errorf("%s %s: no projection for the current month at %s", tenantID, month, local)
		return
	}
	y, mo, d := local.Date()
	days := d - 1 // the month's complete days
	if pr.HistoryDays != days || !pr.HistoryTo.Equal(time.Date(y, mo, d, 0, 0, 0, 0, loc)) || !pr.HistoryFrom.Equal(time.Date(y, mo, 1, 0, 0, 0, 0, loc)) {
		t.Errorf("%s %s: history %d days [%s, %s) at %s, want %d days to midnight in %s", tenantID, month,
			pr.HistoryDays, pr.HistoryFrom, pr.HistoryTo, local, days, loc)
	}
	var billable []string
	for app := range byApp {
		if _, testing := ten.App(app); !testing {
			billable = append(billable, app)
		}
	}
	var fresh uint64
	if err := conn.QueryRow(context.Background(), `SELECT count() FROM (
			SELECT device_key, min(first_seen_at) AS f FROM mau_devices WHERE tenant_id = ? AND month = ? AND app_id IN ? GROUP BY device_key)
		WHERE f >= fromUnixTimestamp64Milli(?) AND f < fromUnixTimestamp64Milli(?)`,
		tenantID, month, billable, pr.HistoryFrom.UnixMilli(), pr.HistoryTo.UnixMilli()).Scan(&fresh); err != nil {
		t.Fatal(err)
	}
	// The days ahead of as_of, from the clock the answer gives (with nanoseconds): the rest of
	// today as a fraction of its own length, and the whole days after it.
	today, tomorrow := time.Date(y, mo, d, 0, 0, 0, 0, loc), time.Date(y, mo, d+1, 0, 0, 0, 0, loc)
	last := time.Date(y, mo+1, 0, 12, 0, 0, 0, time.UTC).Day()
	ahead := float64(tomorrow.Sub(got.AsOf))/float64(tomorrow.Sub(today)) + float64(last-d)
	// Never below the MAU so far, a range around the point, never 20× (the constant rate made
	// 22× of a steady tenant's day 2).
	if pr.NewBillableMAU != int64(fresh) || math.Abs(pr.DaysAhead-ahead) > 0.00005+1e-9 || pr.MonthEndMAULow < want.MAU ||
		pr.MonthEndMAULow > pr.MonthEndMAU || pr.MonthEndMAU > pr.MonthEndMAUHigh || pr.MonthEndMAU >= 20*max(want.MAU, 1) ||
		!strings.HasPrefix(pr.Method, plan.ProjectionMethod) {
		t.Errorf("%s %s: projection %d (%d–%d; new %d over %d days, %.4f ahead; %q); want at least %d, %d new, %.6f ahead",
			tenantID, month, pr.MonthEndMAU, pr.MonthEndMAULow, pr.MonthEndMAUHigh, pr.NewBillableMAU, pr.HistoryDays, pr.DaysAhead, pr.Method,
			want.MAU, fresh, ahead)
	}
	if len(billable) == 1 { // then the projected bill is the price of that one app's projection
		price := func(mau int64) string {
			return plans.Price(ten, plan.Usage{Month: m, MAUByApp: map[string]uint64{billable[0]: uint64(mau)}}).Amount.StringFixed(2)
		}
		if got, want := []string{pr.MonthEndAmountLowUSD, pr.MonthEndAmountUSD, pr.MonthEndAmountHighUSD},
			[]string{price(pr.MonthEndMAULow), price(pr.MonthEndMAU), price(pr.MonthEndMAUHigh)}; !slices.Equal(got, want) {
			t.Errorf("%s %s: month-end amounts %v, want %v (plan.Price of %d, %d, %d)", tenantID, month, got, want,
				pr.MonthEndMAULow, pr.MonthEndMAU, pr.MonthEndMAUHigh)
		}
	}
	t.Logf("%-24s billable %d testing %d amount %s; projected %d (%d–%d) → %s (%d new in %d days, %.2f days ahead)", tenantID+" "+month,
		got.BillableMAU, got.TestingMAU, got.AmountToDateUSD, pr.MonthEndMAU, pr.MonthEndMAULow, pr.MonthEndMAUHigh, pr.MonthEndAmountUSD,
		pr.NewBillableMAU, pr.HistoryDays, pr.DaysAhead)
}
