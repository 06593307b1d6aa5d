package chstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/shopspring/decimal"
)

// Billing order: the two sequences that make a month's charges independent of rating order and
// of how many raters or billing runs work at once (docs/ARCHITECTURE.md, "Billing order").
//
//   - invoices.billing_seq numbers the invoices of one tenant-month in the order they were
//     rated: 1, 2, 3, … with no gap and no repeat.
//   - billing_runs.run_seq numbers the posted bills of one tenant the same way.
//
// A writer takes the next number with a conditional insert: it reads the rows, inserts its row
// under insert_deduplication_token = (table, key, number) on a table whose
// non_replicated_deduplication_window remembers the tokens of its last 10,000 inserts, then
// reads back the row holding that number. ClickHouse drops a second insert under a token it
// remembers, so exactly one writer's row holds each number: the read-back finds either the
// writer's own random writer_id (it won) or another's (it lost, re-reads and tries again with
// what the winner wrote in view). Inserts are synchronous (async_insert = 0: an asynchronous
// insert is acknowledged before it is visible and is deduplicated by other rules), so a row a
// writer has read is visible to every later read, and a number is taken only after every lower
// one is visible: a reader sees a gapless prefix of the order. Losing is rare (two raters on
// one month at the same instant) and cheap (one more read and insert).
//
// Known limits: the window is a count of inserts into the table, so a loser must insert within
// 10,000 other inserts of the winner (it does within milliseconds; invoices are written once per
// rollup version). Under Replicated*MergeTree the same tokens work with
// replicated_deduplication_window, and reads must use select_sequential_consistency = 1.

// ErrBillingOrder is returned when a billing sequence number is held by more than one row or
// by none after an insert: the deduplication window was outrun or the table was written around
// ClaimInvoice / ClaimBillingRun.
var ErrBillingOrder = errors.New("billing order broken")

// conditional returns ctx with the settings of a conditional insert under token.
func conditional(ctx context.Context, token string) context.Context {
	return clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{
		"insert_deduplication_token": token,
		"insert_deduplicate":         1,
		"async_insert":               0,
	}))
}

// NewWriterID returns a random id for one conditional insert.
func NewWriterID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24)
	return hex.EncodeToString(b[:])
}

// ClaimInvoice inserts inv at its billing sequence number (inv.BillingSeq) unless another
// invoice of the month holds that number already, and reports whether inv's row is the one
// stored. A loser's row is dropped by ClickHouse: the caller re-reads the month's invoices and
// places its invoice again. inv.WriterID is set when empty.
func (s *Store) ClaimInvoice(ctx context.Context, inv *Invoice) (bool, error) {
	if inv.BillingSeq == 0 {
		return false, fmt.Errorf("claim invoice %s: billing_seq is 0", inv.InvoiceID)
	}
	if inv.WriterID == "" {
		inv.WriterID = NewWriterID()
	}
	token := fmt.Sprintf("invoices/%s/%s/%d", inv.TenantID, inv.Month, inv.BillingSeq)
	if err := s.InsertInvoice(conditional(ctx, token), inv); err != nil {
		return false, err
	}
	rows, err := s.conn.Query(ctx, `SELECT writer_id FROM invoices WHERE tenant_id = ? AND month = ? AND billing_seq = ?`,
		inv.TenantID, inv.Month, inv.BillingSeq)
	if err != nil {
		return false, fmt.Errorf("claim invoice %s: read back: %w", inv.InvoiceID, err)
	}
	return readBack(rows, inv.WriterID, fmt.Sprintf("invoice %s %s billing_seq %d", inv.TenantID, inv.Month, inv.BillingSeq))
}

// readBack reads the writer ids of the rows holding one sequence number.
func readBack(rows driver.Rows, writer, what string) (bool, error) {
	defer rows.Close()
	var writers []string
	for rows.Next() {
		var w string
		if err := rows.Scan(&w); err != nil {
			return false, fmt.Errorf("%s: read back: %w", what, err)
		}
		writers = append(writers, w)
	}
	if err := rows.Err(); err != nil {
		return false, fmt.Errorf("%s: read back: %w", what, err)
	}
	if len(writers) != 1 {
		return false, fmt.Errorf("%w: %s is held by %d rows, want 1", ErrBillingOrder, what, len(writers))
	}
	return writers[0] == writer, nil
}

