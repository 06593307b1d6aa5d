// Package rate is the rater: it turns monthly rollups (topic mau.rollups.v1) into invoices in
// ClickHouse, priced by pkg/plan from the tenant and plan catalogues, each carrying the evidence
// that reproduces it (DESIGN.md §5).
//
// An invoice belongs to one rollup version of a tenant-month and its id derives from (tenant,
// month, version): rating a rollup twice writes nothing new. The invoices of a month form its
// billing order, the order in which they were rated, and each charges what the month's earlier
// invoices have not billed (Adjust): in any order of rating, replay and `rate --stored`, a
// month's charges add up to its newest version's amount. A billing run posts each charge on one
// bill (bill.go).
package rate

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/shopspring/decimal"

	"github.com/maumeter/maumeter/pipeline/chstore"
	"github.com/maumeter/maumeter/pkg/calendar"
	"github.com/maumeter/maumeter/pkg/plan"
	"github.com/maumeter/maumeter/pkg/tenant"
)

// InvoiceID derives the id of the invoice of one rollup version of a tenant-month.
func InvoiceID(tenantID, month string, version uint32) string {
	h := sha256.Sum256(fmt.Appendf(nil, "%s\x00%s\x00%d", tenantID, month, version))
	return "inv_" + hex.EncodeToString(h[:10])
}

// DueBy is when a month's invoice must exist: the end of day 3 of the next month in the tenant's
// billing zone (fees are deducted within the first 3 days of the next month).
func DueBy(m calendar.Month, loc *time.Location) time.Time {
	return m.Next().Start(loc).AddDate(0, 0, 3)
}

// HLLAgrees reports whether a sketch estimate is within 3 standard errors (plus 3 devices, for
// tiny months) of the exact figure.
func HLLAgrees(exact, estimate uint64, relErr float64) bool {
	return math.Abs(float64(estimate)-float64(exact)) <= 3*relErr*float64(exact)+3
}

// Build prices one rollup for tenant t and returns its invoice, placed by Adjust after earlier,
// the invoices of the same tenant-month rated so far (none of the rollup's version).
// database names the ClickHouse database in the reproduction SQL. Build does no I/O.
func Build(t *tenant.Tenant, plans *plan.Catalog, r *chstore.Rollup, earlier []*chstore.Invoice, database string, now time.Time) (*chstore.Invoice, error) {
	m, err := calendar.ParseMonth(r.Month)
	if err != nil {
		return nil, fmt.Errorf("%w: %s %s: %v", ErrInvalidRollup, r.TenantID, r.Month, err)
	}
	if t.ID != r.TenantID {
		return nil, fmt.Errorf("%w: rollup of %s priced for tenant %s", ErrInvalidRollup, r.TenantID, t.ID)
	}
	bill := plans.Price(t, plan.Usage{Month: m, MAUByApp: r.MAUByApp, MiniPrograms: uint64(r.MiniPrograms)})
	inv := &chstore.Invoice{
		InvoiceID: InvoiceID(r.TenantID, r.Month, r.Version), TenantID: r.TenantID, Month: r.Month,
		RollupVersion: r.Version, RollupKind: r.Kind,
		Plan: bill.Plan, PlanPurchased: bill.PlanPurchased, PlanValidUntil: bill.PlanValidUntil, Contract: bill.Contract,
		MAU: uint64(bill.MAU), TestingMAU: uint64(bill.TestingMAU), TotalMAU: uint64(bill.TotalMAU),
		MAUByApp: r.MAUByApp, BillableApps: bill.BillableApps,
		IncludedMAU: uint64(bill.IncludedMAU), OverageMAU: uint64(bill.OverageMAU),
		UnitPriceUSD: bill.UnitPrice.String(), AmountUSD: bill.Amount.Round(2),
		Flags:       bill.Flags, // sorted by Price
		HLLEstimate: r.HLLEstimate, HLLRelativeError: r.HLLRelativeError,
		HLLAgrees: HLLAgrees(r.MAU, r.HLLEstimate, r.HLLRelativeError),
		Watermark: r.Watermark, RatedAt: now, DueBy: DueBy(m, t.Location()),
		PreviousAmountUSD: decimal.Zero, AdjustmentUSD: decimal.Zero, BilledBeforeUSD: decimal.Zero, ChargeUSD: decimal.Zero,
	}
	if inv.TotalMAU != r.MAU {
		return nil, fmt.Errorf("%w: %s %s v%d: MAU %d but its apps sum to %d", ErrInvalidRollup, r.TenantID, r.Month, r.Version, r.MAU, inv.TotalMAU)
	}
	var billed uint64
	for _, a := range inv.BillableApps {
		billed += r.MAUByApp[a]
	}
	if billed != inv.MAU {
		return nil, fmt.Errorf("%w: %s %s v%d: billable MAU %d but the billable apps %v hold %d", ErrInvalidRollup, r.TenantID, r.Month, r.Version, inv.MAU, inv.BillableApps, billed)
	}
	e := bill.Entitlements
	ent, err := json.Marshal(Entitlements{ProductionApps: e.ProductionApps, ProductionAppsLimit: e.ProductionAppsLimit,
		TestingApps: e.TestingApps, TestingAppsLimit: e.TestingAppsLimit, MiniPrograms: e.MiniPrograms,
		MiniProgramsLimit: e.MiniProgramsLimit, Flags: e.Flags})
	if err != nil {
		return nil, err
	}
	inv.Entitlements = string(ent)
	Adjust(inv, earlier)
	inv.MAUSQL = chstore.MAUSQL(database, inv)
	return inv, nil
}

