package chstore

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"reflect"
	"time"

	"github.com/shopspring/decimal"
)

// Invoice is one rated rollup version of a tenant-month (table invoices, schemas/clickhouse/004 and 006).
type Invoice struct {
	InvoiceID             string            `json:"invoice_id"`
	TenantID              string            `json:"tenant_id"`
	Month                 string            `json:"month"`
	RollupVersion         uint32            `json:"rollup_version"`
	RollupKind            string            `json:"rollup_kind"`
	Plan                  string            `json:"plan"`
	PlanPurchased         string            `json:"plan_purchased"`
	PlanValidUntil        string            `json:"plan_valid_until"`
	Contract              bool              `json:"contract"`
	MAU                   uint64            `json:"mau"`
	TestingMAU            uint64            `json:"testing_mau"`
	TotalMAU              uint64            `json:"total_mau"`
	MAUByApp              map[string]uint64 `json:"mau_by_app"`
	BillableApps          []string          `json:"billable_apps"`
	IncludedMAU           uint64            `json:"included_mau"`
	OverageMAU            uint64            `json:"overage_mau"`
	UnitPriceUSD          string            `json:"unit_price_usd"`
	AmountUSD             decimal.Decimal   `json:"amount_usd"`
	Flags                 []string          `json:"flags"`
	Entitlements          string            `json:"-"` // JSON, see rate.Entitlements
	PreviousInvoiceID     string            `json:"previous_invoice_id,omitempty"`
	PreviousRollupVersion uint32            `json:"previous_rollup_version,omitempty"`
	PreviousAmountUSD     decimal.Decimal   `json:"previous_amount_usd"`
	AdjustmentUSD         decimal.Decimal   `json:"adjustment_usd"`
	HLLEstimate           uint64            `json:"hll_estimate"`
	HLLRelativeError      float64           `json:"hll_relative_error"`
	HLLAgrees             bool              `json:"hll_agrees"`
	Watermark             Watermark         `json:"watermark"` // the rollup version's: MAU counts the devices with a row below it
	MAUSQL                string            `json:"mau_sql"`
	RatedAt               time.Time         `json:"rated_at"`
	DueBy                 time.Time         `json:"due_by"`
	// The month's billing order (schemas/clickhouse/006, billing.go): the invoice's position in
	// it (1 = the first invoice rated), the sum of what the month's earlier invoices charged, and
	// what this one charges (the amount for the first, the adjustment for a newer version, 0 for
	// a stale one). The charges of a month add up to its newest version's amount.
	BillingSeq      uint32          `json:"billing_seq"`
	BilledBeforeUSD decimal.Decimal `json:"billed_before_usd"`
	ChargeUSD       decimal.Decimal `json:"charge_usd"`
	// SupersededByVersion is, for a stale invoice (flag stale_version), the newest rollup version
	// rated before it; 0 otherwise.
	SupersededByVersion uint32 `json:"superseded_by_version,omitempty"`
	// WriterID is a random id of the rating that wrote the row: ClaimInvoice's read-back compares
	// it to learn whether its insert won the billing sequence number.
	WriterID string `json:"-"`
	// LegacyDevicesThrough is the server-time bound of invoices rated before migration 005,
	// which have no watermark: their evidence still selects rows by inserted_at. Zero (stored
	// as the epoch) on later invoices.
	LegacyDevicesThrough time.Time `json:"-"`
}

const invoiceColumns = `invoice_id, tenant_id, month, rollup_version, rollup_kind, plan, plan_purchased,
	plan_valid_until, contract, mau, testing_mau, total_mau, mau_by_app, billable_apps, included_mau, overage_mau,
	unit_price_usd, amount_usd, flags, entitlements, previous_invoice_id, previous_rollup_version,
	previous_amount_usd, adjustment_usd, hll_estimate, hll_relative_error, hll_agrees, watermark, mau_sql,
	rated_at, due_by, billing_seq, billed_before_usd, charge_usd, superseded_by_version, writer_id, devices_through`

