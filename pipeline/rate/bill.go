package rate

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/shopspring/decimal"

	"github.com/maumeter/maumeter/pipeline/chstore"
)

// Bills. Every invoice charges something (Adjust): a month's first invoice its amount, a newer
// version its adjustment, a stale version nothing. A billing run posts those charges, once each:
// the bill of tenant T for month M (`maumeter rate --month M --post`) carries every invoice of T
// for a month up to M that no earlier bill of T posted, that is
//
//   - M's own invoices rated so far (their charges add up to M's amount as it stands), and
//   - the adjustments of earlier months rated since the bill before it (and the invoices of an
//     earlier month that never had a bill of its own),
//
// and records them in billing_runs. "Since the bill before" is not a time: each run records, per
// invoice month, the highest billing_seq it posted, so an invoice rated while a run posts is
// either on that run or on the next one, never on both and never on none. A tenant's bills are
// posted in month order; posting a month again returns the bill already posted.

// Bill statuses.
const (
	BillDraft   = "draft"   // not posted: what posting it now would record
	BillPosted  = "posted"  // recorded by a billing run
	BillSkipped = "skipped" // never posted, and a later month's bill is: its invoices went on later bills
)

// Adjustment statuses.
const (
	StatusPending = "pending" // on no bill yet: it goes on the next one posted
	StatusPosted  = "posted"  // on the bill of month posted_on
	StatusStale   = "stale"   // a stale rollup version: charges nothing (posted_on says where it was recorded)
)

// PostedBy names the billing runs `maumeter rate --post` records.
const PostedBy = "maumeter rate --post"

var (
	// ErrLaterBillPosted is returned when posting a month's bill after a later month's.
	ErrLaterBillPosted = errors.New("a later month's bill is posted")
	// ErrNotRated is returned when posting the bill of a month the tenant has no invoice for.
	ErrNotRated = errors.New("month not rated")
)

// Bill is what the bill of a tenant for a month charges: the month's own invoices and the
// earlier months' adjustments that go on it.
type Bill struct {
	Status   string     `json:"status"` // draft, posted or skipped
	RunSeq   uint32     `json:"run_seq,omitempty"`
	PostedAt *time.Time `json:"posted_at,omitempty"`
	PostedBy string     `json:"posted_by,omitempty"`
	// MonthUSD is what the month's own invoices on the bill charge: the month's amount, unless
	// some of its invoices were rated after the bill was posted.
	MonthUSD string `json:"month_usd"`
	// AdjustmentsUSD is what the earlier months' invoices on the bill charge.
	AdjustmentsUSD string `json:"adjustments_usd"`
	TotalUSD       string `json:"total_usd"`
	// Adjustments are the earlier months' invoices on the bill, by month and billing_seq: their
	// restatements, and the whole invoice of a month that had no bill of its own.
	Adjustments []Adjustment `json:"adjustments"`
}

// ledger says, for the invoices and billing runs of some tenants, which run posted each invoice.
type ledger struct {
	runs     map[string][]*chstore.BillingRun           // by tenant, in run_seq order
	postedOn map[string]*chstore.BillingRun             // by invoice id
	byMonth  map[chstore.TenantMonth][]*chstore.Invoice // in billing_seq order
	months   map[string][]string                        // a tenant's months with invoices
}

func newLedger(invs []*chstore.Invoice, runs []*chstore.BillingRun) *ledger {
	l := &ledger{runs: map[string][]*chstore.BillingRun{}, postedOn: map[string]*chstore.BillingRun{},
		byMonth: map[chstore.TenantMonth][]*chstore.Invoice{}, months: map[string][]string{}}
	for _, inv := range invs {
		tm := chstore.TenantMonth{TenantID: inv.TenantID, Month: inv.Month}
		if l.byMonth[tm] == nil {
			l.months[tm.TenantID] = append(l.months[tm.TenantID], tm.Month)
		}
		l.byMonth[tm] = append(l.byMonth[tm], inv)
	}
	for _, m := range l.byMonth {
		slices.SortFunc(m, func(a, b *chstore.Invoice) int { return cmp.Compare(a.BillingSeq, b.BillingSeq) })
	}
	for _, r := range runs {
		l.runs[r.TenantID] = append(l.runs[r.TenantID], r)
	}
	for tenant, rs := range l.runs {
		slices.SortFunc(rs, func(a, b *chstore.BillingRun) int { return cmp.Compare(a.RunSeq, b.RunSeq) })
		through := map[string]uint32{} // per invoice month: the highest billing_seq posted so far
		for _, r := range rs {
			for month, upTo := range r.PostedThrough {
				for _, inv := range l.byMonth[chstore.TenantMonth{TenantID: tenant, Month: month}] {
					if inv.BillingSeq > through[month] && inv.BillingSeq <= upTo {
						l.postedOn[inv.InvoiceID] = r
					}
				}
				through[month] = max(through[month], upTo)
			}
		}
	}
	return l
}

