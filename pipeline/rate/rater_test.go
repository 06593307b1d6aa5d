package rate_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/maumeter/maumeter/internal/kafkatest"
	"github.com/maumeter/maumeter/internal/promtest"
	"github.com/maumeter/maumeter/internal/servicetest"
	"github.com/maumeter/maumeter/pipeline/bus"
	"github.com/maumeter/maumeter/pipeline/chstore"
	"github.com/maumeter/maumeter/pipeline/count"
	. "github.com/maumeter/maumeter/pipeline/rate"
	"github.com/maumeter/maumeter/pkg/calendar"
	"github.com/maumeter/maumeter/pkg/event"
	"github.com/maumeter/maumeter/pkg/plan"
	"github.com/maumeter/maumeter/pkg/sketch"
	"github.com/maumeter/maumeter/pkg/tenant"
)

// rig is a closer and raters on the real Kafka and ClickHouse, with topics, groups and a
// database of their own.
type rig struct {
	brokers []string
	events  string
	rollups string
	group   string // the counters' group the closer waits for
	id      string
	store   *chstore.Store
	catalog *tenant.Catalog
	closer  *count.Closer
	clock   atomic.Int64 // unix ns of the injected clock
	log     *slog.Logger
	// partitions is what a counter of partition 0 would hold per tenant: the devices are all
	// written as if from partition 0.
	partitions map[string]*partition
}

type partition struct {
	sk    *sketch.Month
	exact uint64
}

const rigCatalog = `tenants:
  - id: acme
    plan: pro
    purchased: 2026-03-15
    time_zone: Asia/Shanghai
    apps: [acme-app]
    testing_apps: [acme-qa]
    contract: {included_mau: 10, unit_price_usd: "0.015"}
  - id: initech
    plan: poc_pro
    purchased: 2026-09-01
    testing_apps: [initech-test]
`

func (r *rig) now() time.Time  { return time.Unix(0, r.clock.Load()).UTC() }
func (r *rig) set(t time.Time) { r.clock.Store(t.UnixNano()) }

func newRig(t *testing.T) *rig {
	t.Helper()
	svc := servicetest.Require(t, servicetest.Kafka, servicetest.ClickHouse)
	brokers, ch := svc[0], svc[1]
	id := fmt.Sprintf("%s-%d", t.Name(), time.Now().UnixNano())
	r := &rig{brokers: []string{brokers}, events: "test.events." + id, rollups: "test.rollups." + id, id: id,
		partitions: map[string]*partition{"acme": {sk: sketch.NewMonth()}, "initech": {sk: sketch.NewMonth()}},
		log:        slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	r.set(time.Date(2026, 11, 3, 12, 0, 0, 0, time.UTC))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var err error
	r.store, err = chstore.Open(ctx, chstore.Config{Addr: ch, Database: fmt.Sprintf("rate_test_%d", time.Now().UnixNano())}, r.log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.store.Close() })
	if _, err := r.store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tp := range []bus.Topic{{Name: r.events, Partitions: 2, ReplicationFactor: 1},
		{Name: r.rollups, Partitions: 1, ReplicationFactor: 1, Configs: map[string]string{"cleanup.policy": "compact"}}} {
		if err := bus.EnsureTopic(ctx, bus.Plain(r.brokers), tp, r.log); err != nil {
			t.Fatal(err)
		}
	}
	if r.catalog, err = tenant.Parse("rig.yaml", []byte(rigCatalog)); err != nil {
		t.Fatal(err)
	}
	r.group = "test-count-" + id
	r.closer, err = count.NewCloser(count.CloseConfig{RollupsTopic: r.rollups}, bus.Plain(r.brokers), r.events, r.group,
		r.catalog, r.store, r.now, r.log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// devices records n first-seen devices of app in acme's October.
func (r *rig) devices(t *testing.T, tenantID, app string, from, n int) {
	t.Helper()
	// As a counter would: the events on partition 0 of the events topic, their devices stored,
	// the offsets committed past them (a rollup covers devices by offset).
	ctx := context.Background()
	base, err := kafkatest.Append(ctx, r.brokers, r.events, 0, n)
	if err != nil {
		t.Fatal(err)
	}
	rows := make([]chstore.DeviceRow, n)
	for i := range rows {
		guid := fmt.Sprintf("g-%s-%d", app, from+i)
		rows[i] = chstore.DeviceRow{TenantID: tenantID, Month: "2026-10", AppID: app, Key: event.KeyOf(tenantID, app, guid), GUID: guid,
			FirstSeenAt: time.Date(2026, 10, 5, 8, 0, i, 0, time.UTC), FirstEvent: event.Open, MiniProgramID: "mp-1",
			Partition: 0, Offset: base + int64(i)}
	}
	if err := r.store.InsertDevices(ctx, rows); err != nil {
		t.Fatal(err)
	}
	if err := kafkatest.Commit(ctx, r.brokers, r.group, r.events, map[int]int64{0: base + int64(n)}); err != nil {
		t.Fatal(err)
	}
	// What a counter's checkpoint would store beside them: the partition's sketches.
	pr := r.partitions[tenantID]
	for _, row := range rows {
		pr.sk.Add(row.Key, app, "mp-1", "2026-10-05")
	}
	pr.exact += uint64(n)
	blob, err := pr.sk.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.store.InsertPartitionRollups(context.Background(), []chstore.PartitionRollup{{TenantID: tenantID, Month: "2026-10",
		Version: uint64(time.Now().UnixNano()), ExactDevices: pr.exact, HLLEstimate: pr.sk.Estimate(), Sketches: blob}}); err != nil {
		t.Fatal(err)
	}
}

func (r *rig) close(t *testing.T, tenantID string) *chstore.Rollup {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ro, err := r.closer.Close(ctx, chstore.TenantMonth{TenantID: tenantID, Month: "2026-10"})
	if err != nil || ro == nil {
		t.Fatalf("close %s: %v %v", tenantID, ro, err)
	}
	return ro
}

// startRater runs a rater in group until the test ends; it returns it with its metrics.
func (r *rig) startRater(t *testing.T, group string) (*Rater, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	rt, err := New(Config{Kafka: bus.Plain(r.brokers), RollupsTopic: r.rollups, Group: group}, r.catalog, plans(t), r.store,
		r.now, r.log, reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("rater: %v", err)
		}
	})
	return rt, reg
}