// BillingRun is one posted bill of a tenant (table billing_runs): which invoices a billing run
// charged. Every invoice of a tenant is posted on exactly one bill: the first one posted, for
// its month or a later one, after the invoice was rated. A run records, per invoice month on
// the bill, the highest billing_seq it posted; its lines are the month's invoices above the
// previous runs' highest and up to it.
type BillingRun struct {
	TenantID  string
	RunSeq    uint32 // the tenant's posting order, 1 first
	BillMonth string // YYYY-MM: the month whose bill this is
	// PostedThrough maps each invoice month on the bill to the highest billing_seq it posted.
	PostedThrough map[string]uint32
	InvoiceIDs    []string        // the posted invoices, in (month, billing_seq) order
	ChargedUSD    decimal.Decimal // the sum of their charges
	PostedAt      time.Time
	PostedBy      string // "maumeter rate --post", or "006_migration" for bills before billing runs were recorded
	WriterID      string
}

// ClaimBillingRun inserts run at its sequence number (run.RunSeq) unless another run of the
// tenant holds it, and reports whether run's row is the one stored; see ClaimInvoice.
func (s *Store) ClaimBillingRun(ctx context.Context, run *BillingRun) (bool, error) {
	if run.RunSeq == 0 {
		return false, fmt.Errorf("claim billing run %s %s: run_seq is 0", run.TenantID, run.BillMonth)
	}
	if run.WriterID == "" {
		run.WriterID = NewWriterID()
	}
	what := fmt.Sprintf("billing run %s run_seq %d", run.TenantID, run.RunSeq)
	b, err := s.conn.PrepareBatch(conditional(ctx, fmt.Sprintf("billing_runs/%s/%d", run.TenantID, run.RunSeq)),
		`INSERT INTO billing_runs (tenant_id, run_seq, bill_month, posted_through, invoice_ids, charged_usd, posted_at, posted_by, writer_id)`)
	if err != nil {
		return false, fmt.Errorf("insert %s: %w", what, err)
	}
	defer b.Abort()
	through := run.PostedThrough
	if through == nil {
		through = map[string]uint32{}
	}
	if err := b.Append(run.TenantID, run.RunSeq, run.BillMonth, through, nonNilSlice(run.InvoiceIDs), run.ChargedUSD,
		run.PostedAt.UTC(), run.PostedBy, run.WriterID); err != nil {
		return false, fmt.Errorf("insert %s: %w", what, err)
	}
	if err := b.Send(); err != nil {
		return false, fmt.Errorf("insert %s: %w", what, err)
	}
	rows, err := s.conn.Query(ctx, `SELECT writer_id FROM billing_runs WHERE tenant_id = ? AND run_seq = ?`, run.TenantID, run.RunSeq)
	if err != nil {
		return false, fmt.Errorf("%s: read back: %w", what, err)
	}
	return readBack(rows, run.WriterID, what)
}

// BillingRuns returns the posted bills of a tenant (empty: every tenant), ordered by tenant and
// run_seq.
func (s *Store) BillingRuns(ctx context.Context, tenantID string) ([]*BillingRun, error) {
	rows, err := s.conn.Query(ctx, `SELECT tenant_id, run_seq, bill_month, posted_through, invoice_ids, charged_usd,
		posted_at, posted_by, writer_id FROM billing_runs WHERE (? = '' OR tenant_id = ?) ORDER BY tenant_id, run_seq`, tenantID, tenantID)
	if err != nil {
		return nil, fmt.Errorf("load billing runs: %w", err)
	}
	defer rows.Close()
	var out []*BillingRun
	for rows.Next() {
		r := &BillingRun{}
		if err := rows.Scan(&r.TenantID, &r.RunSeq, &r.BillMonth, &r.PostedThrough, &r.InvoiceIDs, &r.ChargedUSD,
			&r.PostedAt, &r.PostedBy, &r.WriterID); err != nil {
			return nil, fmt.Errorf("load billing runs: scan: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}
