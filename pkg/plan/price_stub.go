package plan

// TEMPORARY stand-in for the catalogue pricing being built on branch plan; replaced at merge.

import (
	"github.com/shopspring/decimal"

	"github.com/maumeter/maumeter/pkg/calendar"
	"github.com/maumeter/maumeter/pkg/tenant"
)

type Usage struct {
	Month        calendar.Month
	MAUByApp     map[string]uint64
	MiniPrograms uint64
}

type Entitlements struct {
	ProductionApps, ProductionAppsLimit int
	TestingApps, TestingAppsLimit       int
	MiniPrograms, MiniProgramsLimit     int
	Flags                               []string
}

type Bill struct {
	TenantID, Month string
	Plan            string
	PlanPurchased   string
	PlanValidUntil  string
	Contract        bool
	MAU             int64
	TestingMAU      int64
	TotalMAU        int64
	IncludedMAU     int64
	OverageMAU      int64
	UnitPrice       decimal.Decimal
	Amount          decimal.Decimal
	Flags           []string
	Entitlements    Entitlements
}

type Catalog struct{}

func DefaultCatalog() *Catalog { return &Catalog{} }

func (c *Catalog) Price(t *tenant.Tenant, u Usage) Bill {
	var billable, testing, total int64
	for app, n := range u.MAUByApp {
		_, isTesting := t.App(app)
		total += int64(n)
		if isTesting {
			testing += int64(n)
		}
		if !isTesting || t.BillTestingApps {
			billable += int64(n)
		}
	}
	r := Rate(Builtin[t.Plan], t.Contract, billable)
	return Bill{TenantID: t.ID, Month: u.Month.String(), Plan: t.Plan, PlanPurchased: t.Purchased,
		PlanValidUntil: t.PurchasedOn().AddDate(1, 0, 0).Format("2006-01-02"), Contract: t.Contract != nil,
		MAU: billable, TestingMAU: testing, TotalMAU: total, IncludedMAU: r.IncludedMAU, OverageMAU: r.OverageMAU,
		UnitPrice: r.UnitPrice, Amount: r.Amount, Flags: r.Flags}
}
