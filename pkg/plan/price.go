package plan

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/shopspring/decimal"

	"github.com/maumeter/maumeter/pkg/calendar"
	"github.com/maumeter/maumeter/pkg/tenant"
)

// Flags on a Bill.
const (
	// FlagNoActivePlan: no purchase is in force on the month's last day; nothing is charged.
	FlagNoActivePlan = "no_active_plan"
	// FlagPOCCapExceeded: the MAU of a hard-capped (POC) plan went above its cap; never charged.
	FlagPOCCapExceeded = "poc_cap_exceeded"
	// FlagUnlistedApp: the usage has MAU of an app the catalogue does not list (any more); it is
	// billed as a production app, and named in Bill.UnlistedApps.
	FlagUnlistedApp = "unlisted_app"
	// FlagUnknownPlan: the purchase in force names a plan the catalogue lacks (CheckTenants
	// refuses such a tenant catalogue); nothing is charged.
	FlagUnknownPlan = "unknown_plan"
)

// Flags on Entitlements.
const (
	FlagSuperAppsExceeded    = "super_apps_exceeded"
	FlagTestingAppsExceeded  = "testing_apps_exceeded"
	FlagMiniProgramsExceeded = "mini_programs_exceeded"
)

// Errors of Catalog.Terms.
var (
	ErrNoActivePlan = errors.New("no plan in force")
	ErrUnknownPlan  = errors.New("the plan in force is not in the plan catalogue")
)

// Usage is what the rollup of one tenant-month says.
type Usage struct {
	Month        calendar.Month    // in the tenant's billing calendar
	MAUByApp     map[string]uint64 // exact MAU per app (device keys include the app: the sum is the MAU)
	MiniPrograms uint64            // distinct mini programs seen in the month's events
}

// Bill is the priced tenant-month, with its evidence.
type Bill struct {
	TenantID, Month string
	Plan            string // plan in force on the month's last day; "" when none
	PlanPurchased   string // YYYY-MM-DD, "" when none
	PlanValidUntil  string // YYYY-MM-DD (the anniversary), "" when none
	// PlanValidThrough is the last day the purchase is in force: PlanValidUntil, or the day
	// before when the catalogue's validity excludes the anniversary. "" when none.
	PlanValidThrough string
	Contract         bool // a contract override applied
	// MAU is the billable MAU, measured against IncludedMAU: production apps (and unlisted
	// ones), plus testing apps when the tenant has bill_testing_apps. On a hard-capped (POC)
	// plan the cap covers all apps, so MAU is TotalMAU.
	MAU          int64
	TestingMAU   int64 // MAU of testing apps (reported)
	TotalMAU     int64 // all apps
	IncludedMAU  int64
	OverageMAU   int64           // max(0, MAU − IncludedMAU); charged only with pay-as-you-go
	UnitPrice    decimal.Decimal // USD per MAU; zero when nothing is charged per MAU
	Amount       decimal.Decimal // USD, rounded half-up to cents once, at the end
	Flags        []string        // sorted: no_active_plan, poc_cap_exceeded, unlisted_app, unknown_plan
	UnlistedApps []string        // sorted: apps with MAU that the catalogue does not list
	BillableApps []string        // sorted: the apps with MAU whose devices make up MAU
	Entitlements Entitlements
}

// Entitlements compare what the month's events show with the plan's limits: information, not
// a charge. Without a plan in force the limits are 0 and nothing is flagged.
type Entitlements struct {
	ProductionApps, ProductionAppsLimit int // production (and unlisted) apps with MAU
	TestingApps, TestingAppsLimit       int // testing apps with MAU
	MiniPrograms, MiniProgramsLimit     int // limit: mini programs that can be released
	Flags                               []string
}

