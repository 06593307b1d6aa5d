package caps

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/maumeter/maumeter/internal/servicetest"
	"github.com/maumeter/maumeter/pipeline/bus"
	"github.com/maumeter/maumeter/pipeline/chstore"
	"github.com/maumeter/maumeter/pkg/event"
)

// services are the real Kafka and ClickHouse of `make test`.
func services(t *testing.T) ([]string, string) {
	t.Helper()
	svc := servicetest.Require(t, servicetest.Kafka, servicetest.ClickHouse)
	b, ch := svc[0], svc[1]
	brokers, err := bus.SplitBrokers(b)
	if err != nil {
		t.Fatal(err)
	}
	return brokers, ch
}

func testLog() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func capsTopic(t *testing.T, ctx context.Context, brokers []string) string {
	t.Helper()
	name := fmt.Sprintf("test.caps.%s.%d", strings.ReplaceAll(t.Name(), "/", "."), time.Now().UnixNano())
	err := bus.EnsureTopic(ctx, bus.Plain(brokers), bus.Topic{Name: name, Partitions: 1, ReplicationFactor: 1,
		Configs: map[string]string{"cleanup.policy": "compact"}}, testLog())
	if err != nil {
		t.Fatal(err)
	}
	return name
}

// runState follows topic until the test ends.
func runState(t *testing.T, brokers []string, topic string, now func() time.Time) (*State, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cat, plans := testCatalogs(t)
	s, err := NewState(StateConfig{Kafka: bus.Plain(brokers), Topic: topic, MaxWait: 200 * time.Millisecond}, cat, plans, now, testLog(), reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return s, reg
}

// waitFor polls cond every 10 ms until it holds or the deadline passes (a generous bound for a
// loaded machine, not a performance target).
func waitFor(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > time.Minute {
			t.Fatalf("%s: not within a minute", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

func knownDevices(s *State, tm tenantMonth) int64 { return s.Counted(tm.TenantID, tm.Month) }

// TestPublisherToGateway: devices written to the real ClickHouse reach a gateway's state through
// the real Kafka, and the gateway answers from memory; a gateway started later rebuilds the same
// state from the compacted topic.
func TestPublisherToGateway(t *testing.T) {
	brokers, ch := services(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	topic := capsTopic(t, ctx, brokers)
	store, err := chstore.Open(ctx, chstore.Config{Addr: ch, Database: fmt.Sprintf("caps_test_%d", time.Now().UnixNano())}, testLog())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if _, err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	cat, plans := testCatalogs(t)
	clk := &clock{t: testNow}
	pubReg := prometheus.NewRegistry()
	pub, err := NewPublisher(PublisherConfig{Kafka: bus.Plain(brokers), Topic: topic, Interval: 100 * time.Millisecond}, cat, plans, store, clk.now, testLog(), pubReg)
	if err != nil {
		t.Fatal(err)
	}
	pctx, stopPub := context.WithCancel(ctx)
	pubDone := make(chan struct{})
	go func() { pub.Run(pctx); close(pubDone) }()
	defer func() { stopPub(); <-pubDone }()
	gw, gwReg := runState(t, brokers, topic, clk.now)
	waitFor(t, "gateway reads the topic to its end", func() bool { return gw.Ready(ctx) == nil })

	initech := tenantMonth{TenantID: "initech", Month: "2026-11"}
	row := func(tenantID, app, guid, month string) chstore.DeviceRow {
		return chstore.DeviceRow{TenantID: tenantID, Month: month, AppID: app, Key: event.KeyOf(tenantID, app, guid), GUID: guid,
			FirstSeenAt: testNow, FirstEvent: event.Open, MiniProgramID: "mp"}
	}
	insert := func(rows ...chstore.DeviceRow) {
		t.Helper()
		if err := store.InsertDevices(ctx, rows); err != nil {
			t.Fatal(err)
		}
	}
	counted := guids("counted", 203)
	var rows []chstore.DeviceRow
	for _, g := range counted[:199] {
		rows = append(rows, row("initech", "initech-poc", g, "2026-11"))
	}
	// A pro tenant's devices and an old month of initech: never published.
	rows = append(rows, row("acme", "acme-super", "a", "2026-11"), row("initech", "initech-poc", "old", "2026-08"))
	// grown bought Pro on November 20 beside its POC purchase: November 1-19 are capped, so its
	// November is published, at the POC's cap; December, Pro's on every day, is not.
	rows = append(rows, row("grown", "grown-poc", "g1", "2026-11"), row("grown", "grown-super", "g2", "2026-11"), row("grown", "grown-super", "g3", "2026-12"))
	insert(rows...)
	waitFor(t, "199 devices published", func() bool { return knownDevices(gw, initech) == 199 })
	waitFor(t, "grown's November published", func() bool { return knownDevices(gw, tenantMonth{TenantID: "grown", Month: "2026-11"}) == 2 })
	if got := metric(t, gwReg, "maumeter_caps_state_capped_tenant_months", ""); got != 0 {
		t.Errorf("gateway: %v capped tenant-months at 199 devices, want 0", got)
	}
	if gw.month(tenantMonth{TenantID: "acme", Month: "2026-11"}, false) != nil || gw.month(tenantMonth{TenantID: "initech", Month: "2026-08"}, false) != nil {
		t.Error("the state of a pro tenant or of a month outside the ingest window was published")
	}

	// The 200th device: the month is full.
	insert(row("initech", "initech-poc", counted[199], "2026-11"))
	latency := waitFor(t, "the 200th device published", func() bool { return knownDevices(gw, initech) == 200 })
	t.Logf("cap state at the gateway %s after the 200th device reached mau_devices (publisher interval 100 ms)", latency.Round(time.Millisecond))
	// The publisher sets its gauge after the check that published: the gateway may be first.
	waitFor(t, "the publisher counts 1 capped tenant-month", func() bool {
		return metric(t, pubReg, "maumeter_caps_capped_tenant_months", "") == 1
	})
	if gw.month(tenantMonth{TenantID: "grown", Month: "2026-12"}, false) != nil {
		t.Error("grown's December, a month without a capped day, was published")
	}
	check := func(s *State, guid string, want bool) {
		t.Helper()
		if got := s.Capped(evt("initech", "initech-poc", guid), "2026-11"); got != want {
			t.Errorf("Capped(%s) = %v, want %v", guid, got, want)
		}
	}
	check(gw, counted[0], false)
	check(gw, counted[199], false)
	check(gw, "new-1", true)
	if s := gw.Capped(evt("initech", "initech-poc", "new-1"), "2026-12"); s {
		t.Error("2026-12 capped: a new month must start uncapped")
	}

	// Devices that reached mau_devices past the cap (an import, or another gateway's) are
	// republished and keep working.
	insert(row("initech", "initech-poc", counted[200], "2026-11"), row("initech", "initech-poc", counted[201], "2026-11"))
	waitFor(t, "the overshoot published", func() bool { return knownDevices(gw, initech) == 202 })
	check(gw, counted[201], false)
	check(gw, "new-2", true)

	// A gateway started now has the same answers from the compacted topic alone.
	late, _ := runState(t, brokers, topic, clk.now)
	waitFor(t, "a late gateway reads the topic to its end", func() bool { return late.Ready(ctx) == nil })
	if got := knownDevices(late, initech); got != 202 {
		t.Fatalf("late gateway knows %d devices, want 202", got)
	}
	check(late, counted[5], false)
	check(late, counted[201], false)
	check(late, "new-3", true)
	if got := metric(t, gwReg, "maumeter_caps_state_fetch_errors_total", ""); got != 0 {
		t.Errorf("%v fetch errors", got)
	}
}

// TestStateOutlivesKafka: a gateway that starts before the caps topic exists is ready (there is
// nothing to miss) and picks the topic up once created; when Kafka goes away it keeps answering
// from the last known state, counting the failed reads. It runs on the in-process broker, which
// the test can stop without disturbing other tests.
func TestStateOutlivesKafka(t *testing.T) {
	k, err := bus.StartEmbedded(0, "")
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			k.Close()
		}
	}()
	brokers := k.Brokers()
	clk := &clock{t: testNow}
	topic := "caps.later"
	gw, reg := runState(t, brokers, topic, clk.now)
	waitFor(t, "ready without a topic", func() bool { return gw.Ready(context.Background()) == nil })

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := bus.EnsureTopic(ctx, bus.Plain(brokers), bus.Topic{Name: topic, Partitions: 1, ReplicationFactor: 1,
		Configs: map[string]string{"cleanup.policy": "compact"}}, testLog()); err != nil {
		t.Fatal(err)
	}
	w := bus.NewJSONPublisher(bus.Plain(brokers), topic, bus.CapsSchema)
	msg := Message{TenantID: "tiny", Month: "2026-11", Plan: "poc_enterprise", Cap: 3, Devices: 3, Capped: true,
		DeviceKeys: devices("tiny", "tiny-poc", "a", "b", "c"), AsOf: testNow}
	if err := w.Publish(ctx, Key(tenantMonth{TenantID: "tiny", Month: "2026-11"}), msg); err != nil {
		t.Fatal(err)
	}
	w.Close()
	tiny := tenantMonth{TenantID: "tiny", Month: "2026-11"}
	waitFor(t, "the state of the new topic", func() bool { return knownDevices(gw, tiny) == 3 })

	k.Close()
	stopped = true
	waitFor(t, "a failed read counted", func() bool { return metric(t, reg, "maumeter_caps_state_fetch_errors_total", "") > 0 })
	if gw.Capped(evt("tiny", "tiny-poc", "b"), "2026-11") || !gw.Capped(evt("tiny", "tiny-poc", "d"), "2026-11") {
		t.Error("with Kafka gone: want b let in and d refused, from the last known state")
	}
	clk.advance(time.Minute)
	if age := metric(t, reg, "maumeter_caps_state_age_seconds", ""); age < 60 {
		t.Errorf("state age %vs a minute into the outage, want ≥ 60", age)
	}
}
