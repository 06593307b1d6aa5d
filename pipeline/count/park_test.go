package count

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/maumeter/maumeter/internal/kafkatest"
	"github.com/maumeter/maumeter/internal/promtest"
	"github.com/maumeter/maumeter/pipeline/bus"
	"github.com/maumeter/maumeter/pkg/event"
	"github.com/maumeter/maumeter/pkg/tenant"
)

func eventMessage(t testing.TB, e event.Event, headers ...kafka.Header) kafka.Message {
	t.Helper()
	v, err := e.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	if headers == nil {
		headers = []kafka.Header{{Key: event.SchemaHeader, Value: []byte(event.SchemaV1)}}
	}
	return kafka.Message{Topic: "ev", Partition: 3, Offset: 41, Key: e.PartitionKey(), Value: v, Headers: headers}
}

// TestClassify: what the counter does with each kind of record, under a catalogue that knows
// tenant acme with apps a1 (production) and qa (testing).
func TestClassify(t *testing.T) {
	cat, err := tenant.Parse("t.yaml", []byte("tenants:\n  - {id: acme, plan: pro, purchased: 2026-01-01, apps: [a1], testing_apps: [qa]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Date(2026, 10, 3, 12, 0, 0, 0, time.UTC)
	ev := func(tenantID, app string) event.Event {
		return event.Event{TenantID: tenantID, AppID: app, GUID: "g1", Type: event.Open, MiniProgramID: "mp", TS: ts}
	}
	f := func(name string, m kafka.Message, want fate, reason string) {
		t.Helper()
		v := classify(m, cat)
		if v.fate != want || v.reason != reason {
			t.Errorf("%s: fate %d reason %q (err %v), want %d %q", name, v.fate, v.reason, v.err, want, reason)
		}
		if want == fateDead && v.err == nil {
			t.Errorf("%s: dead-lettered without an error", name)
		}
		if want == fateCount && (v.t == nil || v.t.ID != "acme" || v.e.GUID != "g1") {
			t.Errorf("%s: counted without its tenant or event: %+v", name, v)
		}
	}
	f("known", eventMessage(t, ev("acme", "a1")), fateCount, "")
	f("testing app", eventMessage(t, ev("acme", "qa")), fateCount, "")
	f("unknown tenant", eventMessage(t, ev("newco", "n1")), fatePark, ReasonUnknownTenant)
	f("unknown app", eventMessage(t, ev("acme", "a2")), fatePark, ReasonUnknownApp)
	f("no schema header", eventMessage(t, ev("acme", "a1"), kafka.Header{Key: "other", Value: []byte("x")}), fateDead, ReasonUnknownSchema)
	f("other schema", eventMessage(t, ev("acme", "a1"), kafka.Header{Key: event.SchemaHeader, Value: []byte("maumeter.event.v9")}), fateDead, ReasonUnknownSchema)
	garbage := eventMessage(t, ev("acme", "a1"))
	garbage.Value = []byte("placeholder")
	f("garbage", garbage, fateDead, ReasonUndecodable)
	empty := eventMessage(t, ev("acme", "a1"))
	empty.Value = nil
	f("empty value", empty, fateDead, ReasonUndecodable)
}

// TestSideRecords: a parked or dead-lettered record keeps the source's key, value and own
// headers and adds its coordinates and reason; a replay strips exactly what was added.
func TestSideRecords(t *testing.T) {
	m := eventMessage(t, event.Event{TenantID: "newco", AppID: "n1", GUID: "g", Type: event.Search, TS: time.Unix(1e9, 0)})
	park := sideRecordOf(m, verdict{fate: fatePark, reason: ReasonUnknownTenant}, "parked", "dlq")
	if park.dead || park.msg.Topic != "parked" || string(park.msg.Key) != string(m.Key) || string(park.msg.Value) != string(m.Value) {
		t.Fatalf("parked record %+v", park)
	}
	src, err := bus.SourceOf(park.msg.Headers)
	if err != nil || src != (bus.Source{Topic: "ev", Partition: 3, Offset: 41}) {
		t.Errorf("source %+v, %v; want ev/3@41", src, err)
	}
	if r, _ := bus.Header(park.msg.Headers, bus.HeaderReason); r != ReasonUnknownTenant {
		t.Errorf("reason header %q", r)
	}
	if _, ok := bus.Header(park.msg.Headers, bus.HeaderError); ok {
		t.Error("a parked record carries an error header")
	}
	own := bus.OwnHeaders(park.msg.Headers)
	if len(own) != 1 || own[0].Key != event.SchemaHeader || string(own[0].Value) != event.SchemaV1 {
		t.Errorf("own headers after a round trip: %v, want the schema header only", own)
	}
	dead := sideRecordOf(m, verdict{fate: fateDead, reason: ReasonUndecodable, err: errors.New("boom")}, "parked", "dlq")
	if !dead.dead || dead.msg.Topic != "dlq" {
		t.Fatalf("DLQ record %+v", dead)
	}
	if e, _ := bus.Header(dead.msg.Headers, bus.HeaderError); e != "boom" {
		t.Errorf("error header %q, want boom", e)
	}
	re := bus.Retag(park.msg.Headers, ReasonUndecodable, "later")
	if src, err := bus.SourceOf(re); err != nil || src.Offset != 41 {
		t.Errorf("retagged source %+v, %v", src, err)
	}
	if r, _ := bus.Header(re, bus.HeaderReason); r != ReasonUndecodable {
		t.Errorf("retagged reason %q", r)
	}
	if _, err := bus.SourceOf(nil); err == nil {
		t.Error("SourceOf without headers did not fail")
	}
}

// parkRig is a rig whose counter has its own parked and DLQ topics.
type parkRig struct {
	*rig
	parked, dlq string
}

func newParkRig(t *testing.T, start time.Time) *parkRig {
	t.Helper()
	r := &parkRig{rig: newRig(t, start)}
	r.parked, r.dlq = r.topic+".parked", r.topic+".dlq"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, name := range []string{r.parked, r.dlq} {
		if err := bus.EnsureTopic(ctx, bus.Plain(r.brokers), bus.Topic{Name: name, Partitions: 1, ReplicationFactor: 1}, r.log); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

func (r *parkRig) startCounter(t *testing.T, reg *prometheus.Registry) *Counter {
	t.Helper()
	c, err := New(Config{Kafka: bus.Plain(r.brokers), Topic: r.topic, Group: r.group, FlushInterval: 100 * time.Millisecond, CheckpointInterval: 200 * time.Millisecond,
		SessionTimeout: 6 * time.Second, Close: r.closeConfig(), ParkedTopic: r.parked, DLQTopic: r.dlq, ParkedInterval: 200 * time.Millisecond},
		r.catalog, r.store, r.clock.now, r.log, reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("counter: %v", err)
		}
	})
	return c
}

func (r *parkRig) produce(t *testing.T, tenantID, app string, guids []string, ts time.Time) {
	t.Helper()
	events := make([]event.Event, len(guids))
	for i, g := range guids {
		events[i] = event.Event{TenantID: tenantID, AppID: app, GUID: g, Type: event.Open, MiniProgramID: "mp-1", TS: ts}
	}
	if err := r.producer.Produce(context.Background(), events); err != nil {
		t.Fatal(err)
	}
}

func metricValue(t *testing.T, reg prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	v, _, err := promtest.Value(reg, name, labels...)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestParkedUntilKnownThenCountedOnce: events of a tenant and of an app the counter's catalogue
// does not know are parked (the partitions go on and commit past them), a garbage record goes
// to the DLQ; once the catalogue knows the tenant and the app their devices are counted
// exactly once, in the partition their key selects, and the events of a tenant still unknown
// stay parked without holding them back. A month that closed meanwhile is restated.
func TestParkedUntilKnownThenCountedOnce(t *testing.T) {
	shanghai, _ := time.LoadLocation("Asia/Shanghai")
	endOct := time.Date(2026, 11, 1, 0, 0, 0, 0, shanghai)
	r := newParkRig(t, endOct.Add(47*time.Hour)) // October closes once the clock passes 48 h
	reg := prometheus.NewRegistry()
	c := r.startCounter(t, reg)
	ctx := context.Background()
	nov := endOct.Add(time.Hour)
	r.produce(t, "acme", "acme-app", guids("known", 40), nov)
	r.produce(t, "acme", "acme-app", guids("oct", 10), endOct.Add(-time.Hour))
	r.produce(t, "newco", "newco-app", guids("new", 60), nov)
	r.produce(t, "newco", "newco-app", guids("new", 60), nov) // sent twice
	r.produce(t, "ghost", "ghost-app", guids("ghost", 5), nov)
	r.produce(t, "acme", "acme-late-app", guids("lateapp", 7), nov)
	r.produce(t, "acme", "acme-late-app", guids("lateapp-oct", 3), endOct.Add(-2*time.Hour))
	if _, err := kafkatest.Append(ctx, r.brokers, r.topic, 1, 1); err != nil {
		t.Fatal(err)
	}
	r.produce(t, "acme", "acme-app", guids("after", 5), nov) // behind the garbage, on every partition
	r.waitCounted(t)
	if got, err := c.MAU(ctx, "acme", "2026-11"); err != nil || got != 45 {
		t.Fatalf("acme November MAU = %d, %v; want 45 (the parked app not yet)", got, err)
	}
	waitFor(t, "the parked and DLQ metrics", func() bool {
		return metricValue(t, reg, "maumeter_count_parked_total", "reason", ReasonUnknownTenant) == 125 &&
			metricValue(t, reg, "maumeter_count_parked_total", "reason", ReasonUnknownApp) == 10 &&
			metricValue(t, reg, "maumeter_count_dlq_total", "reason", ReasonUnknownSchema) == 1
	})
	if n, err := c.ParkedWaiting(ctx); err != nil || n != 135 {
		t.Fatalf("parked waiting = %d, %v; want 135", n, err)
	}
	// October closes with what the counter knows: acme-app's 10 devices.
	r.clock.set(endOct.Add(49 * time.Hour))
	v1 := r.rollup(t, "2026-10", 1)
	if v1.MAU != 10 {
		t.Fatalf("October v1 MAU = %d, want 10", v1.MAU)
	}
	// The DLQ holds the garbage with its source coordinates.
	var dead []kafka.Message
	if err := bus.ReadAll(ctx, bus.Plain(r.brokers), r.dlq, func(m kafka.Message) error { dead = append(dead, m); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(dead) != 1 || string(dead[0].Value) != "placeholder" {
		t.Fatalf("DLQ = %v, want the one placeholder", dead)
	}
	if src, err := bus.SourceOf(dead[0].Headers); err != nil || src.Topic != r.topic || src.Partition != 1 {
		t.Errorf("DLQ source %+v, %v", src, err)
	}

	// The catalogue learns newco and acme's new app; ghost stays unknown.
	cat, err := tenant.Parse("t.yaml", []byte(`tenants:
  - {id: acme, plan: pro, purchased: 2026-01-01, time_zone: Asia/Shanghai, apps: [acme-app, acme-late-app]}
  - {id: newco, plan: pro, purchased: 2026-01-01, time_zone: Asia/Shanghai, apps: [newco-app]}
`))
	if err != nil {
		t.Fatal(err)
	}
	c.SetCatalog(cat)
	waitFor(t, "the parked events to be replayed", func() bool {
		n, err := c.ParkedWaiting(ctx)
		return err == nil && n == 5 && metricValue(t, reg, "maumeter_count_parked_replayed_total") == 130
	})
	r.waitCounted(t)
	for _, want := range []struct {
		tenant, month string
		mau           uint64
	}{{"acme", "2026-11", 52}, {"newco", "2026-11", 60}} {
		waitFor(t, fmt.Sprintf("%s %s MAU %d", want.tenant, want.month, want.mau), func() bool {
			got, err := c.MAU(ctx, want.tenant, want.month)
			return err == nil && got == want.mau
		})
		if n, err := r.store.MAU(ctx, want.tenant, want.month); err != nil || n != want.mau {
			t.Errorf("%s %s uniqExact = %d, %v; want %d", want.tenant, want.month, n, err, want.mau)
		}
	}
	// October took the late path: a restatement with acme-late-app's 3 devices.
	if v2 := r.rollup(t, "2026-10", 2); v2.MAU != 13 || v2.Kind != "restatement" {
		t.Errorf("October v2 = %+v, want a restatement with MAU 13", v2)
	}
	// Every replayed device sits in the partition its event was first produced to (the
	// source partition the parked record names), the only one whose set may hold it.
	source := map[event.DeviceKey]int{}
	err = bus.ReadAll(ctx, bus.Plain(r.brokers), r.parked, func(m kafka.Message) error {
		e, err := event.Decode(m.Value)
		if err != nil {
			return err
		}
		src, err := bus.SourceOf(m.Headers)
		if err != nil {
			return err
		}
		if e.TenantID != "ghost" {
			if p, seen := source[e.Key()]; seen && p != src.Partition {
				t.Errorf("%s parked from partitions %d and %d", e.GUID, p, src.Partition)
			}
			source[e.Key()] = src.Partition
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for p := range int32(4) {
		err := r.store.PartitionDevices(ctx, p, func(tenantID, month string, k event.DeviceKey) {
			if want, ok := source[k]; ok {
				found++
				if int32(want) != p {
					t.Errorf("%s %s device %v counted in partition %d, produced to %d", tenantID, month, k, p, want)
				}
			}
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if found != 60+7 {
		// November's open-month devices (October's closed month is not rebuilt into sets).
		t.Errorf("found %d replayed devices in open months' partitions, want 67", found)
	}
	// ghost stays parked; further passes write nothing while the catalogue stays the same.
	end, err := bus.EndOffsets(ctx, bus.Plain(r.brokers), r.parked)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // five passes
	end2, _ := bus.EndOffsets(ctx, bus.Plain(r.brokers), r.parked)
	if end2[0] != end[0] {
		t.Errorf("passes with nothing to replay grew the parked topic from %d to %d records", end[0], end2[0])
	}
	if n, _ := c.ParkedWaiting(ctx); n != 5 {
		t.Errorf("parked waiting = %d, want ghost's 5", n)
	}
}
