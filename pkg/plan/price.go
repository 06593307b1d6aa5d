package plan

import (
	"errors"
	"math"
	"slices"

	"github.com/shopspring/decimal"

	"github.com/maumeter/maumeter/pkg/calendar"
	"github.com/maumeter/maumeter/pkg/tenant"
)

// Flags on a Bill.
const (
	// FlagNoActivePlan: no purchase is in force on any day of the month; nothing is charged.
	FlagNoActivePlan = "no_active_plan"
	// FlagDaysWithoutPlan: some day of the month has no purchase in force (a plan started or
	// ended within it); the purchases in force on the other days price the whole month.
	FlagDaysWithoutPlan = "days_without_plan"
	// FlagSeveralPurchases: more than one purchase is in force in the month (a renewal, an
	// upgrade, a POC beside a paid plan); Bill.InForce lists them with what each alone charges.
	FlagSeveralPurchases = "several_purchases_in_force"
	// FlagPOCCapExceeded: the MAU of a hard-capped (POC) plan went above its cap; never charged.
	FlagPOCCapExceeded = "poc_cap_exceeded"
	// FlagUnlistedApp: the usage has MAU of an app the catalogue does not list (any more); it is
	// billed as a production app, and named in Bill.UnlistedApps.
	FlagUnlistedApp = "unlisted_app"
	// FlagUnknownPlan: a purchase in force in the month names a plan the catalogue lacks
	// (CheckTenants refuses such a tenant catalogue): what it would charge is unknown, so
	// nothing is charged.
	FlagUnknownPlan = "unknown_plan"
)

// Flags on Entitlements.
const (
	FlagSuperAppsExceeded    = "super_apps_exceeded"
	FlagTestingAppsExceeded  = "testing_apps_exceeded"
	FlagMiniProgramsExceeded = "mini_programs_exceeded"
)

// Errors of Catalog.TermsOn and TermsIn.
var (
	ErrNoActivePlan = errors.New("no plan in force")
	ErrUnknownPlan  = errors.New("a plan in force is not in the plan catalogue")
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
	// Plan is the plan of the purchase that priced the month (select.go, docs/BILLING.md); ""
	// when no purchase is in force in the month. With unknown_plan: the first purchase of a
	// plan the catalogue lacks.
	Plan           string
	PlanPurchased  string // YYYY-MM-DD of that purchase, "" when none
	PlanValidUntil string // YYYY-MM-DD (its anniversary), "" when none
	// PlanValidThrough is the last day the purchase is in force: PlanValidUntil, or the day
	// before when the catalogue's validity excludes the anniversary. "" when none.
	PlanValidThrough string
	Contract         bool // a contract override applied
	// MAU is the billable MAU, measured against IncludedMAU: production apps (and unlisted
	// ones), plus testing apps when the tenant has bill_testing_apps. On a hard-capped (POC)
	// plan the cap covers all apps, so MAU is TotalMAU.
	MAU         int64
	TestingMAU  int64 // MAU of testing apps (reported)
	TotalMAU    int64 // all apps
	IncludedMAU int64
	OverageMAU  int64           // max(0, MAU − IncludedMAU); charged only with pay-as-you-go
	UnitPrice   decimal.Decimal // USD per MAU; zero when nothing is charged per MAU
	Amount      decimal.Decimal // USD, rounded half-up to cents once, at the end
	// Flags, sorted: days_without_plan, no_active_plan, poc_cap_exceeded,
	// several_purchases_in_force, unlisted_app, unknown_plan.
	Flags        []string
	UnlistedApps []string // sorted: apps with MAU that the catalogue does not list
	BillableApps []string // sorted: the apps with MAU whose devices make up MAU
	Entitlements Entitlements
	// InForce lists every purchase in force on at least one day of the month, by purchase day,
	// with what each alone charges for the month's usage; the one marked Priced priced it.
	// Empty with no_active_plan; with unknown_plan none is priced.
	InForce []Candidate
}

// Entitlements compare what the month's events show with the plan's limits: information, not
// a charge. Without a plan in force the limits are 0 and nothing is flagged.
type Entitlements struct {
	ProductionApps, ProductionAppsLimit int // production (and unlisted) apps with MAU
	TestingApps, TestingAppsLimit       int // testing apps with MAU
	MiniPrograms, MiniProgramsLimit     int // limit: mini programs that can be released
	Flags                               []string
}

