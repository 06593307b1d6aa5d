package chstore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/pressly/goose/v3"
	"github.com/shopspring/decimal"

	"github.com/maumeter/maumeter/schemas"
)

func testInvoice(version, seq uint32, amount string) *Invoice {
	d := decimal.RequireFromString(amount)
	return &Invoice{InvoiceID: fmt.Sprintf("inv_v%d", version), TenantID: "acme", Month: "2026-10", RollupVersion: version,
		RollupKind: "restatement", AmountUSD: d, ChargeUSD: d, BilledBeforeUSD: decimal.Zero, BillingSeq: seq,
		PreviousAmountUSD: decimal.Zero, AdjustmentUSD: decimal.Zero,
		RatedAt: time.Date(2026, 11, 3, 0, 0, 0, 0, time.UTC)}
}

// TestClaimInvoiceTakesEachBillingSeqOnce checks the conditional insert on the real server:
// a second insert under the token of a taken billing_seq is dropped by ClickHouse, its writer
// learns it lost, and the winner repeating its own insert (a retry) still holds the number.
func TestClaimInvoiceTakesEachBillingSeqOnce(t *testing.T) {
	s := openMigrated(t)
	ctx := context.Background()
	rows := func() (n uint64, versions string) {
		t.Helper()
		if err := s.conn.QueryRow(ctx, `SELECT count(), toString(arraySort(groupArray(rollup_version))) FROM invoices`).Scan(&n, &versions); err != nil {
			t.Fatal(err)
		}
		return n, versions
	}
	a, b := testInvoice(3, 1, "300"), testInvoice(2, 1, "450")
	if won, err := s.ClaimInvoice(ctx, a); err != nil || !won {
		t.Fatalf("first claim of seq 1: won %v, %v", won, err)
	}
	if won, err := s.ClaimInvoice(ctx, b); err != nil || won {
		t.Fatalf("second claim of seq 1 by another writer: won %v, %v; want lost", won, err)
	}
	if n, vs := rows(); n != 1 || vs != "[3]" {
		t.Fatalf("after two inserts under one token the table holds %d rows, versions %s; want 1 row, v3", n, vs)
	}
	if won, err := s.ClaimInvoice(ctx, a); err != nil || !won {
		t.Errorf("the winner retrying its insert: won %v, %v; want won", won, err)
	}
	b.BillingSeq = 2
	if won, err := s.ClaimInvoice(ctx, b); err != nil || !won {
		t.Fatalf("claim of seq 2: won %v, %v", won, err)
	}
	if n, vs := rows(); n != 2 || vs != "[2,3]" {
		t.Fatalf("table holds %d rows, versions %s; want v3 and v2", n, vs)
	}
	// The same, by hand, without ClaimInvoice: the setting itself is what drops the insert.
	c := testInvoice(4, 2, "1")
	c.WriterID = "by-hand"
	if err := s.InsertInvoice(conditional(ctx, "invoices/acme/2026-10/2"), c); err != nil {
		t.Fatal(err)
	}
	if n, vs := rows(); n != 2 || vs != "[2,3]" {
		t.Errorf("an insert under a used token was kept: %d rows, versions %s", n, vs)
	}
	got, err := s.Invoices(ctx, InvoiceFilter{TenantID: "acme", AllVersions: true})
	if err != nil || len(got) != 2 || got[0].RollupVersion != 2 || got[0].BillingSeq != 2 || got[0].WriterID != b.WriterID ||
		!got[0].ChargeUSD.Equal(b.ChargeUSD) || got[1].BillingSeq != 1 {
		t.Errorf("invoices read back = %+v, %v", got, err)
	}
}

func TestClaimBillingRunTakesEachRunSeqOnce(t *testing.T) {
	s := openMigrated(t)
	ctx := context.Background()
	at := time.Date(2026, 11, 2, 8, 0, 0, 123e6, time.UTC)
	run := func(month string) *BillingRun {
		return &BillingRun{TenantID: "acme", RunSeq: 1, BillMonth: month, PostedThrough: map[string]uint32{"2026-09": 2, month: 1},
			InvoiceIDs: []string{"inv_a", "inv_b"}, ChargedUSD: decimal.RequireFromString("12.34"), PostedAt: at, PostedBy: "test"}
	}
	oct, nov := run("2026-10"), run("2026-11")
	if won, err := s.ClaimBillingRun(ctx, oct); err != nil || !won {
		t.Fatalf("first claim: %v, %v", won, err)
	}
	if won, err := s.ClaimBillingRun(ctx, nov); err != nil || won {
		t.Fatalf("second claim of run_seq 1: won %v, %v; want lost", won, err)
	}
	runs, err := s.BillingRuns(ctx, "acme")
	if err != nil || len(runs) != 1 {
		t.Fatalf("runs = %+v, %v; want one", runs, err)
	}
	r := runs[0]
	if r.BillMonth != "2026-10" || r.PostedThrough["2026-09"] != 2 || r.PostedThrough["2026-10"] != 1 || len(r.PostedThrough) != 2 ||
		strings.Join(r.InvoiceIDs, ",") != "inv_a,inv_b" || r.ChargedUSD.String() != "12.34" || !r.PostedAt.Equal(at) ||
		r.PostedBy != "test" || r.WriterID != oct.WriterID {
		t.Errorf("run read back = %+v", r)
	}
}

