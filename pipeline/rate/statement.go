package rate

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/maumeter/maumeter/pipeline/chstore"
)

// Statement is one tenant-month as the CLI, the API and the billing process read it: the
// current invoice (highest rollup version), the month's later invoices in billing order with
// what each charges and where it is billed, and the month's bill: its own charges and the
// earlier months' adjustments that go on it (bill.go). Money is a decimal string in USD with
// two decimals.
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
	// Adjustments are the month's invoices after its first in billing order: each charges (or
	// credits) the difference between its amount and what the month had billed before it, on the
	// first bill posted after it was rated; a stale version charges nothing.
	Adjustments []Adjustment `json:"adjustments"`
	// Bill is the bill of this month: its own charges and the earlier months' adjustments on it.
	Bill Bill `json:"bill"`
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

// Adjustment is what one invoice after a month's first charges, or, on a bill, what an earlier
// month's invoice charges.
type Adjustment struct {
	Month         string `json:"month"` // the invoice's month
	InvoiceID     string `json:"invoice_id"`
	RollupVersion uint32 `json:"rollup_version"`
	BillingSeq    uint32 `json:"billing_seq"` // its place in the month's billing order
	// PreviousInvoiceID is the invoice of the newest rollup version rated before it.
	PreviousInvoiceID     string `json:"previous_invoice_id"`
	PreviousRollupVersion uint32 `json:"previous_rollup_version"`
	BilledBeforeUSD       string `json:"billed_before_usd"` // what the month's earlier invoices charged
	AmountUSD             string `json:"amount_usd"`        // what it charges: its amount minus billed_before, 0 when stale
	Cents                 int64  `json:"cents"`
	Status                string `json:"status"`              // pending, posted or stale
	PostedOn              string `json:"posted_on,omitempty"` // the month of the bill it is posted on
	SupersededByVersion   uint32 `json:"superseded_by_version,omitempty"`
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

// Statements returns one statement per tenant-month of invs, in their order (tenant, month,
// rollup version, every version), with the bills that runs (the tenants' billing runs) posted.
// Draft bills gather what invs holds of the tenant's earlier months: pass every invoice of the
// tenants, not of one month.
func Statements(invs []*chstore.Invoice, runs []*chstore.BillingRun) []Statement {
	l := newLedger(invs, runs)
	var out []Statement
	for i := 0; i < len(invs); {
		j := i
		var cur *chstore.Invoice
		for ; j < len(invs) && invs[j].TenantID == invs[i].TenantID && invs[j].Month == invs[i].Month; j++ {
			if cur == nil || invs[j].RollupVersion > cur.RollupVersion {
				cur = invs[j]
			}
		}
		adj := []Adjustment{}
		for _, inv := range l.byMonth[chstore.TenantMonth{TenantID: cur.TenantID, Month: cur.Month}] {
			if inv.BillingSeq > 1 {
				adj = append(adj, l.adjustment(inv))
			}
		}
		st := statement(cur, adj)
		st.Bill, _ = l.bill(cur.TenantID, cur.Month)
		out = append(out, st)
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
	// Every month of the tenants: a month's draft bill gathers the earlier months' adjustments.
	invs, err := r.Store.Invoices(ctx, chstore.InvoiceFilter{TenantID: tenantID, AllVersions: true})
	if err != nil {
		return nil, err
	}
	runs, err := r.Store.BillingRuns(ctx, tenantID)
	if err != nil {
		return nil, err
	}
	sts := Statements(invs, runs)
	if month == "" {
		return sts, nil
	}
	return slices.DeleteFunc(sts, func(s Statement) bool { return s.Month != month }), nil
}

// Formats are the output formats of Write.
var Formats = []string{"table", "json", "csv"}

// Write prints statements as a table, JSON (one object per line) or CSV (a header line, then one
// row per statement; lists are joined with ';'). The table is followed by the adjustments
// section: every adjustment of the months shown and every earlier month's adjustment on their
// bills, with its status.
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
			"entitlement_flags", "bill_status", "bill_month_usd", "bill_adjustments_usd", "bill_total_usd", "bill_adjustments"})
		for _, s := range sts {
			cw.Write([]string{s.TenantID, s.Month, s.Plan, u64(s.MAU), u64(s.TestingMAU), u64(s.IncludedMAU),
				u64(s.OverageMAU), s.UnitPriceUSD, s.AmountUSD, strings.Join(s.Flags, ";"), adjustments(s.Adjustments, false),
				strconv.FormatUint(uint64(s.RollupVersion), 10), s.InvoiceID, u64(s.Evidence.HLLEstimate),
				strconv.FormatBool(s.Evidence.HLLAgrees), s.PlanValidUntil, strconv.Itoa(s.Entitlements.ProductionApps),
				strconv.Itoa(s.Entitlements.TestingApps), strconv.Itoa(s.Entitlements.MiniPrograms), strings.Join(s.Entitlements.Flags, ";"),
				s.Bill.Status, s.Bill.MonthUSD, s.Bill.AdjustmentsUSD, s.Bill.TotalUSD, adjustments(s.Bill.Adjustments, true)})
		}
		cw.Flush()
		return cw.Error()
	case "table":
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "tenant\tmonth\tplan\tMAU\ttesting\tincluded\toverage\tunit USD\tamount USD\tadjustments\tversion\tinvoice\tflags\tbill\tbill USD\tentitlements (info)\t")
		var rows []string
		for _, s := range sts {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t\n", s.TenantID, s.Month, orDash(s.Plan),
				s.MAU, s.TestingMAU, s.IncludedMAU, s.OverageMAU, s.UnitPriceUSD, s.AmountUSD,
				orDash(adjustments(s.Adjustments, false)), s.RollupVersion, s.InvoiceID, orDash(strings.Join(s.Flags, ",")),
				s.Bill.Status, s.Bill.TotalUSD, entitlementSummary(s.Entitlements))
			for _, a := range append(slices.Clone(s.Adjustments), s.Bill.Adjustments...) {
				rows = append(rows, fmt.Sprintf("%s\t%s\t%s\tv%d\t%d\t%s\t%s\t%s\t%s\t%s\t\n", s.TenantID, s.Month, a.Month,
					a.RollupVersion, a.BillingSeq, a.BilledBeforeUSD, a.AmountUSD, a.Status, orDash(a.PostedOn), a.InvoiceID))
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if len(rows) == 0 {
			return nil
		}
		fmt.Fprintln(w, "\nadjustments: the month's own, and the earlier months' on its bill")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "tenant\tmonth\tof month\tversion\tbilling seq\tbilled before USD\tcharge USD\tstatus\tposted on\tinvoice\t")
		for _, r := range rows {
			fmt.Fprint(tw, r)
		}
		return tw.Flush()
	}
	return fmt.Errorf("format %q: want one of %s", format, strings.Join(Formats, ", "))
}

func u64(v uint64) string { return strconv.FormatUint(v, 10) }

// adjustments is "v2:0.04:posted;v3:0.00:stale", each month-prefixed ("2026-09/v2:…") with month.
func adjustments(adj []Adjustment, month bool) string {
	parts := make([]string, len(adj))
	for i, a := range adj {
		parts[i] = fmt.Sprintf("v%d:%s:%s", a.RollupVersion, a.AmountUSD, a.Status)
		if month {
			parts[i] = a.Month + "/" + parts[i]
		}
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
