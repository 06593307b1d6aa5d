package plan

import (
	"github.com/maumeter/maumeter/pkg/calendar"
	"github.com/maumeter/maumeter/pkg/tenant"
)

// HardCap is the MAU cap of tenant t in month m (a month of t's billing calendar): the included
// MAU, after the contract's override, of the purchase that prices m (Terms) when its plan is
// hard-capped (POC). ok is false when m is priced by a pay-as-you-go plan, by no purchase, or
// by a plan c lacks: then nothing caps the month. The gateway refuses new devices of a month at
// this cap (pipeline/caps), the same figure Price flags poc_cap_exceeded above.
func (c *Catalog) HardCap(t *tenant.Tenant, m calendar.Month) (limit int64, ok bool) {
	tr, err := c.Terms(t, m)
	if err != nil || tr.Plan == nil || !tr.Plan.HardCap {
		return 0, false
	}
	return tr.IncludedMAU, true
}

// MayCap reports whether some purchase of t is of a hard-capped plan of c: only then can a
// month of t have a HardCap. It lets the gateway skip the question for every other tenant.
func (c *Catalog) MayCap(t *tenant.Tenant) bool {
	for _, pu := range t.Purchases() {
		if p, ok := c.Plan(pu.Plan); ok && p.HardCap {
			return true
		}
	}
	return false
}