// fields are pointers to the columns' values in invoiceColumns order; wm stands in for the
// watermark, which clickhouse-go reads and writes as map[uint32]int64.
func (inv *Invoice) fields(wm *map[uint32]int64) []any {
	return []any{&inv.InvoiceID, &inv.TenantID, &inv.Month, &inv.RollupVersion, &inv.RollupKind, &inv.Plan,
		&inv.PlanPurchased, &inv.PlanValidUntil, &inv.Contract, &inv.MAU, &inv.TestingMAU, &inv.TotalMAU,
		&inv.MAUByApp, &inv.BillableApps, &inv.IncludedMAU, &inv.OverageMAU, &inv.UnitPriceUSD, &inv.AmountUSD,
		&inv.Flags, &inv.Entitlements, &inv.PreviousInvoiceID, &inv.PreviousRollupVersion, &inv.PreviousAmountUSD,
		&inv.AdjustmentUSD, &inv.HLLEstimate, &inv.HLLRelativeError, &inv.HLLAgrees, wm,
		&inv.MAUSQL, &inv.RatedAt, &inv.DueBy, &inv.BillingSeq, &inv.BilledBeforeUSD, &inv.ChargeUSD,
		&inv.SupersededByVersion, &inv.WriterID, &inv.LegacyDevicesThrough}
}

// InsertInvoice writes one invoice. Writing the same invoice id again replaces it when the
// table merges; the rater does not, it skips invoices that exist, and writes through
// ClaimInvoice, which makes the insert conditional on its billing sequence number.
func (s *Store) InsertInvoice(ctx context.Context, inv *Invoice) error {
	b, err := s.conn.PrepareBatch(ctx, `INSERT INTO invoices (`+invoiceColumns+`)`)
	if err != nil {
		return fmt.Errorf("insert invoice %s: %w", inv.InvoiceID, err)
	}
	defer b.Abort()
	row := *inv
	row.MAUByApp = nonNil(row.MAUByApp)
	if row.BillableApps == nil {
		row.BillableApps = []string{}
	}
	if row.Flags == nil {
		row.Flags = []string{}
	}
	row.RatedAt, row.DueBy = row.RatedAt.UTC(), row.DueBy.UTC()
	if row.LegacyDevicesThrough.IsZero() {
		row.LegacyDevicesThrough = time.Unix(0, 0)
	}
	row.LegacyDevicesThrough = row.LegacyDevicesThrough.UTC()
	wm := row.Watermark.column()
	values := make([]any, 0, 40)
	for _, f := range row.fields(&wm) {
		values = append(values, reflect.ValueOf(f).Elem().Interface())
	}
	if err := b.Append(values...); err != nil {
		return fmt.Errorf("insert invoice %s: %w", inv.InvoiceID, err)
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("insert invoice %s: %w", inv.InvoiceID, err)
	}
	return nil
}

// InvoiceFilter selects invoices: empty fields select all.
type InvoiceFilter struct {
	TenantID string
	Month    string
	// AllVersions returns every invoice; otherwise only the latest rollup version of each
	// tenant-month.
	AllVersions bool
}

// Invoices returns invoices ordered by tenant, month and rollup version.
func (s *Store) Invoices(ctx context.Context, f InvoiceFilter) ([]*Invoice, error) {
	q := `SELECT ` + invoiceColumns + ` FROM invoices FINAL WHERE (? = '' OR tenant_id = ?) AND (? = '' OR month = ?)`
	if !f.AllVersions {
		q += ` AND (tenant_id, month, rollup_version) IN (SELECT tenant_id, month, max(rollup_version) FROM invoices
			WHERE (? = '' OR tenant_id = ?) AND (? = '' OR month = ?) GROUP BY tenant_id, month)`
	}
	q += ` ORDER BY tenant_id, month, rollup_version`
	args := []any{f.TenantID, f.TenantID, f.Month, f.Month}
	if !f.AllVersions {
		args = append(args, f.TenantID, f.TenantID, f.Month, f.Month)
	}
	rows, err := s.conn.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("load invoices: %w", err)
	}
	defer rows.Close()
	var out []*Invoice
	for rows.Next() {
		inv := &Invoice{}
		var wm map[uint32]int64
		if err := rows.Scan(inv.fields(&wm)...); err != nil {
			return nil, fmt.Errorf("load invoices: scan: %w", err)
		}
		inv.Watermark = watermarkOf(wm)
		out = append(out, inv)
	}
	return out, rows.Err()
}

