package rate

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/maumeter/maumeter/pipeline/chstore"
)

// Statement is the bill of one tenant-month as the CLI, the API and the billing process read
// it: the current invoice (highest rollup version) with the adjustments of its restatements.
// Money is a decimal string in USD with two decimals.
type Statement struct {
	TenantID       string            `json:"tenant_id"`
	Month          string            `json:"month"`
	InvoiceID      string            `json:"invoice_id"`
	RollupVersion  uint32            `json:"rollup_version"`
	Plan           string            `json:"plan"`
	PlanPurchased  string            `json:"plan_purchased"`
	PlanValidUntil string            `json:"plan_valid_until"`
	Contract       bool              `json:"contract"`
	MAU            uint64            `json:"mau"` // billable
	TestingMAU     uint64            `json:"testing_mau"`
	TotalMAU       uint64            `json:"total_mau"`
	MAUByApp       map[string]uint64 `json:"mau_by_app"`
	IncludedMAU    uint64            `json:"included_mau"`
	OverageMAU     uint64            `json:"overage_mau"`
	UnitPriceUSD   string            `json:"unit_price_usd"`
	AmountUSD      string            `json:"amount_usd"`
	Flags          []string          `json:"flags"`
	// Adjustments are the restatements of the month after its first invoice, oldest first; each
	// is billed (or credited) on the next bill.
	Adjustments []Adjustment `json:"adjustments"`
	// Entitlements: apps and mini programs seen against the plan's limits (information, not a
	// charge).
	Entitlements Entitlements `json:"entitlements"`
	Evidence     Evidence     `json:"evidence"`
}

// Entitlements is the entitlement report of a tenant-month.
type Entitlements struct {
	ProductionApps      int      `json:"production_apps"`
	ProductionAppsLimit int      `json:"production_apps_limit"`
	TestingApps         int      `json:"testing_apps"`
	TestingAppsLimit    int      `json:"testing_apps_limit"`
	MiniPrograms        int      `json:"mini_programs"`
	MiniProgramsLimit   int      `json:"mini_programs_limit"` // mini programs that can be released
	Flags               []string `json:"flags"`
}

// Adjustment is the difference a restated rollup made to a month's bill.
type Adjustment struct {
	InvoiceID             string `json:"invoice_id"`
	RollupVersion         uint32 `json:"rollup_version"`
	PreviousInvoiceID     string `json:"previous_invoice_id"`
	PreviousRollupVersion uint32 `json:"previous_rollup_version"`
	AmountUSD             string `json:"amount_usd"` // re-rated total minus what was invoiced
	Cents                 int64  `json:"cents"`
}

// Evidence is what reproduces an invoice.
type Evidence struct {
	BillableApps     []string `json:"billable_apps"`
	HLLEstimate      uint64   `json:"hll_estimate"`
	HLLRelativeError float64  `json:"hll_relative_error"`
	HLLAgrees        bool     `json:"hll_agrees"`
	// Watermark: per partition of mau.events.v1, the offset below which the rollup version
	// counted devices (what MAUSQL filters on).
	Watermark chstore.Watermark `json:"watermark"`
	MAUSQL    string            `json:"mau_sql"`
	RatedAt   time.Time         `json:"rated_at"`
	DueBy     time.Time         `json:"due_by"`
}

// Statements groups invoices (ordered by tenant, month and rollup version, every version) into
// one statement per tenant-month.
func Statements(invs []*chstore.Invoice) []Statement {
	var out []Statement
	for i := 0; i < len(invs); {
		j := i
		var adj []Adjustment
		for ; j < len(invs) && invs[j].TenantID == invs[i].TenantID && invs[j].Month == invs[i].Month; j++ {
			if inv := invs[j]; inv.PreviousInvoiceID != "" {
				adj = append(adj, Adjustment{InvoiceID: inv.InvoiceID, RollupVersion: inv.RollupVersion,
					PreviousInvoiceID: inv.PreviousInvoiceID, PreviousRollupVersion: inv.PreviousRollupVersion,
					AmountUSD: inv.AdjustmentUSD.StringFixed(2), Cents: inv.AdjustmentUSD.Shift(2).IntPart()})
			}
		}
		out = append(out, statement(invs[j-1], adj))
		i = j
	}
	return out
}