// Terms are what prices a tenant-month: the purchase in force on its last day, its plan and the
// figures after the contract's overrides.
type Terms struct {
	Plan         *Plan // nil only with ErrUnknownPlan
	Purchase     *tenant.Purchase
	Purchased    string          // YYYY-MM-DD
	ValidUntil   string          // YYYY-MM-DD, the anniversary
	ValidThrough string          // YYYY-MM-DD, the last day in force
	IncludedMAU  int64           // the plan's, or the contract's (on a POC plan: the cap)
	UnitPrice    decimal.Decimal // the plan's, or the contract's; zero without pay-as-you-go
	Contract     bool            // the contract overrides a figure
}

// date is a day of a billing calendar, without a zone: the tenant's zone made it.
type date struct {
	y int
	m time.Month
	d int
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

func (a date) prev() date {
	y, m, d := time.Date(a.y, a.m, a.d-1, 12, 0, 0, 0, time.UTC).Date()
	return date{y, m, d}
}

// lastDay is the last day of m: a date of the tenant's calendar, since m is a month of it.
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
		through = until.prev()
	}
	return until, through
}

// Terms are the terms pricing month m of t: those of the purchase in force on m's last day (a
// date of t's billing calendar). When several purchases are in force that day, the latest
// purchased wins. ErrNoActivePlan: none is; ErrUnknownPlan: its plan is not in c (the other
// fields are set).
func (c *Catalog) Terms(t *tenant.Tenant, m calendar.Month) (Terms, error) {
	d := lastDay(m)
	return c.TermsOn(t, d.y, d.m, d.d)
}

// TermsOn are the terms of the purchase of t in force on a day of t's billing calendar.
func (c *Catalog) TermsOn(t *tenant.Tenant, year int, month time.Month, day int) (Terms, error) {
	on := date{year, month, day}
	var in *tenant.Purchase
	var from, until, through date
	for _, p := range t.Purchases() { // by day
		y, m, d := p.Date()
		pf := date{y, m, d}
		if pf.compare(on) > 0 {
			break
		}
		if pu, pt := c.Validity.span(pf); pt.compare(on) >= 0 {
			in, from, until, through = p, pf, pu, pt
		}
	}
	if in == nil {
		return Terms{}, ErrNoActivePlan
	}
	tr := Terms{Purchase: in, Purchased: from.String(), ValidUntil: until.String(), ValidThrough: through.String(),
		UnitPrice: decimal.Zero}
	p, ok := c.Plan(in.Plan)
	if !ok {
		return tr, fmt.Errorf("%w: %q", ErrUnknownPlan, in.Plan)
	}
	tr.Plan, tr.IncludedMAU = p, p.IncludedMAU
	if p.PayAsYouGo {
		tr.UnitPrice = p.UnitPrice
	}
	if k := in.Contract; k != nil {
		if k.IncludedMAU != nil {
			tr.IncludedMAU, tr.Contract = *k.IncludedMAU, true
		}
		if price, set := k.UnitPrice(); set && p.PayAsYouGo { // CheckTenants refuses it elsewhere
			tr.UnitPrice, tr.Contract = price, true
		}
	}
	return tr, nil
}