// Rollups returns every stored rollup version of a tenant (empty: all) and month (empty: all),
// ordered by tenant, month and version, without sketches.
func (s *Store) Rollups(ctx context.Context, tenantID, month string) ([]*Rollup, error) {
	rows, err := s.conn.Query(ctx, `SELECT tenant_id, month, version, kind, mau, mau_memory, hll_estimate,
		hll_relative_error, mau_by_app, mini_programs, dau, watermark, writer, closed_at
		FROM mau_rollups FINAL WHERE (? = '' OR tenant_id = ?) AND (? = '' OR month = ?)
		ORDER BY tenant_id, month, version`, tenantID, tenantID, month, month)
	if err != nil {
		return nil, fmt.Errorf("load rollups: %w", err)
	}
	defer rows.Close()
	var out []*Rollup
	for rows.Next() {
		r := &Rollup{}
		var wm map[uint32]int64
		if err := rows.Scan(&r.TenantID, &r.Month, &r.Version, &r.Kind, &r.MAU, &r.MAUMemory, &r.HLLEstimate,
			&r.HLLRelativeError, &r.MAUByApp, &r.MiniPrograms, &r.DAU, &wm, &r.Writer, &r.ClosedAt); err != nil {
			return nil, fmt.Errorf("load rollups: scan: %w", err)
		}
		r.Watermark = watermarkOf(wm)
		out = append(out, r)
	}
	return out, rows.Err()
}

// CountBilled runs the reproduction query of an invoice: the exact number of billed devices.
func (s *Store) CountBilled(ctx context.Context, inv *Invoice) (uint64, error) {
	var n uint64
	q, args := billedQuery("uniqExact(device_key)", inv)
	if err := s.conn.QueryRow(ctx, q, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("count billed devices of %s: %w", inv.InvoiceID, err)
	}
	return n, nil
}

// billedQuery selects from the billed devices of an invoice: its tenant-month, its billable apps,
// and the devices its rollup version's watermark covers.
func billedQuery(what string, inv *Invoice) (string, []any) {
	return `SELECT ` + what + ` FROM mau_devices WHERE tenant_id = ? AND month = ? AND has(?, app_id) AND ` + invoiceCovers(inv),
		[]any{inv.TenantID, inv.Month, nonNilSlice(inv.BillableApps)}
}

// invoiceCovers is the condition on mau_devices rows of the devices an invoice counted: below
// its watermark, or for an invoice from before migration 005 (no watermark), inserted by its
// devices_through.
func invoiceCovers(inv *Invoice) string {
	if len(inv.Watermark) == 0 && inv.LegacyDevicesThrough.After(time.Unix(0, 0)) {
		return "inserted_at <= toDateTime64('" + inv.LegacyDevicesThrough.UTC().Format("2006-01-02 15:04:05.000") + "', 3, 'UTC')"
	}
	return coveredBy(inv.Watermark)
}

// MAUSQL is the literal SQL that reproduces an invoice's MAU, for its evidence: the billable
// apps' devices with a row below the watermark of the invoice's rollup version.
func MAUSQL(database string, inv *Invoice) string {
	apps := "["
	for i, a := range inv.BillableApps {
		if i > 0 {
			apps += ", "
		}
		apps += sqlString(a)
	}
	apps += "]"
	return fmt.Sprintf("SELECT uniqExact(device_key) AS mau FROM %s.mau_devices WHERE tenant_id = %s AND month = %s"+
		" AND has(%s, app_id) AND %s",
		database, sqlString(inv.TenantID), sqlString(inv.Month), apps, invoiceCovers(inv))
}

// sqlString quotes s as a ClickHouse string literal. Ids are [A-Za-z0-9._-] already; the
// escaping is for the reader's safety, not the ids'.
func sqlString(s string) string {
	out := []byte{'\''}
	for i := 0; i < len(s); i++ {
		if s[i] == '\'' || s[i] == '\\' {
			out = append(out, '\\')
		}
		out = append(out, s[i])
	}
	return string(append(out, '\''))
}

