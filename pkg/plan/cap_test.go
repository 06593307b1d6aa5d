package plan

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// capDays writes the caps of a month's days as runs: "1-19 poc_pro:200@2026-09-01, 20-30 -".
func capDays(caps []Cap) string {
	var runs []string
	for i := 0; i < len(caps); {
		j := i
		for j+1 < len(caps) && caps[j+1] == caps[i] {
			j++
		}
		what := "-"
		if c := caps[i]; c.Capped {
			what = fmt.Sprintf("%s:%d@%s", c.Plan, c.Limit, c.Purchased)
		}
		days := fmt.Sprint(i + 1)
		if j > i {
			days += fmt.Sprintf("-%d", j+1)
		}
		runs = append(runs, days+" "+what)
		i = j + 1
	}
	return strings.Join(runs, ", ")
}

// TestDailyCaps: a day is capped when a POC purchase is in force on it and no pay-as-you-go
// purchase is, at the largest cap of the POC purchases in force (after their contracts, ties to
// the latest purchased). HardCap is the month's largest; MayCap says whether any day can be.
func TestDailyCaps(t *testing.T) {
	incl := theDefault(t)
	excl, mar1 := withValidity(t, false, LeapDayFeb28), withValidity(t, true, LeapDayMar1)
	f := func(c *Catalog, entry, m, wantDays, wantCap string, wantMay bool) {
		t.Helper()
		tn := tenantOf(t, c, entry)
		mo := month(t, m)
		caps := c.DailyCaps(tn, mo)
		if got := capDays(caps); got != wantDays {
			t.Errorf("{%s} %s days:\n got %s\nwant %s", entry, m, got, wantDays)
		}
		got := "-"
		if limit, ok := c.HardCap(tn, mo); ok {
			got = fmt.Sprint(limit)
		}
		if got != wantCap {
			t.Errorf("{%s} %s: HardCap %s, want %s", entry, m, got, wantCap)
		}
		if may := c.MayCap(tn); may != wantMay {
			t.Errorf("{%s}: MayCap = %v, want %v", entry, may, wantMay)
		}
		for i, want := range caps { // CapOn answers day by day what DailyCaps lists
			if got := c.CapOn(tn, mo.Year, mo.Month, i+1); got != want {
				t.Errorf("{%s} %s-%02d: CapOn %+v, DailyCaps %+v", entry, m, i+1, got, want)
			}
		}
	}
	const poc = "id: t, plan: poc_pro, purchased: 2026-09-10, testing_apps: [qa]"
	f(incl, poc, "2026-08", "1-31 -", "-", true)
	f(incl, poc, "2026-09", "1-9 -, 10-30 poc_pro:200@2026-09-10", "200", true) // from its purchase day
	f(incl, poc, "2026-11", "1-30 poc_pro:200@2026-09-10", "200", true)
	f(incl, poc, "2027-09", "1-10 poc_pro:200@2026-09-10, 11-30 -", "200", true) // through the anniversary
	f(excl, poc, "2027-09", "1-9 poc_pro:200@2026-09-10, 10-30 -", "200", true)  // or the day before
	f(incl, poc, "2027-10", "1-31 -", "-", true)
	f(incl, "id: t, plan: poc_enterprise, purchased: 2026-09-01, testing_apps: [qa], contract: {included_mau: 300}", "2026-11",
		"1-30 poc_enterprise:300@2026-09-01", "300", true)
	f(incl, "id: t, plan: poc_pro, purchased: 2026-09-01, testing_apps: [qa], contract: {included_mau: 0}", "2026-11",
		"1-30 poc_pro:0@2026-09-01", "0", true) // capped at nothing: every new device refused
	f(incl, "id: t, plan: pro, purchased: 2026-09-01, apps: [a]", "2026-11", "1-30 -", "-", false)
	f(incl, "id: t, plan: enterprise, purchased: 2026-09-01, apps: [a], contract: {included_mau: 5}", "2026-11", "1-30 -", "-", false)

	// A POC tenant buys Pro on November 20: November 1-19 are capped, the days Pro is in force
	// are not, though the POC purchase runs on.
	const upgraded = "id: t, plan: pro, purchased: 2026-11-20, apps: [a], testing_apps: [qa], plan_history: [{plan: poc_pro, purchased: 2026-09-01}]"
	f(incl, upgraded, "2026-10", "1-31 poc_pro:200@2026-09-01", "200", true)
	f(incl, upgraded, "2026-11", "1-19 poc_pro:200@2026-09-01, 20-30 -", "200", true)
	f(incl, upgraded, "2026-12", "1-31 -", "-", true)
	// A paid plan that ends on the 10th, a POC bought on the 5th: capped from the 11th.
	f(incl, "id: t, plan: pro, purchased: 2025-11-10, apps: [a], testing_apps: [qa], plan_history: [{plan: poc_enterprise, purchased: 2026-11-05}]",
		"2026-11", "1-10 -, 11-30 poc_enterprise:500@2026-11-05", "500", true)
	// Two POC purchases: the larger cap where both are in force, whichever came first.
	f(incl, "id: t, plan: poc_pro, purchased: 2026-09-01, testing_apps: [qa], contract: {included_mau: 300}, plan_history: [{plan: poc_enterprise, purchased: 2026-11-15}]",
		"2026-11", "1-14 poc_pro:300@2026-09-01, 15-30 poc_enterprise:500@2026-11-15", "500", true)
	f(incl, "id: t, plan: poc_pro, purchased: 2026-09-01, testing_apps: [qa], contract: {included_mau: 800}, plan_history: [{plan: poc_enterprise, purchased: 2026-11-15}]",
		"2026-11", "1-30 poc_pro:800@2026-09-01", "800", true)
	f(incl, "id: t, plan: poc_pro, purchased: 2026-09-01, testing_apps: [qa], contract: {included_mau: 500}, plan_history: [{plan: poc_enterprise, purchased: 2026-11-15}]",
		"2026-11", "1-14 poc_pro:500@2026-09-01, 15-30 poc_enterprise:500@2026-11-15", "500", true) // a tie: the later purchase
	// A POC renewed on its anniversary: no day uncapped.
	f(excl, "id: t, plan: poc_pro, purchased: 2026-09-10, testing_apps: [qa], plan_history: [{plan: poc_pro, purchased: 2027-09-10}]",
		"2027-09", "1-9 poc_pro:200@2026-09-10, 10-30 poc_pro:200@2027-09-10", "200", true)
	// February 29: the anniversary is February 28 (feb28) or March 1 (mar1).
	const leap = "id: t, plan: poc_pro, purchased: 2028-02-29, testing_apps: [qa]"
	f(incl, leap, "2028-02", "1-28 -, 29 poc_pro:200@2028-02-29", "200", true)
	f(incl, leap, "2029-02", "1-28 poc_pro:200@2028-02-29", "200", true)
	f(incl, leap, "2029-03", "1-31 -", "-", true)
	f(mar1, leap, "2029-03", "1 poc_pro:200@2028-02-29, 2-31 -", "200", true)
}

