package quota

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/maumeter/maumeter/pipeline/bus"
	"github.com/maumeter/maumeter/pipeline/chstore"
	"github.com/maumeter/maumeter/pkg/plan"
	"github.com/maumeter/maumeter/pkg/tenant"
)

func TestCrossed(t *testing.T) {
	at := time.Unix(1_900_000_000, 0)
	for _, tc := range []struct {
		name      string
		mau, incl int64
		hardCap   bool
		plan      string
		want      []Kind
	}{
		{"below 80 %", 159_999, 200_000, false, "pro", nil},
		{"at 80 %", 160_000, 200_000, false, "pro", []Kind{Quota80}},
		{"80 % rounds up", 8, 9, false, "pro", nil}, // 7.2 → 8 devices; 8 ≥ 8
		{"at the included MAU", 200_000, 200_000, false, "pro", []Kind{Quota80, Quota100}},
		{"far above", 5_000_000, 1_000_000, false, "enterprise", []Kind{Quota80, Quota100}},
		{"POC at 80 %", 160, 200, true, "poc_pro", []Kind{Quota80}},
		{"POC cap", 200, 200, true, "poc_pro", []Kind{Quota80, POCCap}},
		{"nothing included", 10, 0, false, "pro", nil},
		{"no plan", 10, 100, false, "", nil},
	} {
		b := plan.Bill{TenantID: "acme", Month: "2030-04", Plan: tc.plan, MAU: tc.mau, IncludedMAU: tc.incl}
		var got []Kind
		for _, n := range Crossed(b, tc.hardCap, at) {
			got = append(got, n.Kind)
			if n.ID != NoticeID("acme", "2030-04", n.Kind) || n.BillableMAU != tc.mau || n.Threshold > tc.mau {
				t.Errorf("%s: notice %+v", tc.name, n)
			}
		}
		if tc.name == "80 % rounds up" {
			b.MAU = 7
			if len(Crossed(b, false, at)) != 0 {
				t.Errorf("7 of 9 crossed 80 %%")
			}
			continue
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestSignature(t *testing.T) {
	at := time.Unix(1_900_000_000, 0)
	body := []byte(`{"id":"qn_1"}`)
	h := Signature("s3cret", at, body)
	if !Verify("s3cret", h, body, at.Add(time.Minute), 5*time.Minute) {
		t.Fatalf("%s does not verify", h)
	}
	for name, ok := range map[string]bool{
		"tampered body": Verify("s3cret", h, []byte(`{"id":"qn_2"}`), at, 5*time.Minute),
		"wrong secret":  Verify("other", h, body, at, 5*time.Minute),
		"too old":       Verify("s3cret", h, body, at.Add(10*time.Minute), 5*time.Minute),
		"no v1":         Verify("s3cret", "t=1900000000", body, at, 5*time.Minute),
	} {
		if ok {
			t.Errorf("%s verified", name)
		}
	}
}

// receiver is a tenant's webhook endpoint: it checks each signature and counts deliveries per
// notice id; the first failFirst attempts of every notice get 500.
type receiver struct {
	t         *testing.T
	secret    string
	failFirst int
	mu        sync.Mutex
	attempts  map[string]int
	got       map[string][]Notice // 2xx answered
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	if !Verify(r.secret, req.Header.Get("X-Maumeter-Signature"), body, time.Now(), 5*time.Minute) {
		r.t.Errorf("webhook with a bad signature %q", req.Header.Get("X-Maumeter-Signature"))
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var n Notice
	if err := json.Unmarshal(body, &n); err != nil || n.ID != req.Header.Get("X-Maumeter-Notice-Id") {
		r.t.Errorf("webhook body %s (id header %s): %v", body, req.Header.Get("X-Maumeter-Notice-Id"), err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attempts[n.ID]++
	if r.attempts[n.ID] <= r.failFirst {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	r.got[n.ID] = append(r.got[n.ID], n)
}

func (r *receiver) kinds() map[string][]Kind {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string][]Kind{}
	for _, ns := range r.got {
		for _, n := range ns {
			out[n.TenantID] = append(out[n.TenantID], n.Kind)
		}
	}
	for _, k := range out {
		slices.Sort(k)
	}
	return out
}

// TestNotifierOncePerCrossing runs the notifier on the real broker: a Pro tenant with 100
// included devices crosses 80 % then 100 %, a POC tenant reaches its cap, a tenant without a
// webhook crosses too. Every webhook arrives once, signed, after two failed attempts each; a
// restarted notifier publishes and delivers nothing again.
func TestNotifierOncePerCrossing(t *testing.T) {
	brokers := os.Getenv("MAUMETER_KAFKA_BROKERS")
	if brokers == "" {
		if os.Getenv("MAUMETER_REQUIRE_SERVICES") == "1" {
			t.Fatal("MAUMETER_KAFKA_BROKERS is required")
		}
		t.Skip("no Kafka (run make test)")
	}
	net := bus.Plain([]string{brokers})
	topic := fmt.Sprintf("quota-test-%d", time.Now().UnixNano())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := bus.EnsureTopic(ctx, net, bus.Topic{Name: topic, Partitions: 1, ReplicationFactor: 1,
		Configs: map[string]string{"cleanup.policy": "compact"}}, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	rcv := &receiver{t: t, secret: "whsec-test", failFirst: 2, attempts: map[string]int{}, got: map[string][]Notice{}}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	t.Setenv("QUOTA_TEST_SECRET", rcv.secret)
	now := time.Now
	purchased := now().AddDate(0, -2, 0).Format(time.DateOnly)
	plans, err := plan.Default()
	if err != nil {
		t.Fatal(err)
	}
	cat, err := plans.ParseTenants("tenants.yaml", fmt.Appendf(nil, `
tenants:
  - id: pro-small
    plan: pro
    purchased: %[1]s
    apps: [a]
    contract: {included_mau: 100, unit_price_usd: "0.015"}
    quota_webhook: {url: %[2]q, secret_env: QUOTA_TEST_SECRET}
  - id: poc
    plan: poc_pro
    purchased: %[1]s
    testing_apps: [p]
    quota_webhook: {url: %[2]q, secret_env: QUOTA_TEST_SECRET}
  - id: silent
    plan: pro
    purchased: %[1]s
    apps: [s]
    contract: {included_mau: 10, unit_price_usd: "0.015"}
`, purchased, srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	usage := map[string]map[string]uint64{"pro-small": {"a": 85}, "poc": {"p": 10}, "silent": {"s": 10}}
	usageFn := func(_ context.Context, tm chstore.TenantMonth) (map[string]uint64, error) {
		mu.Lock()
		defer mu.Unlock()
		return maps(usage[tm.TenantID]), nil
	}
	start := func() (stop func()) {
		n, err := New(Config{Kafka: net, Topic: topic, Interval: 50 * time.Millisecond, MinBackoff: 10 * time.Millisecond,
			MaxBackoff: 50 * time.Millisecond}, func() *tenant.Catalog { return cat }, plans, usageFn, now,
			slog.New(slog.DiscardHandler), prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		rctx, rcancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { n.Run(rctx); close(done) }()
		return func() { rcancel(); <-done }
	}
	waitFor := func(want map[string][]Kind) {
		t.Helper()
		for ctx.Err() == nil {
			if fmt.Sprint(rcv.kinds()) == fmt.Sprint(want) {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("deliveries %v, want %v", rcv.kinds(), want)
	}
	stop := start()
	waitFor(map[string][]Kind{"pro-small": {Quota80}})
	mu.Lock()
	usage["pro-small"]["a"], usage["poc"]["p"] = 130, 200
	mu.Unlock()
	want := map[string][]Kind{"pro-small": {Quota100, Quota80}, "poc": {POCCap, Quota80}}
	slices.Sort(want["pro-small"])
	slices.Sort(want["poc"])
	waitFor(want)
	stop()

	// A restart (a new leader): nothing is published or delivered again.
	stop = start()
	time.Sleep(500 * time.Millisecond) // ten looks
	stop()
	if fmt.Sprint(rcv.kinds()) != fmt.Sprint(want) {
		t.Fatalf("after a restart: deliveries %v, want %v", rcv.kinds(), want)
	}
	for id, a := range rcv.attempts {
		if a != rcv.failFirst+1 {
			t.Errorf("notice %s: %d attempts, want %d (2 refused, 1 delivered)", id, a, rcv.failFirst+1)
		}
	}
	// The topic holds one notice per crossing (silent's two included) and one delivery per webhook.
	notices, deliveries := 0, 0
	if err := bus.ReadAll(ctx, net, topic, func(m kafka.Message) error {
		switch string(m.Key[:2]) {
		case noticeKey:
			notices++
		case deliveryKey:
			deliveries++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if notices != 6 || deliveries != 4 {
		t.Errorf("topic: %d notices and %d deliveries, want 6 and 4", notices, deliveries)
	}
}

func maps(m map[string]uint64) map[string]uint64 {
	out := make(map[string]uint64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
