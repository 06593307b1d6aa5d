package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/maumeter/maumeter/internal/servicetest"
	"github.com/maumeter/maumeter/pipeline/chstore"
	"github.com/maumeter/maumeter/pipeline/rate"
	"github.com/maumeter/maumeter/pkg/plan"
	"github.com/maumeter/maumeter/pkg/tenant"
)

// TestRateMonthShowsAndPostsBills runs `maumeter rate --month M [--post]` on the real ClickHouse:
// September is billed, then restated; October's draft bill carries September's adjustment
// (pending), posting October records it (posted), and posting again records nothing.
func TestRateMonthShowsAndPostsBills(t *testing.T) {
	addr := servicetest.Require(t, servicetest.ClickHouse)[0]
	ctx := context.Background()
	db := fmt.Sprintf("cmd_rate_test_%d", rand.Uint64())
	log := slog.New(slog.DiscardHandler)
	store, err := chstore.Open(ctx, chstore.Config{Addr: addr, Database: db}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if _, err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	cat, err := tenant.Parse("t.yaml", []byte("tenants:\n  - {id: acme, plan: pro, purchased: 2026-03-15, apps: [app], contract: {included_mau: 10, unit_price_usd: \"0.015\"}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	plans, err := plan.Default()
	if err != nil {
		t.Fatal(err)
	}
	// A fixed clock: the months and the purchase are fixed, so the bills never depend on the day
	// the test runs.
	now := func() time.Time { return time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC) }
	rt, err := rate.New(rate.Config{}, cat, plans, store, now, log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	rateRollup := func(month string, v uint32, mau uint64) {
		t.Helper()
		if _, _, err := rt.Rate(ctx, &chstore.Rollup{TenantID: "acme", Month: month, Version: v, Kind: "close", MAU: mau,
			MAUByApp: map[string]uint64{"app": mau}}); err != nil {
			t.Fatal(err)
		}
	}
	cli := func(args ...string) (string, string, error) {
		t.Helper()
		var stdout, stderr bytes.Buffer
		err := runRate(ctx, now, append(args, "--clickhouse-addr", addr, "--clickhouse-database", db, "--log-level", "error"), &stdout, &stderr)
		return stdout.String(), stderr.String(), err
	}

	rateRollup("2026-09", 1, 25) // 0.23
	rateRollup("2026-10", 1, 25) // 0.23
	if out, errOut, err := cli("--month", "2026-09", "--post"); err != nil || !strings.Contains(errOut, "acme 2026-09: bill posted (run 1): 1 invoices, 0.23 USD") ||
		!strings.Contains(out, "posted") {
		t.Fatalf("post September: %v\n%s\n%s", err, out, errOut)
	}
	rateRollup("2026-09", 2, 28) // 0.27: 0.04 more, after September's bill

	out, _, err := cli("--month", "2026-10", "--format", "csv")
	if err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil || len(recs) != 2 || strings.Join(recs[1][20:], ",") != "draft,0.23,0.04,0.27,2026-09/v2:0.04:pending" {
		t.Fatalf("October csv = %v, %v", recs, err)
	}
	out, _, err = cli("--month", "2026-10", "--format", "table")
	if err != nil || !strings.Contains(out, "adjustments: the month's own, and the earlier months' on its bill") ||
		!strings.Contains(out, "draft") || !strings.Contains(out, "pending") {
		t.Fatalf("October table (%v):\n%s", err, out)
	}

	for i, want := range []string{"bill posted (run 2): 2 invoices, 0.27 USD", "bill already posted (run 2"} {
		out, errOut, err := cli("--month", "2026-10", "--post", "--format", "json")
		var st rate.Statement
		if err != nil || json.Unmarshal([]byte(out), &st) != nil || !strings.Contains(errOut, want) {
			t.Fatalf("post October #%d: %v\n%s\n%s", i+1, err, out, errOut)
		}
		if b := st.Bill; b.Status != rate.BillPosted || b.RunSeq != 2 || b.TotalUSD != "0.27" || len(b.Adjustments) != 1 ||
			b.Adjustments[0].Status != rate.StatusPosted || b.Adjustments[0].PostedOn != "2026-10" {
			t.Errorf("post October #%d: bill %+v", i+1, b)
		}
	}
	// September's statement says where its restatement went.
	out, _, err = cli("--month", "2026-09", "--format", "json")
	var sep rate.Statement
	if err != nil || json.Unmarshal([]byte(out), &sep) != nil || sep.Bill.Status != rate.BillPosted || sep.Bill.TotalUSD != "0.23" ||
		len(sep.Adjustments) != 1 || sep.Adjustments[0].PostedOn != "2026-10" {
		t.Errorf("September = %s (%v)", out, err)
	}
	if _, _, err := cli("--post"); !errors.Is(err, errUsage) {
		t.Errorf("--post without --month: %v, want a usage error", err)
	}
}