// Price prices month u.Month of t on one of the purchases in force on at least one of its days
// (select.go): each that may price the month prices its whole usage alone,
//
//	amount = max(0, billable MAU − included MAU) × unit price, rounded half-up to cents once
//
// with the contract's overrides, and the lowest amount wins; a POC purchase may price the
// month only when no pay-as-you-go purchase is in force in it. Bill.InForce lists them all. A
// hard-capped (POC) plan never charges; its cap covers the MAU of all apps and is flagged
// poc_cap_exceeded when exceeded. A month without a purchase in force on any of its days is
// flagged no_active_plan and not charged; its MAU is still reported. Testing apps are
// billable only when t says bill_testing_apps; apps t does not list are billable and flagged
// unlisted_app. t must be a tenant of a catalogue checked against c (ParseTenants,
// CheckTenants); otherwise a purchase of a plan c lacks is flagged unknown_plan, not charged.
func (c *Catalog) Price(t *tenant.Tenant, u Usage) Bill {
	b := Bill{TenantID: t.ID, Month: u.Month.String(), UnitPrice: decimal.Zero, Amount: decimal.Zero,
		Flags: []string{}, UnlistedApps: []string{}, BillableApps: []string{}, Entitlements: Entitlements{Flags: []string{}}, InForce: []Candidate{}}
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

	terms, err := c.TermsIn(t, u.Month)
	switch {
	case errors.Is(err, ErrNoActivePlan):
		b.Flags = append(b.Flags, FlagNoActivePlan)
	case errors.Is(err, ErrUnknownPlan):
		for _, tr := range terms {
			b.InForce = append(b.InForce, candidate(tr, u.Month))
			if tr.Plan == nil && b.Plan == "" {
				b.Plan, b.PlanPurchased, b.PlanValidUntil, b.PlanValidThrough = tr.Purchase.Plan, tr.Purchased, tr.ValidUntil, tr.ValidThrough
			}
		}
		b.Flags = append(b.Flags, FlagUnknownPlan)
	default:
		quotes := make([]quote, len(terms))
		for i, tr := range terms {
			quotes[i] = quoteOf(tr, b.MAU, b.TotalMAU)
			cand := candidate(tr, u.Month)
			cand.Amount = quotes[i].amount
			b.InForce = append(b.InForce, cand)
		}
		i := choose(terms, b.InForce)
		tr, q, p := terms[i], quotes[i], terms[i].Plan
		b.Plan, b.PlanPurchased, b.PlanValidUntil, b.PlanValidThrough = p.ID, tr.Purchased, tr.ValidUntil, tr.ValidThrough
		b.Contract, b.IncludedMAU = tr.Contract, tr.IncludedMAU
		if p.HardCap {
			testingBilled = true // a POC plan has testing apps only: its cap counts them
		}
		b.MAU, b.OverageMAU, b.UnitPrice, b.Amount = q.mau, q.overage, q.unitPrice, q.amount
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
	if len(terms) > 1 {
		b.Flags = append(b.Flags, FlagSeveralPurchases)
	}
	if len(terms) > 0 && gapIn(terms, firstDay(u.Month), lastDay(u.Month)) {
		b.Flags = append(b.Flags, FlagDaysWithoutPlan)
	}
	if testingBilled {
		b.BillableApps = append(b.BillableApps, testingApps...)
	}
	slices.Sort(b.BillableApps)
	slices.Sort(b.Flags)
	return b
}

// quote is what one purchase alone makes of a month's usage.
type quote struct {
	mau, overage int64           // billable MAU (on a POC plan every app's), above included
	unitPrice    decimal.Decimal // zero without pay-as-you-go
	amount       decimal.Decimal // cents
}

// quoteOf prices a month's usage under tr alone (a plan of the catalogue): billable is the MAU
// of the billable apps, total that of every app (a POC cap counts them all).
func quoteOf(tr Terms, billable, total int64) quote {
	q := quote{mau: billable, unitPrice: decimal.Zero, amount: decimal.Zero}
	if tr.Plan.HardCap {
		q.mau = total
	}
	q.overage = max(0, q.mau-tr.IncludedMAU)
	if tr.Plan.PayAsYouGo {
		q.unitPrice = tr.UnitPrice
		q.amount = tr.UnitPrice.Mul(decimal.NewFromInt(q.overage)).Round(2) // half away from zero = half-up here
	}
	return q
}

// candidate is tr as a Bill lists it, without its amount.
func candidate(tr Terms, m calendar.Month) Candidate {
	return Candidate{Plan: tr.Purchase.Plan, Purchased: tr.Purchased, ValidUntil: tr.ValidUntil, ValidThrough: tr.ValidThrough,
		From: laterOf(tr.from, firstDay(m)).String(), Through: earlierOf(tr.through, lastDay(m)).String(),
		Contract: tr.Contract, IncludedMAU: tr.IncludedMAU, UnitPrice: tr.UnitPrice, Amount: decimal.Zero}
}

// addSat adds MAU, saturating (no tenant has 2^64 devices, but a bill must not wrap).
func addSat(a, b uint64) uint64 {
	if a > math.MaxUint64-b {
		return math.MaxUint64
	}
	return a + b
}

func toInt64(v uint64) int64 { return int64(min(v, math.MaxInt64)) }
