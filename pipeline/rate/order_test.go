package rate_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/shopspring/decimal"

	"github.com/maumeter/maumeter/internal/servicetest"
	"github.com/maumeter/maumeter/pipeline/chstore"
	. "github.com/maumeter/maumeter/pipeline/rate"
	"github.com/maumeter/maumeter/pkg/tenant"
)

// orderRig is a rater on the real ClickHouse (no Kafka: Rate and RateStored read and write
// ClickHouse only), with a catalogue of n tenants t000… priced as acme in rigCatalog: 10 MAU
// included, 0.015 USD each above.
type orderRig struct {
	store   *chstore.Store
	catalog *tenant.Catalog
	rater   *Rater
	reg     *prometheus.Registry
}

func newOrderRig(t *testing.T, tenants int) *orderRig {
	t.Helper()
	addr := servicetest.Require(t, servicetest.ClickHouse)[0]
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	store, err := chstore.Open(ctx, chstore.Config{Addr: addr, Database: fmt.Sprintf("rate_order_test_%d", time.Now().UnixNano())}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	if _, err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	var cat strings.Builder
	cat.WriteString("tenants:\n")
	for i := range tenants {
		fmt.Fprintf(&cat, "  - {id: t%03d, plan: pro, purchased: 2026-03-15, apps: [app], contract: {included_mau: 10, unit_price_usd: \"0.015\"}}\n", i)
	}
	catalog, err := tenant.Parse("order.yaml", []byte(cat.String()))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	rt, err := New(Config{}, catalog, plans(t), store, func() time.Time { return time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC) }, log, reg)
	if err != nil {
		t.Fatal(err)
	}
	return &orderRig{store: store, catalog: catalog, rater: rt, reg: reg}
}

// versionMAU are the billable MAU of v1..v4 of every test month, and versionUSD their amounts:
// (MAU − 10) × 0.015, rounded half-up once. v3 is below v2 so that no rule may assume amounts grow.
var (
	versionMAU = map[uint32]uint64{1: 25, 2: 53, 3: 40, 4: 110}
	versionUSD = map[uint32]string{1: "0.23", 2: "0.65", 3: "0.45", 4: "1.50"}
)

// permutations returns every order of vs.
func permutations(vs []uint32) [][]uint32 {
	if len(vs) <= 1 {
		return [][]uint32{slices.Clone(vs)}
	}
	var out [][]uint32
	for i := range vs {
		for _, p := range permutations(slices.Concat(vs[:i], vs[i+1:])) {
			out = append(out, append([]uint32{vs[i]}, p...))
		}
	}
	return out
}

func rollup(tenantID string, v uint32) *chstore.Rollup {
	kind := "restatement"
	if v == 1 {
		kind = "close"
	}
	return &chstore.Rollup{TenantID: tenantID, Month: "2026-10", Version: v, Kind: kind, MAU: versionMAU[v],
		MAUByApp: map[string]uint64{"app": versionMAU[v]}, Watermark: chstore.Watermark{0: int64(v) * 10},
		ClosedAt: time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)}
}

// storeRollups writes v1..v4 of tenant's October to mau_rollups, for RateStored to find.
func (o *orderRig) storeRollups(t *testing.T, tenantID string) {
	t.Helper()
	for v := uint32(1); v <= 4; v++ {
		ro := rollup(tenantID, v)
		ro.Writer = fmt.Sprintf("test-%s-v%d", tenantID, v)
		if err := o.store.WriteRollup(context.Background(), ro); err != nil {
			t.Fatal(err)
		}
	}
}