func statement(inv *chstore.Invoice, adj []Adjustment) Statement {
	if adj == nil {
		adj = []Adjustment{}
	}
	ent := Entitlements{Flags: []string{}}
	_ = json.Unmarshal([]byte(inv.Entitlements), &ent) // written by Build; empty on a damaged row
	flags := inv.Flags
	if flags == nil {
		flags = []string{}
	}
	return Statement{
		TenantID: inv.TenantID, Month: inv.Month, InvoiceID: inv.InvoiceID, RollupVersion: inv.RollupVersion,
		Plan: inv.Plan, PlanPurchased: inv.PlanPurchased, PlanValidUntil: inv.PlanValidUntil, Contract: inv.Contract,
		MAU: inv.MAU, TestingMAU: inv.TestingMAU, TotalMAU: inv.TotalMAU, MAUByApp: inv.MAUByApp,
		IncludedMAU: inv.IncludedMAU, OverageMAU: inv.OverageMAU, UnitPriceUSD: inv.UnitPriceUSD,
		AmountUSD: inv.AmountUSD.StringFixed(2), Flags: flags, Adjustments: adj, Entitlements: ent,
		Evidence: Evidence{BillableApps: inv.BillableApps, HLLEstimate: inv.HLLEstimate,
			HLLRelativeError: inv.HLLRelativeError, HLLAgrees: inv.HLLAgrees, Watermark: inv.Watermark,
			MAUSQL: inv.MAUSQL, RatedAt: inv.RatedAt.UTC(), DueBy: inv.DueBy.UTC()},
	}
}

// Reader reads statements from ClickHouse.
type Reader struct{ Store *chstore.Store }

// Statements returns the statements of a tenant (empty: all) for a month (empty: all).
func (r Reader) Statements(ctx context.Context, tenantID, month string) ([]Statement, error) {
	invs, err := r.Store.Invoices(ctx, chstore.InvoiceFilter{TenantID: tenantID, Month: month, AllVersions: true})
	if err != nil {
		return nil, err
	}
	return Statements(invs), nil
}

// Formats are the output formats of Write.
var Formats = []string{"table", "json", "csv"}

// Write prints statements as a table, JSON (one object per line) or CSV (a header line, then one
// row per statement; lists are joined with ';').
func Write(w io.Writer, format string, sts []Statement) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		for _, s := range sts {
			if err := enc.Encode(s); err != nil {
				return err
			}
		}
		return nil
	case "csv":
		cw := csv.NewWriter(w)
		cw.Write([]string{"tenant_id", "month", "plan", "mau", "testing_mau", "included_mau", "overage_mau",
			"unit_price_usd", "amount_usd", "flags", "adjustments_usd", "rollup_version", "invoice_id",
			"hll_estimate", "hll_agrees", "plan_valid_until", "production_apps", "testing_apps", "mini_programs",
			"entitlement_flags"})
		for _, s := range sts {
			cw.Write([]string{s.TenantID, s.Month, s.Plan, u64(s.MAU), u64(s.TestingMAU), u64(s.IncludedMAU),
				u64(s.OverageMAU), s.UnitPriceUSD, s.AmountUSD, strings.Join(s.Flags, ";"), adjustments(s.Adjustments),
				strconv.FormatUint(uint64(s.RollupVersion), 10), s.InvoiceID, u64(s.Evidence.HLLEstimate),
				strconv.FormatBool(s.Evidence.HLLAgrees), s.PlanValidUntil, strconv.Itoa(s.Entitlements.ProductionApps),
				strconv.Itoa(s.Entitlements.TestingApps), strconv.Itoa(s.Entitlements.MiniPrograms), strings.Join(s.Entitlements.Flags, ";")})
		}
		cw.Flush()
		return cw.Error()
	case "table":
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "tenant\tmonth\tplan\tMAU\ttesting\tincluded\toverage\tunit USD\tamount USD\tadjustments\tversion\tinvoice\tflags\tentitlements (info)\t")
		for _, s := range sts {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t\n", s.TenantID, s.Month, orDash(s.Plan),
				s.MAU, s.TestingMAU, s.IncludedMAU, s.OverageMAU, s.UnitPriceUSD, s.AmountUSD,
				orDash(adjustments(s.Adjustments)), s.RollupVersion, s.InvoiceID, orDash(strings.Join(s.Flags, ",")),
				entitlementSummary(s.Entitlements))
		}
		return tw.Flush()
	}
	return fmt.Errorf("format %q: want one of %s", format, strings.Join(Formats, ", "))
}

func u64(v uint64) string { return strconv.FormatUint(v, 10) }

func adjustments(adj []Adjustment) string {
	parts := make([]string, len(adj))
	for i, a := range adj {
		parts[i] = fmt.Sprintf("v%d:%s", a.RollupVersion, a.AmountUSD)
	}
	return strings.Join(parts, ";")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// entitlementSummary is "apps 1/1, testing 1/2, mini programs 60/50 (mini_programs_exceeded)".
func entitlementSummary(e Entitlements) string {
	s := fmt.Sprintf("apps %d/%d, testing %d/%d, mini programs %d/%d", e.ProductionApps, e.ProductionAppsLimit,
		e.TestingApps, e.TestingAppsLimit, e.MiniPrograms, e.MiniProgramsLimit)
	if len(e.Flags) > 0 {
		s += " (" + strings.Join(e.Flags, ",") + ")"
	}
	return s
}