func nonNilSlice(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// WriteBilledDevices writes the billed devices of an invoice as CSV (a header, then one row per
// device: guid, app_id, first_seen_at, first_event, mini_program_id, device_key) and returns how
// many it wrote. The rows are those the invoice's MAU counted: its billable apps and the
// mau_devices rows its rollup version covered, one per device.
func (s *Store) WriteBilledDevices(ctx context.Context, inv *Invoice, w io.Writer) (int, error) {
	q, args := billedQuery(`hex(device_key) AS key, argMin(guid, first_seen_at), argMin(app_id, first_seen_at),
		min(first_seen_at), toString(argMin(first_event, first_seen_at)), argMin(mini_program_id, first_seen_at)`, inv)
	rows, err := s.conn.Query(ctx, q+` GROUP BY device_key ORDER BY min(first_seen_at), key`, args...)
	if err != nil {
		return 0, fmt.Errorf("billed devices of %s: %w", inv.InvoiceID, err)
	}
	defer rows.Close()
	cw := csv.NewWriter(w)
	if err := cw.Write([]string{"guid", "app_id", "first_seen_at", "first_event", "mini_program_id", "device_key"}); err != nil {
		return 0, err
	}
	n := 0
	for rows.Next() {
		var key, guid, app, ev, mini string
		var first time.Time
		if err := rows.Scan(&key, &guid, &app, &first, &ev, &mini); err != nil {
			return n, fmt.Errorf("billed devices: scan: %w", err)
		}
		if err := cw.Write([]string{guid, app, first.UTC().Format("2006-01-02T15:04:05.000Z"), ev, mini, key}); err != nil {
			return n, err
		}
		n++
	}
	if err := rows.Err(); err != nil {
		return n, fmt.Errorf("billed devices: %w", err)
	}
	cw.Flush()
	return n, cw.Error()
}

// Database is the name of the store's database.
func (s *Store) Database() string { return s.cfg.Database }

// InvoiceRows counts the rows of the invoices table as stored, before ReplacingMergeTree folds
// copies: rating a rollup again must not add one.
func (s *Store) InvoiceRows(ctx context.Context) (uint64, error) {
	var n uint64
	if err := s.conn.QueryRow(ctx, `SELECT count() FROM invoices`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count invoice rows: %w", err)
	}
	return n, nil
}

// QueryCount runs a query that returns one unsigned count, such as an invoice's mau_sql.
func (s *Store) QueryCount(ctx context.Context, query string) (uint64, error) {
	var n uint64
	if err := s.conn.QueryRow(ctx, query).Scan(&n); err != nil {
		return 0, fmt.Errorf("count query: %w", err)
	}
	return n, nil
}

// InvoicedMonths returns the tenant-months not before fromMonth (YYYY-MM) that have an invoice.
func (s *Store) InvoicedMonths(ctx context.Context, fromMonth string) (map[TenantMonth]bool, error) {
	return s.distinctMonths(ctx, "invoices", fromMonth)
}

// CountedMonths returns the tenant-months not before fromMonth (YYYY-MM) that have devices, as
// the counters' partition rollups list them: a small table, where mau_devices would be scanned.
func (s *Store) CountedMonths(ctx context.Context, fromMonth string) (map[TenantMonth]bool, error) {
	return s.distinctMonths(ctx, "mau_partition_rollups", fromMonth)
}

func (s *Store) distinctMonths(ctx context.Context, table, fromMonth string) (map[TenantMonth]bool, error) {
	rows, err := s.conn.Query(ctx, `SELECT DISTINCT tenant_id, month FROM `+table+` WHERE month >= ?`, fromMonth)
	if err != nil {
		return nil, fmt.Errorf("tenant-months of %s: %w", table, err)
	}
	defer rows.Close()
	out := map[TenantMonth]bool{}
	for rows.Next() {
		var tm TenantMonth
		if err := rows.Scan(&tm.TenantID, &tm.Month); err != nil {
			return nil, fmt.Errorf("tenant-months of %s: scan: %w", table, err)
		}
		out[tm] = true
	}
	return out, rows.Err()
}