// waitInvoice waits for the invoice of one rollup version.
func (r *rig) waitInvoice(t *testing.T, tenantID string, version uint32) *chstore.Invoice {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for time.Now().Before(deadline) {
		invs, err := r.store.Invoices(context.Background(), chstore.InvoiceFilter{TenantID: tenantID, Month: "2026-10", AllVersions: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, inv := range invs {
			if inv.RollupVersion == version {
				return inv
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("no invoice for %s 2026-10 v%d after 45s", tenantID, version)
	return nil
}

func (r *rig) publishRaw(t *testing.T, key, schema string, value []byte) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(r.brokers...), Topic: r.rollups, RequiredAcks: kafka.RequireAll}
	defer w.Close()
	if err := w.WriteMessages(context.Background(), kafka.Message{Key: []byte(key), Value: value,
		Headers: []kafka.Header{{Key: "schema", Value: []byte(schema)}}}); err != nil {
		t.Fatal(err)
	}
}

// TestRaterInvoicesRestatementsAndReruns runs the closer and the rater on the real services:
// a close is invoiced with its evidence, a restatement yields an adjustment linked to both
// versions, bad messages are skipped without blocking, and a second rater that reads the whole
// topic again writes nothing.
func TestRaterInvoicesRestatementsAndReruns(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	r.devices(t, "acme", "acme-app", 0, 25)
	r.devices(t, "acme", "acme-qa", 0, 5)
	rt, reg := r.startRater(t, "test-rate-"+r.id)
	// Before 16:00Z on Nov 3 (the end of day 3 in Shanghai) October is not due; after it, a
	// month with devices and no invoice is overdue.
	overdue := func(want string) {
		t.Helper()
		late, err := rt.Overdue(ctx)
		if got := fmt.Sprint(late); err != nil || got != want {
			t.Errorf("overdue at %s = %s, %v; want %s", r.now(), got, err, want)
		}
	}
	overdue("[]")
	r.set(time.Date(2026, 11, 3, 16, 0, 0, 0, time.UTC))
	overdue("[{acme 2026-10}]")
	v1 := r.close(t, "acme")

	inv := r.waitInvoice(t, "acme", 1)
	// 25 billable devices, 10 included by contract, 15 × 0.015 = 0.225 → 0.23 half-up.
	if inv.MAU != 25 || inv.TestingMAU != 5 || inv.TotalMAU != 30 || inv.IncludedMAU != 10 || inv.OverageMAU != 15 ||
		inv.AmountUSD.StringFixed(2) != "0.23" || inv.InvoiceID != InvoiceID("acme", "2026-10", 1) || inv.PreviousInvoiceID != "" {
		t.Fatalf("v1 invoice = %+v", inv)
	}
	if !inv.HLLAgrees || inv.HLLEstimate != v1.HLLEstimate || inv.Watermark.SQL() != v1.Watermark.SQL() {
		t.Errorf("v1 evidence: hll %d agrees %v watermark %v, rollup hll %d watermark %v",
			inv.HLLEstimate, inv.HLLAgrees, inv.Watermark, v1.HLLEstimate, v1.Watermark)
	}
	if want := time.Date(2026, 11, 3, 16, 0, 0, 0, time.UTC); !inv.DueBy.Equal(want) || !inv.RatedAt.Equal(want) { // end of Nov 3 in Shanghai
		t.Errorf("due by %s, rated at %s, want %s", inv.DueBy, inv.RatedAt, want)
	}
	checkEvidence(t, r.store, inv)
	overdue("[]")

	// Garbage and a tenant the catalogue does not know are skipped; what follows is rated.
	r.publishRaw(t, "acme/2026-10", bus.RollupSchema, []byte("{not json"))
	r.publishRaw(t, "acme/2026-10", "maumeter.rollup.v9", []byte(`{}`))
	r.publishRaw(t, "ghost/2026-10", bus.RollupSchema, []byte(`{"tenant_id":"ghost","month":"2026-10","version":1,"mau":1,"mau_by_app":{"x":1}}`))

	// Three late devices: a restatement, invoiced with an adjustment of 3 × 0.015 = 0.045:
	// 0.27 − 0.23 billed before = 0.04 (each total is rounded once, the adjustment is their
	// difference).
	r.set(r.now().Add(time.Hour))
	r.devices(t, "acme", "acme-app", 25, 3)
	r.close(t, "acme")
	inv2 := r.waitInvoice(t, "acme", 2)
	if inv2.MAU != 28 || inv2.AmountUSD.StringFixed(2) != "0.27" || inv2.AdjustmentUSD.StringFixed(2) != "0.04" ||
		inv2.PreviousInvoiceID != inv.InvoiceID || inv2.PreviousRollupVersion != 1 || inv2.RollupKind != "restatement" ||
		inv2.BillingSeq != 2 || inv2.BilledBeforeUSD.StringFixed(2) != "0.23" || inv2.ChargeUSD.StringFixed(2) != "0.04" {
		t.Fatalf("v2 invoice = %+v", inv2)
	}
	if inv.BillingSeq != 1 || inv.ChargeUSD.StringFixed(2) != "0.23" || !inv.BilledBeforeUSD.IsZero() {
		t.Errorf("v1 billing order: seq %d, billed before %s, charge %s; want 1, 0, 0.23", inv.BillingSeq, inv.BilledBeforeUSD, inv.ChargeUSD)
	}
	checkEvidence(t, r.store, inv2)
	for reason, want := range map[string]float64{"bad_json": 1, "unknown_schema": 1, "unknown_tenant": 1} {
		if got := metric(t, reg, "maumeter_rater_skipped_messages_total", reason); got != want {
			t.Errorf("skipped %s = %v, want %v", reason, got, want)
		}
	}

	// The statement of the month: the current invoice with the adjustment linked to both
	// versions, pending, and the month's draft bill charging both invoices: 0.27.
	sts, err := Reader{Store: r.store}.Statements(ctx, "acme", "2026-10")
	if err != nil || len(sts) != 1 {
		t.Fatalf("statements = %+v, %v", sts, err)
	}
	if st := sts[0]; st.InvoiceID != inv2.InvoiceID || st.AmountUSD != "0.27" || len(st.Adjustments) != 1 ||
		st.Adjustments[0].Cents != 4 || st.Adjustments[0].PreviousInvoiceID != inv.InvoiceID || st.Adjustments[0].Status != StatusPending ||
		st.Bill.Status != BillDraft || st.Bill.MonthUSD != "0.27" || st.Bill.TotalUSD != "0.27" {
		t.Errorf("statement = %+v", st)
	}

	// A second rater group reads the whole topic again (v1, the bad messages, v2) and rates
	// nothing: the invoices stay as issued, row for row.
	rows, err := r.store.InvoiceRows(ctx)
	if err != nil || rows != 2 {
		t.Fatalf("invoice rows = %d, %v; want 2", rows, err)
	}
	r.set(r.now().Add(time.Hour))
	rt2, reg2 := r.startRater(t, "test-rate-again-"+r.id)
	deadline := time.Now().Add(45 * time.Second)
	for metric(t, reg2, "maumeter_rater_already_rated_total", "") < 2 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if got := metric(t, reg2, "maumeter_rater_already_rated_total", ""); got != 2 {
		t.Fatalf("second rater saw %v already-rated rollups, want 2", got)
	}
	if rows, err := r.store.InvoiceRows(ctx); err != nil || rows != 2 {
		t.Errorf("after a second rater, invoice rows = %d, %v; want 2", rows, err)
	}
	again := r.waitInvoice(t, "acme", 2)
	if !again.RatedAt.Equal(inv2.RatedAt) || !again.AmountUSD.Equal(inv2.AmountUSD) {
		t.Errorf("v2 invoice changed: %+v, was %+v", again, inv2)
	}

	// A rollup stored but never seen on the topic (its message skipped or compacted away):
	// RateStored finds it, once.
	v3 := *v1
	v3.Version, v3.Kind, v3.MAU, v3.Writer = 3, "restatement", 33, "test-v3"
	v3.MAUByApp = map[string]uint64{"acme-app": 28, "acme-qa": 5}
	if err := r.store.WriteRollup(ctx, &v3); err != nil {
		t.Fatal(err)
	}
	written, err := rt2.RateStored(ctx, "acme", "2026-10")
	if err != nil || len(written) != 1 || written[0].RollupVersion != 3 || written[0].PreviousInvoiceID != inv2.InvoiceID ||
		!written[0].AdjustmentUSD.IsZero() || written[0].BillingSeq != 3 || written[0].BilledBeforeUSD.StringFixed(2) != "0.27" {
		t.Fatalf("RateStored = %+v, %v; want the v3 invoice, adjusting the 0.27 billed by 0", written, err)
	}
	if written, err := rt2.RateStored(ctx, "", ""); err != nil || len(written) != 0 {
		t.Errorf("RateStored again = %+v, %v; want nothing", written, err)
	}
}

// checkEvidence runs the invoice's own reproduction: the SQL counts its MAU and the audit CSV
// has exactly that many devices, each of a billable app.
func checkEvidence(t *testing.T, store *chstore.Store, inv *chstore.Invoice) {
	t.Helper()
	ctx := context.Background()
	if n, err := store.CountBilled(ctx, inv); err != nil || n != inv.MAU {
		t.Errorf("%s: reproduction counts %d (%v), invoice MAU %d", inv.InvoiceID, n, err, inv.MAU)
	}
	if n, err := store.QueryCount(ctx, inv.MAUSQL); err != nil || n != inv.MAU {
		t.Errorf("%s: mau_sql %q counts %d (%v), invoice MAU %d", inv.InvoiceID, inv.MAUSQL, n, err, inv.MAU)
	}
	var buf bytes.Buffer
	n, err := store.WriteBilledDevices(ctx, inv, &buf)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(&buf).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if uint64(n) != inv.MAU || len(recs) != int(inv.MAU)+1 || strings.Join(recs[0], ",") != "guid,app_id,first_seen_at,first_event,mini_program_id,device_key" {
		t.Fatalf("%s: audit wrote %d devices, %d records (header %v), invoice MAU %d", inv.InvoiceID, n, len(recs), recs[0], inv.MAU)
	}
	seen := map[string]bool{}
	for _, rec := range recs[1:] {
		if rec[1] != "acme-app" || seen[rec[5]] || rec[3] != "open" {
			t.Fatalf("%s: audit row %v: want a distinct acme-app device", inv.InvoiceID, rec)
		}
		seen[rec[5]] = true
	}
}

// metric reads a counter from reg: the series with the given reason, or the first one.
func metric(t *testing.T, reg *prometheus.Registry, name, reason string) float64 {
	t.Helper()
	var labels []string
	if reason != "" {
		labels = []string{"reason", reason}
	}
	v, _, err := promtest.Value(reg, name, labels...)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestDefaultScheduleInvoicesBeforeDay3Ends checks the schedule: with the default grace, every
// month of a year in zones around the world closes (and is rated within seconds) at least a
// day before its invoice is due at the end of day 3 of the next month, DST changes included;
// the longest grace allowed still closes before it.
func TestDefaultScheduleInvoicesBeforeDay3Ends(t *testing.T) {
	for _, zone := range []string{"UTC", "Asia/Shanghai", "America/New_York", "Europe/Berlin", "Pacific/Auckland", "Pacific/Kiritimati", "Pacific/Pago_Pago", "Australia/Lord_Howe"} {
		loc, err := time.LoadLocation(zone)
		if err != nil {
			t.Fatal(err)
		}
		for m := (calendar.Month{Year: 2026, Month: time.January}); m.Year == 2026; m = m.Next() {
			due := DueBy(m, loc)
			if closeAt := m.End(loc).Add(count.DefaultGrace); due.Sub(closeAt) < 23*time.Hour {
				t.Errorf("%s %s: default close at %s leaves %s before the invoice is due at %s", zone, m, closeAt, due.Sub(closeAt), due)
			}
			if closeAt := m.End(loc).Add(count.MaxGrace); !closeAt.Before(due) {
				t.Errorf("%s %s: the longest grace closes at %s, not before the due time %s", zone, m, closeAt, due)
			}
		}
	}
}

func plans(t testing.TB) *plan.Catalog {
	t.Helper()
	c, err := plan.Default()
	if err != nil {
		t.Fatal(err)
	}
	return c
}
