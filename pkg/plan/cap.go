package plan

import (
	"time"

	"github.com/maumeter/maumeter/pkg/calendar"
	"github.com/maumeter/maumeter/pkg/tenant"
)

// Cap is the POC cap of a tenant on one day of its billing calendar: how many devices its
// month (those of every day of the month so far) may hold for the gateway to let a new device
// in on that day.
type Cap struct {
	Capped    bool   // false: nothing caps the day
	Limit     int64  // the included MAU of the purchase setting it, after its contract
	Plan      string // the hard-capped plan of that purchase
	Purchased string // YYYY-MM-DD, its purchase day
}

// CapOn is the cap of t on a day of t's billing calendar. A day is capped when a hard-capped
// (POC) purchase is in force on it and no pay-as-you-go purchase is: the cap stands in for the
// pay-as-you-go that POC plans lack, and a day with a paid purchase in force has it (the month
// is then priced by a paid purchase, which charges MAU above its included MAU). Several POC
// purchases in force: the largest cap, ties to the latest purchased, as pricing chooses among
// them. Purchases of plans c lacks are ignored.
func (c *Catalog) CapOn(t *tenant.Tenant, year int, month time.Month, day int) Cap {
	terms, _ := c.TermsOn(t, year, month, day)
	return capOf(terms)
}

// CapAt is the cap of t at an instant: CapOn of the day the instant falls on in t's billing
// zone (the gateway decides an event's cap by its timestamp this way).
func (c *Catalog) CapAt(t *tenant.Tenant, at time.Time) Cap {
	y, m, d := at.In(t.Location()).Date()
	return c.CapOn(t, y, m, d)
}

// DailyCaps is CapOn for every day of month m (a month of t's calendar): element i is day i+1.
func (c *Catalog) DailyCaps(t *tenant.Tenant, m calendar.Month) []Cap {
	terms, _ := c.TermsIn(t, m)
	first, last := firstDay(m), lastDay(m)
	caps := make([]Cap, last.d)
	var on []Terms
	for d := first; d.compare(last) <= 0; d = d.add(1) {
		on = on[:0]
		for _, tr := range terms {
			if tr.from.compare(d) <= 0 && d.compare(tr.through) <= 0 {
				on = append(on, tr)
			}
		}
		caps[d.d-1] = capOf(on)
	}
	return caps
}

// MonthCap is the largest cap of the days of month m (DailyCaps): a month holding that many
// devices admits no new device on any day. Capped is false when no day of m is capped.
func (c *Catalog) MonthCap(t *tenant.Tenant, m calendar.Month) Cap {
	var out Cap
	for _, cp := range c.DailyCaps(t, m) {
		if cp.Capped && (!out.Capped || cp.Limit > out.Limit || cp.Limit == out.Limit && cp.Purchased > out.Purchased) {
			out = cp
		}
	}
	return out
}

// HardCap is MonthCap's limit: ok is false when no day of m is capped. It is the figure Price
// flags poc_cap_exceeded above when a POC purchase prices m (no paid purchase is in force in
// m), since pricing then chooses the POC purchase with the most included MAU. The gateway
// refuses new devices day by day (DailyCaps, pipeline/caps).
func (c *Catalog) HardCap(t *tenant.Tenant, m calendar.Month) (limit int64, ok bool) {
	cp := c.MonthCap(t, m)
	return cp.Limit, cp.Capped
}

// capOf is the cap of a day on which the purchases terms are in force.
func capOf(terms []Terms) Cap {
	var out Cap
	for _, tr := range terms {
		if tr.PayAsYouGo() {
			return Cap{}
		}
		if !tr.hardCap() {
			continue
		}
		if !out.Capped || tr.IncludedMAU > out.Limit || tr.IncludedMAU == out.Limit && tr.Purchased > out.Purchased {
			out = Cap{Capped: true, Limit: tr.IncludedMAU, Plan: tr.Plan.ID, Purchased: tr.Purchased}
		}
	}
	return out
}

// MayCap reports whether some purchase of t is of a hard-capped plan of c: only then can a
// day of t have a cap. It lets the gateway skip the question for every other tenant.
func (c *Catalog) MayCap(t *tenant.Tenant) bool {
	for _, pu := range t.Purchases() {
		if p, ok := c.Plan(pu.Plan); ok && p.HardCap {
			return true
		}
	}
	return false
}