// Price prices month u.Month of t on the terms in force on its last day:
//
//	amount = max(0, billable MAU − included MAU) × unit price, rounded half-up to cents once
//
// with the contract's overrides. A hard-capped (POC) plan never charges; its cap covers the
// MAU of all apps and is flagged poc_cap_exceeded when exceeded. A month without a purchase in
// force is flagged no_active_plan and not charged; its MAU is still reported. Testing apps are
// billable only when t says bill_testing_apps; apps t does not list are billable and flagged
// unlisted_app. t must be a tenant of a catalogue checked against c (ParseTenants,
// CheckTenants); otherwise a purchase of a plan c lacks is flagged unknown_plan, not charged.
func (c *Catalog) Price(t *tenant.Tenant, u Usage) Bill {
	b := Bill{TenantID: t.ID, Month: u.Month.String(), UnitPrice: decimal.Zero, Amount: decimal.Zero,
		Flags: []string{}, UnlistedApps: []string{}, BillableApps: []string{}, Entitlements: Entitlements{Flags: []string{}}}
	var production, testing uint64 // production includes the unlisted apps
	var testingApps []string
	for app, n := range u.MAUByApp {
		if n == 0 {
			continue
		}
		switch known, isTesting := t.App(app); {
		case !known:
			b.UnlistedApps = append(b.UnlistedApps, app)
			b.BillableApps = append(b.BillableApps, app)
			production = addSat(production, n)
			b.Entitlements.ProductionApps++
		case isTesting:
			testingApps = append(testingApps, app)
			testing = addSat(testing, n)
			b.Entitlements.TestingApps++
		default:
			b.BillableApps = append(b.BillableApps, app)
			production = addSat(production, n)
			b.Entitlements.ProductionApps++
		}
	}
	slices.Sort(b.UnlistedApps)
	if len(b.UnlistedApps) > 0 {
		b.Flags = append(b.Flags, FlagUnlistedApp)
	}
	b.Entitlements.MiniPrograms = int(min(u.MiniPrograms, math.MaxInt))
	b.TestingMAU, b.TotalMAU = toInt64(testing), toInt64(addSat(production, testing))
	b.MAU = toInt64(production)
	testingBilled := t.BillTestingApps // then MAU counts the testing apps too
	if testingBilled {
		b.MAU = b.TotalMAU
	}

	tr, err := c.Terms(t, u.Month)
	switch {
	case errors.Is(err, ErrNoActivePlan):
		b.Flags = append(b.Flags, FlagNoActivePlan)
	case errors.Is(err, ErrUnknownPlan):
		b.Plan, b.PlanPurchased, b.PlanValidUntil, b.PlanValidThrough = tr.Purchase.Plan, tr.Purchased, tr.ValidUntil, tr.ValidThrough
		b.Flags = append(b.Flags, FlagUnknownPlan)
	default:
		p := tr.Plan
		b.Plan, b.PlanPurchased, b.PlanValidUntil, b.PlanValidThrough = p.ID, tr.Purchased, tr.ValidUntil, tr.ValidThrough
		b.Contract, b.IncludedMAU = tr.Contract, tr.IncludedMAU
		if p.HardCap {
			testingBilled, b.MAU = true, b.TotalMAU // a POC plan has testing apps only: its cap counts them
		}
		b.OverageMAU = max(0, b.MAU-b.IncludedMAU)
		if p.PayAsYouGo {
			b.UnitPrice = tr.UnitPrice
			b.Amount = tr.UnitPrice.Mul(decimal.NewFromInt(b.OverageMAU)).Round(2) // half away from zero = half-up here
		}
		if p.HardCap && b.OverageMAU > 0 {
			b.Flags = append(b.Flags, FlagPOCCapExceeded)
		}
		e := &b.Entitlements
		e.ProductionAppsLimit, e.TestingAppsLimit, e.MiniProgramsLimit = p.SuperApps, p.TestingSuperApps, p.MiniProgramsReleased
		if e.ProductionApps > e.ProductionAppsLimit {
			e.Flags = append(e.Flags, FlagSuperAppsExceeded)
		}
		if e.TestingApps > e.TestingAppsLimit {
			e.Flags = append(e.Flags, FlagTestingAppsExceeded)
		}
		if e.MiniPrograms > e.MiniProgramsLimit {
			e.Flags = append(e.Flags, FlagMiniProgramsExceeded)
		}
		slices.Sort(e.Flags)
	}
	if testingBilled {
		b.BillableApps = append(b.BillableApps, testingApps...)
	}
	slices.Sort(b.BillableApps)
	slices.Sort(b.Flags)
	return b
}

// addSat adds MAU, saturating (no tenant has 2^64 devices, but a bill must not wrap).
func addSat(a, b uint64) uint64 {
	if a > math.MaxUint64-b {
		return math.MaxUint64
	}
	return a + b
}

func toInt64(v uint64) int64 { return int64(min(v, math.MaxInt64)) }
