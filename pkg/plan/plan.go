// Package plan holds the platform's plans (DESIGN.md §1, from the billing overview) and prices a
// month's MAU with exact decimals. It does no I/O.
package plan

import (
	"github.com/shopspring/decimal"

	"github.com/maumeter/maumeter/pkg/tenant"
)

// Flags set on a bill.
const (
	FlagPOCCapExceeded = "poc_cap_exceeded"
)

// Plan is one catalogue plan.
type Plan struct {
	Name        string
	IncludedMAU int64
	UnitPrice   decimal.Decimal // USD per MAU above IncludedMAU; zero for POC plans
	POC         bool            // no pay-as-you-go: MAU above the cap is flagged, never charged
}

// Builtin are the plans of the billing overview.
var Builtin = map[string]Plan{
	"pro":            {Name: "pro", IncludedMAU: 200_000, UnitPrice: decimal.RequireFromString("0.015")},
	"enterprise":     {Name: "enterprise", IncludedMAU: 1_000_000, UnitPrice: decimal.RequireFromString("0.01")},
	"poc_pro":        {Name: "poc_pro", IncludedMAU: 200, POC: true},
	"poc_enterprise": {Name: "poc_enterprise", IncludedMAU: 500, POC: true},
}

// Quote is the price of one tenant-month.
type Quote struct {
	Plan        string
	MAU         int64
	IncludedMAU int64
	OverageMAU  int64
	UnitPrice   decimal.Decimal
	Amount      decimal.Decimal // USD, rounded half-up to cents once
	Flags       []string
}

// Rate prices mau on p with the tenant's contract overrides (nil for none):
// max(0, mau − included) × unit price, rounded half-up to cents.
func Rate(p Plan, c *tenant.Contract, mau int64) Quote {
	b := Quote{Plan: p.Name, MAU: mau, IncludedMAU: p.IncludedMAU, UnitPrice: p.UnitPrice, Amount: decimal.Zero}
	if c != nil && c.IncludedMAU != nil {
		b.IncludedMAU = *c.IncludedMAU
	}
	if c != nil && c.UnitPriceUSD != nil {
		b.UnitPrice = decimal.RequireFromString(*c.UnitPriceUSD) // validated by the catalogue
	}
	b.OverageMAU = max(0, mau-b.IncludedMAU)
	if p.POC {
		if b.OverageMAU > 0 {
			b.Flags = append(b.Flags, FlagPOCCapExceeded)
		}
		b.UnitPrice = decimal.Zero
		return b
	}
	b.Amount = b.UnitPrice.Mul(decimal.NewFromInt(b.OverageMAU)).Round(2)
	return b
}