// TestCapAt: an instant is capped by the day it falls on in the tenant's zone. The POC plan
// runs through 2026-03-01 and Pro starts that day, so February 28 is capped and March 1 is not;
// one instant, 2026-02-28T20:00Z, is March 1 in Shanghai and Kiritimati and February 28 in Los
// Angeles.
func TestCapAt(t *testing.T) {
	c := theDefault(t)
	for _, zone := range []string{"Asia/Shanghai", "America/Los_Angeles", "Pacific/Kiritimati", "UTC"} {
		tn := tenantOf(t, c, "id: t, plan: pro, purchased: 2026-03-01, time_zone: "+zone+", apps: [a], testing_apps: [qa], plan_history: [{plan: poc_pro, purchased: 2025-03-01}]")
		loc := tn.Location()
		for _, tc := range []struct {
			at   time.Time
			want bool
		}{
			{time.Date(2026, 2, 28, 0, 0, 0, 0, loc), true},
			{time.Date(2026, 2, 28, 23, 59, 59, 999_999_999, loc), true},
			{time.Date(2026, 3, 1, 0, 0, 0, 0, loc), false},
			{time.Date(2026, 3, 1, 23, 59, 59, 0, loc), false},
			{time.Date(2025, 2, 28, 23, 59, 59, 0, loc), false}, // before the POC purchase
			{time.Date(2025, 3, 1, 0, 0, 0, 0, loc), true},
		} {
			if got := c.CapAt(tn, tc.at); got.Capped != tc.want || tc.want && got.Limit != 200 {
				t.Errorf("%s: CapAt(%s = %s UTC) = %+v, want capped %v", zone, tc.at.Format(time.DateTime), tc.at.UTC().Format(time.DateTime), got, tc.want)
			}
		}
		instant := time.Date(2026, 2, 28, 20, 0, 0, 0, time.UTC)
		want := zone == "America/Los_Angeles" || zone == "UTC"
		if got := c.CapAt(tn, instant); got.Capped != want {
			t.Errorf("%s: CapAt(%s) = %+v, want capped %v (local %s)", zone, instant, got, want, instant.In(loc))
		}
	}
}