// FlagStaleVersion flags the invoice of a rollup version older than one its month had already
// rated: it is recorded, priced, and charges nothing.
const FlagStaleVersion = "stale_version"

// Adjust places inv, priced and not yet stored, in its month's billing order after billed (the
// invoices of the month rated before it, in any order, none of inv's rollup version) and sets
// what it charges, in cents:
//
//   - billing_seq: one more than the highest in billed (1 for the first);
//   - billed_before: the sum of billed's charges (the first invoice's amount plus every
//     adjustment since);
//   - the first invoice charges its amount (adjustment 0: it is the month's own bill);
//   - a rollup version newer than every version in billed charges its adjustment, amount −
//     billed_before;
//   - an older version (stale: a restatement rated after a newer one, as when `rate --stored`
//     rates a version the consumer skipped) charges 0, is flagged stale_version and linked to
//     the version that superseded it.
//
// previous_* name the invoice of the newest version in billed. So after every invoice the
// month's charges add up to the amount of the newest version rated: any order of rating bills
// the newest version's amount exactly once. Adjust does no I/O.
func Adjust(inv *chstore.Invoice, billed []*chstore.Invoice) {
	var newest *chstore.Invoice
	before := decimal.Zero
	seq := uint32(0)
	for _, b := range billed {
		before = before.Add(b.ChargeUSD)
		seq = max(seq, b.BillingSeq)
		if newest == nil || b.RollupVersion > newest.RollupVersion {
			newest = b
		}
	}
	inv.BillingSeq, inv.BilledBeforeUSD = seq+1, before
	inv.AdjustmentUSD, inv.SupersededByVersion = decimal.Zero, 0
	inv.PreviousInvoiceID, inv.PreviousRollupVersion, inv.PreviousAmountUSD = "", 0, decimal.Zero
	if newest == nil {
		inv.ChargeUSD = inv.AmountUSD
		return
	}
	inv.PreviousInvoiceID, inv.PreviousRollupVersion, inv.PreviousAmountUSD = newest.InvoiceID, newest.RollupVersion, newest.AmountUSD
	if inv.RollupVersion < newest.RollupVersion {
		inv.ChargeUSD, inv.SupersededByVersion = decimal.Zero, newest.RollupVersion
		if !slices.Contains(inv.Flags, FlagStaleVersion) {
			inv.Flags = append(slices.Clone(inv.Flags), FlagStaleVersion)
			slices.Sort(inv.Flags)
		}
		return
	}
	inv.ChargeUSD = inv.AmountUSD.Sub(before)
	inv.AdjustmentUSD = inv.ChargeUSD
}
