package count

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/maumeter/maumeter/internal/servicetest"
	"github.com/maumeter/maumeter/pipeline/bus"
	"github.com/maumeter/maumeter/pipeline/chstore"
	"github.com/maumeter/maumeter/pkg/event"
	"github.com/maumeter/maumeter/pkg/tenant"
)

// clock is an injected clock the test moves by hand.
type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time   { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) set(t time.Time)  { c.ns.Store(t.UnixNano()) }
func newClock(t time.Time) *clock { c := &clock{}; c.set(t); return c }
func services(t testing.TB) (string, string) {
	t.Helper()
	svc := servicetest.Require(t, servicetest.Kafka, servicetest.ClickHouse)
	brokers, ch := svc[0], svc[1]
	return brokers, ch
}

// rig is a counter on the real services with its own topics, group and database.
type rig struct {
	brokers  []string
	topic    string
	rollups  string
	group    string
	store    *chstore.Store
	catalog  *tenant.Catalog
	producer *bus.Producer
	clock    *clock
	log      *slog.Logger
}

func newRig(t testing.TB, start time.Time) *rig {
	t.Helper()
	brokers, ch := services(t)
	id := fmt.Sprintf("%s-%d", strings.ReplaceAll(t.Name(), "/", "."), time.Now().UnixNano())
	r := &rig{brokers: []string{brokers}, topic: "test.events." + id, rollups: "test.rollups." + id, group: "test-count-" + id,
		clock: newClock(start), log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var err error
	r.store, err = chstore.Open(ctx, chstore.Config{Addr: ch, Database: fmt.Sprintf("count_test_%d", time.Now().UnixNano())}, r.log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.store.Close() })
	if _, err := r.store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tp := range []bus.Topic{{Name: r.topic, Partitions: 4, ReplicationFactor: 1}, {Name: r.rollups, Partitions: 1, ReplicationFactor: 1, Configs: map[string]string{"cleanup.policy": "compact"}}} {
		if err := bus.EnsureTopic(ctx, bus.Plain(r.brokers), tp, r.log); err != nil {
			t.Fatal(err)
		}
	}
	r.catalog, err = tenant.Parse("t.yaml", []byte("tenants:\n  - {id: acme, plan: pro, purchased: 2026-01-01, time_zone: Asia/Shanghai, apps: [acme-app]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	r.producer = bus.NewProducer(bus.Plain(r.brokers), r.topic)
	t.Cleanup(func() { r.producer.Close() })
	return r
}

func (r *rig) closeConfig() CloseConfig {
	return CloseConfig{Grace: 48 * time.Hour, CheckInterval: 100 * time.Millisecond, AutoWindow: 35 * 24 * time.Hour, RollupsTopic: r.rollups}
}

// startCounter runs a counter until the test ends.
func (r *rig) startCounter(t *testing.T) *Counter {
	t.Helper()
	c, err := New(Config{Kafka: bus.Plain(r.brokers), Topic: r.topic, Group: r.group, FlushInterval: 100 * time.Millisecond, CheckpointInterval: 200 * time.Millisecond,
		SessionTimeout: 6 * time.Second, Close: r.closeConfig()}, r.catalog, r.store, r.clock.now, r.log, prometheus.NewRegistry())
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

func (r *rig) send(t *testing.T, guids []string, ts time.Time) {
	t.Helper()
	events := make([]event.Event, len(guids))
	for i, g := range guids {
		events[i] = event.Event{TenantID: "acme", AppID: "acme-app", GUID: g, Type: event.Open, MiniProgramID: "mp-1", TS: ts}
	}
	if err := r.producer.Produce(context.Background(), events); err != nil {
		t.Fatal(err)
	}
}

func (r *rig) waitCounted(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if lag, err := bus.Lag(context.Background(), bus.Plain(r.brokers), r.group, r.topic); err == nil && lag == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("counter did not catch up within a minute")
}

// rollup waits until the latest rollup of acme/month has version v, or fails after a while.
func (r *rig) rollup(t *testing.T, month string, v uint32) *chstore.Rollup {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var got *chstore.Rollup
	for time.Now().Before(deadline) {
		latest, err := r.store.LatestRollups(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if got = latest[tenantMonth{TenantID: "acme", Month: month}]; got != nil && got.Version >= v {
			return got
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no rollup v%d of acme %s after 30s (latest: %+v)", v, month, got)
	return nil
}

func guids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return out
}

// TestMonthCloseAndRestatement moves an injected clock across the end of October in Shanghai:
// the month must not close before its 48 h grace, must close right after it with the exact MAU
// and the cross-checks, must leave memory, and a late device must produce version 2 with MAU+1.
func TestMonthCloseAndRestatement(t *testing.T) {
	shanghai, _ := time.LoadLocation("Asia/Shanghai")
	endOct := time.Date(2026, 11, 1, 0, 0, 0, 0, shanghai)
	r := newRig(t, endOct.Add(-5*24*time.Hour))
	c := r.startCounter(t)
	r.send(t, guids("oct", 300), endOct.Add(-time.Hour))
	r.send(t, guids("oct", 300), endOct.Add(-time.Minute)) // the same devices again
	r.send(t, guids("nov", 50), endOct)                    // first instant of November
	r.waitCounted(t)
	ctx := context.Background()
	for month, want := range map[string]uint64{"2026-10": 300, "2026-11": 50} {
		if got, err := c.MAU(ctx, "acme", month); err != nil || got != want {
			t.Errorf("real-time MAU %s = %d, %v; want %d", month, got, err, want)
		}
	}

	if n, d, err := c.MAUDetail(ctx, "acme", "2026-11"); err != nil || n != 50 || d.Closed || d.HLLEstimate < 48 || d.HLLEstimate > 52 || d.ByApp["acme-app"] < 48 {
		t.Errorf("MAUDetail November = %d %+v %v; want 50, open, HLL and acme-app about 50", n, d, err)
	}

	// One second before the grace ends: nothing closes.
	r.clock.set(endOct.Add(48*time.Hour - time.Second))
	time.Sleep(time.Second)
	if latest, err := r.store.LatestRollups(ctx); err != nil || len(latest) != 0 {
		t.Fatalf("rollups before the grace ended: %v, %v", latest, err)
	}

	r.clock.set(endOct.Add(48 * time.Hour))
	v1 := r.rollup(t, "2026-10", 1)
	if v1.Kind != "close" || v1.MAU != 300 || v1.MAUMemory != 300 || v1.MAUByApp["acme-app"] != 300 {
		t.Errorf("v1 = %+v, want close with MAU 300 (memory 300, acme-app 300)", v1)
	}
	if d := int64(v1.HLLEstimate) - 300; d < -15 || d > 15 {
		t.Errorf("v1 HLL estimate %d is far from 300", v1.HLLEstimate)
	}
	if v1.DAU["2026-10-31"] != 300 && (v1.DAU["2026-10-31"] < 290 || v1.DAU["2026-10-31"] > 310) {
		t.Errorf("v1 DAU on 2026-10-31 = %d, want about 300 (%v)", v1.DAU["2026-10-31"], v1.DAU)
	}
	if latest, _ := r.store.LatestRollups(ctx); latest[tenantMonth{TenantID: "acme", Month: "2026-11"}] != nil {
		t.Error("November closed along with October")
	}
	// The closed month leaves memory.
	waitFor(t, "October's sets to leave memory", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, p := range c.owned {
			p.mu.Lock()
			_, held := p.months[tenantMonth{TenantID: "acme", Month: "2026-10"}]
			p.mu.Unlock()
			if held {
				return false
			}
		}
		return true
	})

	// Late: one new device and one known device of October.
	r.send(t, []string{"oct-late", "oct-7"}, endOct.Add(-2*time.Hour))
	v2 := r.rollup(t, "2026-10", 2)
	if v2.Kind != "restatement" || v2.MAU != 301 {
		t.Errorf("v2 = %+v, want restatement with MAU 301", v2)
	}
	if got, err := c.MAU(ctx, "acme", "2026-10"); err != nil || got != 301 {
		waitFor(t, "MAU 301 from the API", func() bool { got, err = c.MAU(ctx, "acme", "2026-10"); return got == 301 })
	}
	waitFor(t, "the API to see version 2", func() bool {
		_, d, err := c.MAUDetail(ctx, "acme", "2026-10")
		return err == nil && d.Closed && d.RollupVersion == 2 && d.ByApp["acme-app"] == 301
	})
	time.Sleep(500 * time.Millisecond)
	if latest, _ := r.store.LatestRollups(ctx); latest[tenantMonth{TenantID: "acme", Month: "2026-10"}].Version != 2 {
		t.Errorf("more versions without new devices: %+v", latest[tenantMonth{TenantID: "acme", Month: "2026-10"}])
	}

	// Both versions were published, keyed tenant/month, for the rater.
	got := readRollups(t, r.brokers, r.rollups, 2)
	if got[0].Version != 1 || got[1].Version != 2 || got[1].MAU != 301 {
		t.Errorf("published rollups %+v, want v1 then v2 with MAU 301", got)
	}
}

// TestCloseWaitsForCatchUp: a close must wait until every partition is consumed past the
// offsets Kafka held when the close began.
func TestCloseWaitsForCatchUp(t *testing.T) {
	shanghai, _ := time.LoadLocation("Asia/Shanghai")
	endOct := time.Date(2026, 11, 1, 0, 0, 0, 0, shanghai)
	r := newRig(t, endOct.Add(73*time.Hour))
	// No counter runs yet: events wait in Kafka.
	r.send(t, guids("oct", 120), endOct.Add(-time.Hour))
	closer, err := NewCloser(r.closeConfig(), bus.Plain(r.brokers), r.topic, r.group, r.catalog, r.store, r.clock.now, r.log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	_, err = closer.Close(ctx, tenantMonth{TenantID: "acme", Month: "2026-10"})
	cancel()
	if !errors.Is(err, ErrNotCaughtUp) {
		t.Fatalf("Close with no counter = %v, want ErrNotCaughtUp", err)
	}
	// Automatic closing is off (a 1 ns window) so only this Close writes the rollup.
	c, err := New(Config{Kafka: bus.Plain(r.brokers), Topic: r.topic, Group: r.group, FlushInterval: 100 * time.Millisecond, CheckpointInterval: 200 * time.Millisecond,
		SessionTimeout: 6 * time.Second, Close: CloseConfig{AutoWindow: time.Nanosecond, RollupsTopic: r.rollups}},
		r.catalog, r.store, r.clock.now, r.log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(context.Background())
	defer stop()
	go c.Run(rctx)
	ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rollup, err := closer.Close(ctx, tenantMonth{TenantID: "acme", Month: "2026-10"})
	if err != nil {
		t.Fatal(err)
	}
	if rollup == nil || rollup.MAU != 120 || rollup.Version != 1 {
		t.Errorf("rollup %+v, want v1 with MAU 120", rollup)
	}
	// Closing again with nothing new writes nothing.
	if again, err := closer.Close(ctx, tenantMonth{TenantID: "acme", Month: "2026-10"}); err != nil || again != nil {
		t.Errorf("second Close = %+v, %v; want nil, nil", again, err)
	}
	if _, err := closer.Close(ctx, tenantMonth{TenantID: "acme", Month: "2026-11"}); !errors.Is(err, ErrMonthNotOver) {
		t.Errorf("Close of November on Nov 4 = %v, want ErrMonthNotOver", err)
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func readRollups(t *testing.T, brokers []string, topic string, n int) []chstore.Rollup {
	t.Helper()
	rd := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: 0, MaxWait: 100 * time.Millisecond})
	defer rd.Close()
	var out []chstore.Rollup
	for len(out) < n {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		m, err := rd.ReadMessage(ctx)
		cancel()
		if err != nil {
			t.Fatalf("read %s after %d rollups: %v", topic, len(out), err)
		}
		if string(m.Key) != "acme/2026-10" {
			t.Errorf("rollup key %q, want acme/2026-10", m.Key)
		}
		var r chstore.Rollup
		if err := json.Unmarshal(m.Value, &r); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}