// checkMonth checks a tenant's October as stored: four invoices in a gapless billing order,
// charges adding up to v4's amount, billed_before the sum before each, stale flagged exactly
// where a newer version came first. It returns the versions in billing order.
func (o *orderRig) checkMonth(t *testing.T, name, tenantID string) []uint32 {
	t.Helper()
	invs, err := o.store.Invoices(context.Background(), chstore.InvoiceFilter{TenantID: tenantID, Month: "2026-10", AllVersions: true})
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(invs, func(a, b *chstore.Invoice) int { return int(a.BillingSeq) - int(b.BillingSeq) })
	var order []uint32
	sum, top := decimal.Zero, uint32(0)
	for i, inv := range invs {
		order = append(order, inv.RollupVersion)
		stale := inv.RollupVersion < top
		if inv.BillingSeq != uint32(i+1) || !inv.BilledBeforeUSD.Equal(sum) || slices.Contains(inv.Flags, FlagStaleVersion) != stale ||
			(stale && (!inv.ChargeUSD.IsZero() || inv.SupersededByVersion != top)) ||
			(!stale && !inv.ChargeUSD.Equal(inv.AmountUSD.Sub(sum))) || inv.AmountUSD.StringFixed(2) != versionUSD[inv.RollupVersion] {
			t.Errorf("%s: invoice %d = v%d seq %d amount %s billed before %s charge %s flags %v superseded by %d (sum before %s, newest before v%d)",
				name, i, inv.RollupVersion, inv.BillingSeq, inv.AmountUSD, inv.BilledBeforeUSD, inv.ChargeUSD, inv.Flags,
				inv.SupersededByVersion, sum, top)
		}
		sum = sum.Add(inv.ChargeUSD)
		top = max(top, inv.RollupVersion)
	}
	if len(invs) != 4 || sum.StringFixed(2) != versionUSD[4] {
		t.Errorf("%s: %d invoices (billing order %v) charge %s in total, want 4 charging v4's %s", name, len(invs), order, sum, versionUSD[4])
	}
	return order
}

// TestRateEveryOrderBillsV4Once rates v1..v4 of a month in each of the 24 orders on the real
// ClickHouse, with replays (each version again after the next one, the whole topic again) and
// `rate --stored`, each order in a tenant of its own; and in 24 more tenants rates the first two
// of each order from the topic and the rest with RateStored. Every month charges v4's amount in
// total, and its draft bill (then its posted bill) says so.
func TestRateEveryOrderBillsV4Once(t *testing.T) {
	o := newOrderRig(t, 48)
	ctx := context.Background()
	perms := permutations([]uint32{1, 2, 3, 4})
	for i, p := range perms {
		// The consumer in order p, each message redelivered after the next, then RateStored
		// (nothing left to rate) and a second group reading the whole topic again.
		tenantID := fmt.Sprintf("t%03d", i)
		o.storeRollups(t, tenantID)
		written := 0
		for j, v := range slices.Concat(p, p) {
			for _, again := range []uint32{v, p[max(j-1, 0)%4]} {
				_, w, err := o.rater.Rate(ctx, rollup(tenantID, again))
				if err != nil {
					t.Fatal(err)
				}
				if w {
					written++
				}
			}
			if j == 3 {
				if invs, err := o.rater.RateStored(ctx, tenantID, "2026-10"); err != nil || len(invs) != 0 {
					t.Fatalf("%v: RateStored after all four = %d invoices, %v; want none", p, len(invs), err)
				}
			}
		}
		if got := o.checkMonth(t, fmt.Sprint(p, " from the topic"), tenantID); written != 4 || !slices.Equal(got, p) {
			t.Errorf("%v from the topic: %d invoices written, billing order %v; want 4 in the order rated", p, written, got)
		}

		// The first two from the topic, then `rate --stored` rates the others in version order.
		tenantID = fmt.Sprintf("t%03d", 24+i)
		o.storeRollups(t, tenantID)
		for _, v := range p[:2] {
			if _, _, err := o.rater.Rate(ctx, rollup(tenantID, v)); err != nil {
				t.Fatal(err)
			}
		}
		invs, err := o.rater.RateStored(ctx, tenantID, "2026-10")
		if err != nil || len(invs) != 2 {
			t.Fatalf("%v: RateStored after two = %d invoices, %v; want 2", p, len(invs), err)
		}
		want := slices.Clone(p[:2])
		for v := uint32(1); v <= 4; v++ {
			if !slices.Contains(want, v) {
				want = append(want, v)
			}
		}
		if got := o.checkMonth(t, fmt.Sprint(p[:2], " then rate --stored"), tenantID); !slices.Equal(got, want) {
			t.Errorf("%v then rate --stored: billing order %v, want %v", p[:2], got, want)
		}
	}
	if rows, err := o.store.InvoiceRows(ctx); err != nil || rows != 48*4 {
		t.Errorf("invoices holds %d rows (%v), want %d: a replay wrote a row", rows, err, 48*4)
	}

	// Every month's bill: the draft charges v4's amount; posting it records that, once.
	sts, err := Reader{Store: o.store}.Statements(ctx, "", "2026-10")
	if err != nil || len(sts) != 48 {
		t.Fatalf("%d statements, %v; want 48", len(sts), err)
	}
	for _, st := range sts {
		if st.Bill.Status != BillDraft || st.Bill.MonthUSD != versionUSD[4] || st.Bill.TotalUSD != versionUSD[4] ||
			st.AmountUSD != versionUSD[4] || st.RollupVersion != 4 || len(st.Adjustments) != 3 {
			t.Errorf("%s statement: amount %s v%d, bill %+v, %d adjustments", st.TenantID, st.AmountUSD, st.RollupVersion, st.Bill, len(st.Adjustments))
		}
		run, now, err := PostBill(ctx, o.store, st.TenantID, "2026-10", time.Now())
		if err != nil || !now || run.ChargedUSD.StringFixed(2) != versionUSD[4] || len(run.InvoiceIDs) != 4 {
			t.Fatalf("%s: PostBill = %+v, %v, %v; want 4 invoices charging %s", st.TenantID, run, now, err, versionUSD[4])
		}
	}
}