// TestMigration006PlacesExistingInvoices migrates a database holding invoices written before
// 006, including the double bill (v1 150, then v3, then v2 adjusted against v1 again):
// each month's invoices get a billing order by rated_at, charges by the new rule adding up to
// the newest version's amount, v2 is stale, and every existing month is recorded as posted.
func TestMigration006PlacesExistingInvoices(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	db := clickhouse.OpenDB(options(s.cfg, s.cfg.Database))
	defer db.Close()
	fsys, err := fs.Sub(schemas.ClickHouseMigrations, schemas.ClickHouseDir)
	if err != nil {
		t.Fatal(err)
	}
	p, err := goose.NewProvider(goose.DialectClickHouse, db, fsys, goose.WithSlog(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, 5); err != nil {
		t.Fatal(err)
	}
	// A column another migration might have added: the re-insert must carry it.
	if err := s.conn.Exec(ctx, `ALTER TABLE invoices ADD COLUMN test_extra String`); err != nil {
		t.Fatal(err)
	}
	if err := s.conn.Exec(ctx, `INSERT INTO invoices (invoice_id, tenant_id, month, rollup_version, rollup_kind, amount_usd,
		previous_invoice_id, previous_rollup_version, previous_amount_usd, adjustment_usd, flags, rated_at, test_extra) VALUES
		('i1', 'acme', '2026-10', 1, 'close',       150, '',   0, 0,   0,   [], '2026-11-03 00:00:00', 'x-i1'),
		('i3', 'acme', '2026-10', 3, 'restatement', 300, 'i1', 1, 150, 150, [], '2026-11-04 00:00:00', 'x-i3'),
		('i2', 'acme', '2026-10', 2, 'restatement', 450, 'i1', 1, 150, 300, [], '2026-11-05 00:00:00', 'x-i2'),
		('j1', 'acme', '2026-09', 1, 'close',       10,  '',   0, 0,   0,   [], '2026-10-03 00:00:00', 'x-j1'),
		('k2', 'globex', '2026-10', 2, 'restatement', 7, '',   0, 0,   0,   ['no_active_plan'], '2026-11-03 00:00:00', 'x-k2')`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	invs, err := s.Invoices(ctx, InvoiceFilter{AllVersions: true})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, inv := range invs {
		got = append(got, fmt.Sprintf("%s %s v%d seq %d before %s charge %s adj %s prev v%d super %d %v", inv.TenantID, inv.Month,
			inv.RollupVersion, inv.BillingSeq, inv.BilledBeforeUSD, inv.ChargeUSD, inv.AdjustmentUSD, inv.PreviousRollupVersion,
			inv.SupersededByVersion, inv.Flags))
	}
	want := []string{
		"acme 2026-09 v1 seq 1 before 0 charge 10 adj 0 prev v0 super 0 []",
		"acme 2026-10 v1 seq 1 before 0 charge 150 adj 0 prev v0 super 0 []",
		"acme 2026-10 v2 seq 3 before 300 charge 0 adj 0 prev v3 super 3 [stale_version]",
		"acme 2026-10 v3 seq 2 before 150 charge 150 adj 150 prev v1 super 0 []",
		"globex 2026-10 v2 seq 1 before 0 charge 7 adj 0 prev v0 super 0 [no_active_plan]",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("migrated invoices:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var rows, carried uint64
	if err := s.conn.QueryRow(ctx, `SELECT count(), countIf(test_extra = 'x-' || invoice_id) FROM invoices`).Scan(&rows, &carried); err != nil ||
		rows != 5 || carried != 5 {
		t.Errorf("invoices holds %d rows, %d with their other column intact (%v) after the migration's re-insert, want 5 and 5", rows, carried, err)
	}
	runs, err := s.BillingRuns(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	got = got[:0]
	for _, r := range runs {
		got = append(got, fmt.Sprintf("%s #%d %s %v %v %s %s", r.TenantID, r.RunSeq, r.BillMonth, r.PostedThrough, r.InvoiceIDs, r.ChargedUSD, r.PostedBy))
	}
	want = []string{
		"acme #1 2026-09 map[2026-09:1] [j1] 10 006_migration",
		"acme #2 2026-10 map[2026-10:3] [i1 i3 i2] 300 006_migration",
		"globex #1 2026-10 map[2026-10:1] [k2] 7 006_migration",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("billing runs:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// The migrated table takes the next seq conditionally: a second insert under seq 4 is dropped.
	if won, err := s.ClaimInvoice(ctx, testInvoice(4, 4, "1")); err != nil || !won {
		t.Errorf("claiming seq 4 after the migration: won %v, %v", won, err)
	}
	if won, err := s.ClaimInvoice(ctx, testInvoice(5, 4, "1")); err != nil || won {
		t.Errorf("claiming seq 4 again: won %v, %v; want lost", won, err)
	}
	// A seq held by two rows (here: a migrated row has no token to deduplicate against, and a
	// writer that never read the month inserts under it) is reported, not taken as won.
	if won, err := s.ClaimInvoice(ctx, testInvoice(6, 3, "1")); !errors.Is(err, ErrBillingOrder) || won {
		t.Errorf("claiming the migrated seq 3: won %v, %v; want ErrBillingOrder", won, err)
	}
}
