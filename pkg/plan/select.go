package plan

import (
	"fmt"
	"time"

	"github.com/shopspring/decimal"

	"github.com/maumeter/maumeter/pkg/calendar"
	"github.com/maumeter/maumeter/pkg/tenant"
)

// Which purchase prices a month, and which caps a day (docs/BILLING.md says the same for
// people):
//
//   - A purchase is in force from its purchase day through its last day (Validity), days of the
//     tenant's billing calendar. The purchases of a month are those in force on at least one of
//     its days; none: the month is flagged no_active_plan and not charged.
//   - When a pay-as-you-go purchase is among them, only pay-as-you-go purchases may price the
//     month; otherwise the hard-capped (POC) ones do. POC plans have no pay-as-you-go: their
//     0 USD is not a price for MAU above the cap, which the gateway refuses on POC days, but
//     MAU a paid purchase was bought for; and a POC plan has no production super app.
//   - Each purchase that may price the month prices its whole usage alone; the lowest amount
//     wins, so the month is never billed above the best single purchase. Ties (the same amount
//     in cents): the most included MAU after the contract, then the latest purchased (one
//     purchase a day, so this always decides).
//   - A day is capped when a POC purchase is in force on it and no pay-as-you-go purchase is;
//     the cap is the largest included MAU of those POC purchases (cap.go).

// Terms are the figures of one purchase: its plan and the figures after the contract's
// overrides.
type Terms struct {
	Plan         *Plan // nil only with ErrUnknownPlan
	Purchase     *tenant.Purchase
	Purchased    string          // YYYY-MM-DD
	ValidUntil   string          // YYYY-MM-DD, the anniversary
	ValidThrough string          // YYYY-MM-DD, the last day in force
	IncludedMAU  int64           // the plan's, or the contract's (on a POC plan: the cap)
	UnitPrice    decimal.Decimal // the plan's, or the contract's; zero without pay-as-you-go
	Contract     bool            // the contract overrides a figure

	from, through date
}

// PayAsYouGo reports whether the purchase's plan charges MAU above its included MAU (an
// official plan). A purchase of a plan the catalogue lacks does not.
func (tr Terms) PayAsYouGo() bool { return tr.Plan != nil && tr.Plan.PayAsYouGo }

// hardCap reports whether the purchase's plan is hard-capped (POC).
func (tr Terms) hardCap() bool { return tr.Plan != nil && tr.Plan.HardCap }

// date is a day of a billing calendar, without a zone: the tenant's zone made it.
type date struct {
	y int
	m time.Month
	d int
}

func dateOf(t time.Time) date {
	y, m, d := t.Date()
	return date{y, m, d}
}

func (a date) compare(b date) int {
	switch {
	case a.y != b.y:
		return a.y - b.y
	case a.m != b.m:
		return int(a.m) - int(b.m)
	}
	return a.d - b.d
}

func (a date) String() string { return fmt.Sprintf("%04d-%02d-%02d", a.y, int(a.m), a.d) }

// add moves a by n days, through month and year ends.
func (a date) add(n int) date { return dateOf(time.Date(a.y, a.m, a.d+n, 12, 0, 0, 0, time.UTC)) }

func laterOf(a, b date) date {
	if a.compare(b) >= 0 {
		return a
	}
	return b
}

func earlierOf(a, b date) date {
	if a.compare(b) <= 0 {
		return a
	}
	return b
}

// firstDay and lastDay bound m: dates of the tenant's calendar, since m is a month of it.
func firstDay(m calendar.Month) date { return date{m.Year, m.Month, 1} }

func lastDay(m calendar.Month) date {
	return date{m.Year, m.Month, time.Date(m.Year, m.Month+1, 0, 12, 0, 0, 0, time.UTC).Day()}
}

// Validity of a purchase made on from: the anniversary and the last day in force.
func (v Validity) span(from date) (until, through date) {
	until = date{from.y + 1, from.m, from.d}
	if from.m == time.February && from.d == 29 {
		until = date{from.y + 1, time.February, 28}
		if v.LeapDayAnniversary == LeapDayMar1 {
			until = date{from.y + 1, time.March, 1}
		}
	}
	through = until
	if !v.AnniversaryIncluded {
		through = until.add(-1)
	}
	return until, through
}

// TermsOn lists the terms of every purchase of t in force on a day of t's billing calendar, by
// purchase day. ErrNoActivePlan: none is. ErrUnknownPlan: one names a plan c lacks (all are
// listed; that one with a nil Plan).
func (c *Catalog) TermsOn(t *tenant.Tenant, year int, month time.Month, day int) ([]Terms, error) {
	d := date{year, month, day}
	return c.inForce(t, d, d)
}