// TestConcurrentRatersBillTheNewestOnce races two raters (the consumer and an operator's
// `rate --stored`) over the same month, round after round: each round a new tenant-month, one
// goroutine rating v1..v4 in one order and the other in another (or RateStored), both started
// at once. Every month ends with four invoices in a gapless billing order charging v4's amount.
func TestConcurrentRatersBillTheNewestOnce(t *testing.T) {
	const rounds = 60
	o := newOrderRig(t, rounds)
	// A second rater, as a second process would be: its own Rater on the same store.
	otherReg := prometheus.NewRegistry()
	other, err := New(Config{}, o.catalog, plans(t), o.store, time.Now, slog.New(slog.DiscardHandler), otherReg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	perms := permutations([]uint32{1, 2, 3, 4})
	for round := range rounds {
		tenantID := fmt.Sprintf("t%03d", round)
		o.storeRollups(t, tenantID)
		a, b := perms[round%24], perms[(round*7+5)%24]
		start := make(chan struct{})
		var wg sync.WaitGroup
		errs := make([]error, 2)
		run := func(i int, rt *Rater, order []uint32) {
			defer wg.Done()
			<-start
			if order == nil { // rate --stored
				_, errs[i] = rt.RateStored(ctx, tenantID, "2026-10")
				return
			}
			for _, v := range order {
				if _, _, err := rt.Rate(ctx, rollup(tenantID, v)); err != nil {
					errs[i] = err
					return
				}
			}
		}
		wg.Add(2)
		go run(0, o.rater, a)
		if round%3 == 2 {
			go run(1, other, nil)
		} else {
			go run(1, other, b)
		}
		close(start)
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		o.checkMonth(t, fmt.Sprintf("round %d (%v against %v)", round, a, b), tenantID)
	}
	if rows, err := o.store.InvoiceRows(ctx); err != nil || rows != rounds*4 {
		t.Errorf("invoices holds %d rows (%v), want %d", rows, err, rounds*4)
	}
	lost, otherLost := metric(t, o.reg, "maumeter_rater_billing_order_retries_total", ""), metric(t, otherReg, "maumeter_rater_billing_order_retries_total", "")
	t.Logf("%d rounds: the raters lost the month's next billing_seq %v and %v times and placed their invoice again", rounds, lost, otherLost)
	if lost+otherLost == 0 {
		t.Error("no rating ever lost the billing order: the test did not race")
	}
}

// TestConcurrentPostingsPostEachInvoiceOnce races billing runs of one tenant: two posting the
// same month get the same bill (one run recorded); October and November posted at once either
// both succeed in month order or November comes first and October is refused. An invoice rated
// after a bill goes on the next one: in the end every invoice is on exactly one bill, and the
// bills charge each month's newest amount.
func TestConcurrentPostingsPostEachInvoiceOnce(t *testing.T) {
	const rounds = 20
	o := newOrderRig(t, rounds)
	ctx := context.Background()
	rate := func(tenantID, month string, v uint32) {
		t.Helper()
		ro := rollup(tenantID, v)
		ro.Month = month
		if _, _, err := o.rater.Rate(ctx, ro); err != nil {
			t.Fatal(err)
		}
	}
	for round := range rounds {
		tenantID := fmt.Sprintf("t%03d", round)
		rate(tenantID, "2026-10", 1)
		rate(tenantID, "2026-10", 2)
		rate(tenantID, "2026-11", 1)
		months := []string{"2026-10", "2026-10"}
		if round%2 == 1 {
			months = []string{"2026-10", "2026-11"}
		}
		runs := make([]*chstore.BillingRun, 2)
		errs := make([]error, 2)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i, m := range months {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				runs[i], _, errs[i] = PostBill(ctx, o.store, tenantID, m, time.Now())
			}()
		}
		close(start)
		wg.Wait()
		if months[1] == "2026-10" {
			if errs[0] != nil || errs[1] != nil || runs[0].RunSeq != 1 || runs[1].RunSeq != 1 || runs[0].WriterID != runs[1].WriterID {
				t.Fatalf("round %d: two postings of October: %+v %v, %+v %v; want the same run", round, runs[0], errs[0], runs[1], errs[1])
			}
		} else if errs[1] != nil || (errs[0] != nil && !errors.Is(errs[0], ErrLaterBillPosted)) {
			t.Fatalf("round %d: October and November at once: %v, %v", round, errs[0], errs[1])
		}
		// October restated after its bill, and December: the December bill takes what is left.
		rate(tenantID, "2026-10", 3)
		rate(tenantID, "2026-12", 1)
		if _, _, err := PostBill(ctx, o.store, tenantID, "2026-12", time.Now()); err != nil {
			t.Fatal(err)
		}
		all, err := o.store.BillingRuns(ctx, tenantID)
		if err != nil {
			t.Fatal(err)
		}
		posted, total := map[string]int{}, decimal.Zero
		for _, r := range all {
			for _, id := range r.InvoiceIDs {
				posted[id]++
			}
			total = total.Add(r.ChargedUSD)
		}
		// October's v3 0.45, November's and December's v1 0.23 each, whatever the bills.
		if len(posted) != 5 || total.StringFixed(2) != "0.91" {
			t.Errorf("round %d: %d runs post %v charging %s; want 5 invoices, 0.91", round, len(all), posted, total)
		}
		for id, n := range posted {
			if n != 1 {
				t.Errorf("round %d: invoice %s posted %d times", round, id, n)
			}
		}
		sts, err := Reader{Store: o.store}.Statements(ctx, tenantID, "")
		if err != nil || len(sts) != 3 {
			t.Fatalf("round %d: statements %+v, %v", round, sts, err)
		}
		for _, st := range sts {
			for _, a := range append(st.Adjustments, st.Bill.Adjustments...) {
				if a.Status != StatusPosted || a.PostedOn == "" {
					t.Errorf("round %d: %s %s adjustment %+v not posted", round, st.TenantID, st.Month, a)
				}
			}
		}
	}
}