// bill returns the bill of tenant for month and its lines (the month's own and earlier ones).
func (l *ledger) bill(tenant, month string) (Bill, []*chstore.Invoice) {
	var lines []*chstore.Invoice
	b := Bill{Status: BillDraft}
	var own *chstore.BillingRun
	for _, r := range l.runs[tenant] {
		switch {
		case r.BillMonth == month:
			own = r
		case r.BillMonth > month && b.Status == BillDraft:
			b.Status = BillSkipped
		}
	}
	if own != nil {
		at := own.PostedAt.UTC()
		b = Bill{Status: BillPosted, RunSeq: own.RunSeq, PostedAt: &at, PostedBy: own.PostedBy}
	}
	if b.Status != BillSkipped {
		for _, m := range l.months[tenant] {
			if m > month {
				continue
			}
			for _, inv := range l.byMonth[chstore.TenantMonth{TenantID: tenant, Month: m}] {
				if l.postedOn[inv.InvoiceID] == own { // own == nil: not posted yet
					lines = append(lines, inv)
				}
			}
		}
	}
	slices.SortFunc(lines, func(a, b *chstore.Invoice) int {
		return cmp.Or(cmp.Compare(a.Month, b.Month), cmp.Compare(a.BillingSeq, b.BillingSeq))
	})
	own0, earlier := decimal.Zero, decimal.Zero
	b.Adjustments = []Adjustment{}
	for _, inv := range lines {
		if inv.Month == month {
			own0 = own0.Add(inv.ChargeUSD)
			continue
		}
		earlier = earlier.Add(inv.ChargeUSD)
		b.Adjustments = append(b.Adjustments, l.adjustment(inv))
	}
	b.MonthUSD, b.AdjustmentsUSD, b.TotalUSD = own0.StringFixed(2), earlier.StringFixed(2), own0.Add(earlier).StringFixed(2)
	return b, lines
}

// adjustment describes one invoice's charge with its status.
func (l *ledger) adjustment(inv *chstore.Invoice) Adjustment {
	a := Adjustment{Month: inv.Month, InvoiceID: inv.InvoiceID, RollupVersion: inv.RollupVersion, BillingSeq: inv.BillingSeq,
		PreviousInvoiceID: inv.PreviousInvoiceID, PreviousRollupVersion: inv.PreviousRollupVersion,
		BilledBeforeUSD: inv.BilledBeforeUSD.StringFixed(2), AmountUSD: inv.ChargeUSD.StringFixed(2),
		Cents: inv.ChargeUSD.Shift(2).IntPart(), SupersededByVersion: inv.SupersededByVersion, Status: StatusPending}
	if r := l.postedOn[inv.InvoiceID]; r != nil {
		a.Status, a.PostedOn = StatusPosted, r.BillMonth
	}
	if inv.SupersededByVersion > 0 {
		a.Status = StatusStale
	}
	return a
}

// PostBill records the bill of a tenant for a month (YYYY-MM) in billing_runs: every invoice of
// the tenant for a month up to it that no earlier bill posted. It returns the run and whether it
// was recorded now: a month whose bill is posted returns that bill and records nothing, so a
// billing run can be repeated. It fails with ErrNotRated when the tenant has no invoice for the
// month (its first invoice would then go on the next bill) and with ErrLaterBillPosted after a
// later month's bill. Concurrent postings of one tenant are safe: the run takes the tenant's next
// run_seq by a conditional insert and a loser re-reads.
func PostBill(ctx context.Context, store *chstore.Store, tenantID, month string, now time.Time) (*chstore.BillingRun, bool, error) {
	for attempt := 1; ; attempt++ {
		runs, err := store.BillingRuns(ctx, tenantID)
		if err != nil {
			return nil, false, err
		}
		var seq uint32
		for _, r := range runs {
			if r.BillMonth == month {
				return r, false, nil
			}
			if r.BillMonth > month {
				return nil, false, fmt.Errorf("post the bill of %s %s: %w (%s)", tenantID, month, ErrLaterBillPosted, r.BillMonth)
			}
			seq = max(seq, r.RunSeq)
		}
		invs, err := store.Invoices(ctx, chstore.InvoiceFilter{TenantID: tenantID, AllVersions: true})
		if err != nil {
			return nil, false, err
		}
		if !slices.ContainsFunc(invs, func(inv *chstore.Invoice) bool { return inv.Month == month }) {
			return nil, false, fmt.Errorf("post the bill of %s %s: %w", tenantID, month, ErrNotRated)
		}
		_, lines := newLedger(invs, runs).bill(tenantID, month)
		run := &chstore.BillingRun{TenantID: tenantID, RunSeq: seq + 1, BillMonth: month, PostedThrough: map[string]uint32{},
			InvoiceIDs: []string{}, ChargedUSD: decimal.Zero, PostedAt: now, PostedBy: PostedBy}
		for _, inv := range lines {
			run.PostedThrough[inv.Month] = max(run.PostedThrough[inv.Month], inv.BillingSeq)
			run.InvoiceIDs = append(run.InvoiceIDs, inv.InvoiceID)
			run.ChargedUSD = run.ChargedUSD.Add(inv.ChargeUSD)
		}
		won, err := store.ClaimBillingRun(ctx, run)
		if err != nil {
			return nil, false, err
		}
		if won {
			return run, true, nil
		}
		if attempt == maxClaims {
			return nil, false, fmt.Errorf("post the bill of %s %s: lost the posting order %d times: %w", tenantID, month, attempt, ErrContention)
		}
	}
}