// TermsIn lists the terms of every purchase of t in force on at least one day of month m (a
// month of t's billing calendar), by purchase day: those that may price m. Errors as TermsOn.
func (c *Catalog) TermsIn(t *tenant.Tenant, m calendar.Month) ([]Terms, error) {
	return c.inForce(t, firstDay(m), lastDay(m))
}

// inForce lists the terms of the purchases of t in force on at least one day of [first, last].
func (c *Catalog) inForce(t *tenant.Tenant, first, last date) ([]Terms, error) {
	var out []Terms
	var unknown []string
	for _, pu := range t.Purchases() { // by day
		y, m, d := pu.Date()
		from := date{y, m, d}
		if from.compare(last) > 0 {
			break
		}
		until, through := c.Validity.span(from)
		if through.compare(first) < 0 {
			continue
		}
		tr := c.terms(pu, from, until, through)
		if tr.Plan == nil {
			unknown = append(unknown, fmt.Sprintf("%q (bought %s)", pu.Plan, from))
		}
		out = append(out, tr)
	}
	switch {
	case len(out) == 0:
		return nil, ErrNoActivePlan
	case len(unknown) > 0:
		return out, fmt.Errorf("%w: %v", ErrUnknownPlan, unknown)
	}
	return out, nil
}

// terms are the figures of purchase pu after its contract; Plan is nil when c lacks its plan.
func (c *Catalog) terms(pu *tenant.Purchase, from, until, through date) Terms {
	tr := Terms{Purchase: pu, Purchased: from.String(), ValidUntil: until.String(), ValidThrough: through.String(),
		UnitPrice: decimal.Zero, from: from, through: through}
	p, ok := c.Plan(pu.Plan)
	if !ok {
		return tr
	}
	tr.Plan, tr.IncludedMAU = p, p.IncludedMAU
	if p.PayAsYouGo {
		tr.UnitPrice = p.UnitPrice
	}
	if k := pu.Contract; k != nil {
		if k.IncludedMAU != nil {
			tr.IncludedMAU, tr.Contract = *k.IncludedMAU, true
		}
		if price, set := k.UnitPrice(); set && p.PayAsYouGo { // CheckTenants refuses it elsewhere
			tr.UnitPrice, tr.Contract = price, true
		}
	}
	return tr
}

// Candidate is one purchase in force on at least one day of a billed month, and what it alone
// would charge for the month's usage.
type Candidate struct {
	Plan                     string // the plan id the purchase names
	Purchased                string // YYYY-MM-DD
	ValidUntil, ValidThrough string // YYYY-MM-DD: the anniversary and the last day in force
	// From and Through are the first and last days of the month it is in force, YYYY-MM-DD.
	From, Through string
	Contract      bool            // its contract overrides a figure
	IncludedMAU   int64           // after the contract; the cap of a POC plan
	UnitPrice     decimal.Decimal // after the contract; zero without pay-as-you-go
	Amount        decimal.Decimal // what it alone charges for the month's usage, in cents
	// Considered: it could price the month. A POC purchase cannot while a pay-as-you-go
	// purchase is in force in the month; a purchase of a plan the catalogue lacks never can.
	Considered bool
	Priced     bool // it priced the month: the lowest Amount of the considered, ties decided
}

// priceBetter reports whether a prices a month in preference to b, both considered: a lower
// amount, then more included MAU, then a later purchase day.
func priceBetter(a, b *Candidate) bool {
	if c := a.Amount.Cmp(b.Amount); c != 0 {
		return c < 0
	}
	if a.IncludedMAU != b.IncludedMAU {
		return a.IncludedMAU > b.IncludedMAU
	}
	return a.Purchased > b.Purchased // YYYY-MM-DD sorts as dates
}

// gapIn reports whether some day of [first, last] has none of the purchases in force; terms
// are by purchase day.
func gapIn(terms []Terms, first, last date) bool {
	covered := first.add(-1) // every day through covered has a purchase in force
	for _, tr := range terms {
		if laterOf(tr.from, first).compare(covered.add(1)) > 0 {
			return true
		}
		covered = laterOf(covered, tr.through)
	}
	return covered.compare(last) < 0
}

// choose marks the candidates that may price the month (Considered) and the one that does
// (Priced), and returns its index. cands are the month's purchases (TermsIn, at least one), all
// of plans the catalogue holds, with their amounts: then one at least is considered.
func choose(terms []Terms, cands []Candidate) int {
	paid := false
	for _, tr := range terms {
		paid = paid || tr.PayAsYouGo()
	}
	best := -1
	for i := range cands {
		cands[i].Considered = terms[i].Plan != nil && (terms[i].PayAsYouGo() || !paid)
		if cands[i].Considered && (best < 0 || priceBetter(&cands[i], &cands[best])) {
			best = i
		}
	}
	cands[best].Priced = true
	return best
}
