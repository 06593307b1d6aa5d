package main

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/maumeter/maumeter/internal/kafkatest"
	"github.com/maumeter/maumeter/internal/servicetest"
	"github.com/maumeter/maumeter/pipeline/bus"
	"github.com/maumeter/maumeter/pipeline/chstore"
	"github.com/maumeter/maumeter/pkg/event"
	"github.com/maumeter/maumeter/pkg/tenant"
)

// syncBuffer is a bytes.Buffer safe for a role's logger and the test reading it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func get(url string) (int, string) { return getKey(url, "") }

// getKey GETs url, with key as its bearer token when not empty.
func getKey(url, key string) (int, string) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, err.Error()
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func eventually(t *testing.T, what string, d time.Duration, ok func() bool) {
	t.Helper()
	timeout := time.After(d) // a duration, not a date: the test's calendar is its fixed clock
	for !ok() {
		select {
		case <-timeout:
			t.Fatalf("timed out after %s waiting for %s", d, what)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// TestLostOffsetsStopThePartitionUntilAccepted, on the real broker and ClickHouse: a counter
// counts batch A and stops; batches B and C arrive; B's records of partition P are deleted
// (DeleteRecords, as retention would) before any counter read them. The next counter stops P
// and reports exactly [committed, log start) in its metric, its error log and its /readyz,
// while the other partitions count on; `maumeter offsets status` shows it; after `maumeter
// offsets accept-loss --partition P` (recorded in kafka_offset_losses) the counter resumes P,
// and mau_devices holds exactly every device but the deleted ones.
func TestLostOffsetsStopThePartitionUntilAccepted(t *testing.T) {
	svc := servicetest.Require(t, servicetest.Kafka, servicetest.ClickHouse)
	brokers := []string{svc[0]}
	id := rand.Uint64()
	topic := fmt.Sprintf("test.lost.%d", id)
	group := fmt.Sprintf("test-lost-%d", id)
	db := fmt.Sprintf("cmd_lost_test_%d", id)
	tenants := filepath.Join(t.TempDir(), "tenants.yaml")
	// An operator key: /readyz shows its checks' details to operators only.
	opKey, opEntry, err := tenant.NewOperatorKey(crand.Reader, time.Date(2026, 10, 20, 12, 0, 0, 0, time.UTC)) // the test's fixed clock
	if err != nil {
		t.Fatal(err)
	}
	catalogue := fmt.Sprintf("tenants:\n  - {id: acme, plan: pro, purchased: 2026-01-01, apps: [acme-app]}\noperator_keys:\n  - {id: %q, sha256: %q, created: %q}\n",
		opEntry.ID, opEntry.SHA256, opEntry.Created)
	if err := os.WriteFile(tenants, []byte(catalogue), 0o644); err != nil {
		t.Fatal(err)
	}
	// A fixed clock: the events' month is fixed, and nothing closes (the month is not over).
	now := func() time.Time { return time.Date(2026, 10, 20, 12, 0, 0, 0, time.UTC) }
	common := []string{"--kafka-brokers", svc[0], "--clickhouse-addr", svc[1], "--clickhouse-database", db,
		"--events-topic", topic, "--tenants", tenants, "--replication-factor", "1",
		"--rollups-topic", topic + ".rollups", "--caps-topic", topic + ".caps"}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	if code := run(ctx, now, append([]string{"migrate", "--events-partitions", "4"}, common...), &out, &errb); code != 0 {
		t.Fatalf("migrate: exit %d: %s", code, errb.String())
	}
	if st, err := bus.DescribeTopic(ctx, bus.Plain(brokers), topic); err != nil || st.Retention != 888*time.Hour || st.MinInSyncReplicas != 1 || st.CleanupPolicy != "delete" {
		t.Fatalf("created events topic: %+v, %v; want retention 888h (close window + grace), min ISR 1, delete", st, err)
	}

	producer := bus.NewProducer(bus.Plain(brokers), topic)
	defer producer.Close()
	ts := time.Date(2026, 10, 10, 0, 0, 0, 0, time.UTC)
	send := func(prefix string, n int) map[int]int { // devices per partition
		perPart := map[int]int{}
		events := make([]event.Event, n)
		for i := range events {
			events[i] = event.Event{TenantID: "acme", AppID: "acme-app", GUID: fmt.Sprintf("%s-%d", prefix, i), Type: event.Open, MiniProgramID: "mp", TS: ts}
			perPart[bus.EventsBalancer.Balance(kafka.Message{Key: events[i].PartitionKey()}, 0, 1, 2, 3)]++
		}
		if err := producer.Produce(ctx, events); err != nil {
			t.Fatal(err)
		}
		return perPart
	}
	countArgs := append([]string{"count", "--count-group", group, "--flush-interval", "100ms", "--checkpoint-interval", "200ms",
		"--close-interval", "200ms", "--session-timeout", "6s"}, common...)
	// addr serves /readyz, admin /metrics.
	var admin string
	startCount := func(stderr io.Writer) (addr string, stop func()) {
		addr, admin = freeAddr(t), freeAddr(t)
		cctx, ccancel := context.WithCancel(ctx)
		done := make(chan int, 1)
		go func() {
			done <- run(cctx, now, append(countArgs, "--http-addr", addr, "--admin-addr", admin), io.Discard, stderr)
		}()
		return addr, func() {
			ccancel()
			if code := <-done; code != 0 {
				t.Errorf("count exited %d", code)
			}
		}
	}
	caughtUp := func(except int) func() bool {
		return func() bool {
			end, err1 := bus.EndOffsets(ctx, bus.Plain(brokers), topic)
			committed, err2 := bus.CommittedOffsets(ctx, bus.Plain(brokers), group, topic)
			if err1 != nil || err2 != nil {
				return false
			}
			for p, e := range end {
				if p != except && committed[p] != e {
					return false
				}
			}
			return true
		}
	}

	send("a", 100)
	_, stop := startCount(io.Discard)
	eventually(t, "the first counter to count batch A", time.Minute, caughtUp(-1))
	stop()

	b := send("b", 100)
	endB, err := bus.EndOffsets(ctx, bus.Plain(brokers), topic)
	if err != nil {
		t.Fatal(err)
	}
	c := send("c", 100)
	P := 0
	for p := range 4 {
		if b[p] > b[P] {
			P = p
		}
	}
	committed, err := bus.CommittedOffsets(ctx, bus.Plain(brokers), group, topic)
	if err != nil {
		t.Fatal(err)
	}
	from, to := committed[P], endB[P]
	if to-from != int64(b[P]) {
		t.Fatalf("partition %d: committed %d, end after B %d, but B put %d events there", P, from, to, b[P])
	}
	if start, err := kafkatest.DeleteRecords(ctx, brokers, topic, P, to); err != nil || start != to {
		t.Fatalf("DeleteRecords = %d, %v; want log start %d", start, err, to)
	}

	logs := &syncBuffer{}
	addr, stop := startCount(logs)
	defer func() {
		if stop != nil {
			stop()
		}
	}()
	wantReady := fmt.Sprintf("partition %d stopped: offsets [%d, %d) (%d records) were deleted before they were counted", P, from, to, to-from)
	eventually(t, "/readyz to report the loss", time.Minute, func() bool {
		code, body := getKey("http://"+addr+"/readyz", opKey)
		return code == http.StatusServiceUnavailable && strings.Contains(body, wantReady)
	})
	wantMetric := fmt.Sprintf("maumeter_count_lost_offsets{partition=\"%d\"} %d", P, to-from)
	if _, m := get("http://" + admin + "/metrics"); !strings.Contains(m, wantMetric) {
		t.Errorf("/metrics lacks %q", wantMetric)
	}
	wantLog := fmt.Sprintf("from=%d to=%d lost=%d", from, to, to-from)
	if l := logs.String(); !strings.Contains(l, "level=ERROR msg=\"offsets lost") || !strings.Contains(l, fmt.Sprintf("partition=%d ", P)) || !strings.Contains(l, wantLog) {
		t.Errorf("log lacks the loss of partition %d %s:\n%s", P, wantLog, l)
	}
	// The other partitions count on; P holds.
	eventually(t, "the other partitions to catch up", time.Minute, caughtUp(P))
	store, err := chstore.Open(ctx, chstore.Config{Addr: svc[1], Database: db}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	wantHeld := uint64(100 + 200 - b[P] - c[P])
	eventually(t, "mau_devices to hold every device of the other partitions", 30*time.Second, func() bool {
		n, err := store.MAU(ctx, "acme", "2026-10")
		return err == nil && n == wantHeld
	})
	if got, _ := bus.CommittedOffsets(ctx, bus.Plain(brokers), group, topic); got[P] != from {
		t.Errorf("partition %d committed %d while stopped, want %d", P, got[P], from)
	}

	out.Reset()
	offsets := append([]string{"--count-group", group}, common[:len(common)-4]...) // without the rollups and caps topics
	if code := run(ctx, now, append([]string{"offsets", "status"}, offsets...), &out, &errb); code != 0 {
		t.Fatalf("offsets status: exit %d: %s", code, errb.String())
	}
	if want := fmt.Sprintf("LOST [%d, %d) (%d records deleted before they were counted)", from, to, to-from); !strings.Contains(out.String(), want) {
		t.Errorf("offsets status lacks %q:\n%s", want, out.String())
	}
	other := (P + 1) % 4
	errb.Reset()
	if code := run(ctx, now, append([]string{"offsets", "accept-loss", "--partition", fmt.Sprint(other), "--by", "tester"}, offsets...), &out, &errb); code == 0 ||
		!strings.Contains(errb.String(), fmt.Sprintf("partition %d of %s lost nothing", other, topic)) {
		t.Errorf("accept-loss on partition %d without a loss: exit %d, %s", other, code, errb.String())
	}
	out.Reset()
	if code := run(ctx, now, append([]string{"offsets", "accept-loss", "--partition", fmt.Sprint(P), "--by", "tester", "--reason", "test"}, offsets...), &out, &errb); code != 0 {
		t.Fatalf("accept-loss: exit %d: %s", code, errb.String())
	}
	if want := fmt.Sprintf("accepted: partition %d of %s, offsets [%d, %d) (%d records) never counted, by tester", P, topic, from, to, to-from); !strings.Contains(out.String(), want) {
		t.Errorf("accept-loss printed %q, want %q", out.String(), want)
	}

	// The counter resumes P at the log start and counts the rest exactly: every device but B's
	// on P.
	eventually(t, "every partition to catch up after the loss was accepted", time.Minute, caughtUp(-1))
	eventually(t, "/readyz to pass", 30*time.Second, func() bool { code, _ := get("http://" + addr + "/readyz"); return code == http.StatusOK })
	want := uint64(300 - b[P])
	eventually(t, "mau_devices to hold every device but the lost ones", 30*time.Second, func() bool {
		n, err := store.MAU(ctx, "acme", "2026-10")
		return err == nil && n == want
	})
	time.Sleep(300 * time.Millisecond)
	if n, err := store.MAU(ctx, "acme", "2026-10"); err != nil || n != want {
		t.Errorf("MAU = %d, %v; want %d", n, err, want)
	}
	_, m := get("http://" + admin + "/metrics")
	for _, want := range []string{fmt.Sprintf("maumeter_count_lost_offsets{partition=\"%d\"} 0", P), fmt.Sprintf("maumeter_count_accepted_lost_offsets_total %d", to-from)} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	losses, err := store.OffsetLosses(ctx, topic, group)
	if err != nil || len(losses) != 1 || losses[0].Partition != int32(P) || losses[0].From != from || losses[0].To != to || losses[0].AcceptedBy != "tester" || losses[0].Reason != "test" {
		t.Errorf("kafka_offset_losses = %+v, %v; want one row: partition %d [%d, %d) by tester", losses, err, P, from, to)
	}
	stop()
	stop = nil
}

// TestRetentionGuard: a counter refuses an events topic that keeps records less than
// --close-window + --close-grace, naming the topic, its retention and the minimum, and starts
// with a warning under --allow-short-retention; migrate refuses a short --events-retention, a
// replication factor above the brokers and a min.insync.replicas above the replication factor.
func TestRetentionGuard(t *testing.T) {
	svc := servicetest.Require(t, servicetest.Kafka, servicetest.ClickHouse)
	id := rand.Uint64()
	topic := fmt.Sprintf("test.short.%d", id)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := bus.EnsureTopic(ctx, bus.Plain([]string{svc[0]}), bus.Topic{Name: topic, Partitions: 1, ReplicationFactor: 1,
		Configs: map[string]string{"retention.ms": "3600000"}}, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	tenants := filepath.Join(t.TempDir(), "tenants.yaml")
	if err := os.WriteFile(tenants, []byte("tenants:\n  - {id: acme, plan: pro, purchased: 2026-01-01, apps: [acme-app]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	now := func() time.Time { return time.Date(2026, 10, 20, 12, 0, 0, 0, time.UTC) }
	common := []string{"--kafka-brokers", svc[0], "--clickhouse-addr", svc[1], "--clickhouse-database", fmt.Sprintf("cmd_retention_test_%d", id),
		"--events-topic", topic, "--tenants", tenants, "--replication-factor", "1"}
	f := func(args []string, wantCode int, wantErr string) {
		t.Helper()
		rctx, rcancel := context.WithTimeout(ctx, 3*time.Second)
		defer rcancel()
		var errb bytes.Buffer
		all := append([]string{args[0]}, common...)
		if args[0] == "count" {
			all = append(all, "--count-group", fmt.Sprintf("test-short-%d", id), "--http-addr", "127.0.0.1:0")
		}
		code := run(rctx, now, append(all, args[1:]...), io.Discard, &errb)
		if code != wantCode || !strings.Contains(errb.String(), wantErr) {
			t.Errorf("%s: exit %d, want %d with %q; stderr:\n%s", strings.Join(args, " "), code, wantCode, wantErr, errb.String())
		}
	}
	f([]string{"count"}, 1, fmt.Sprintf("maumeter count: events topic retention too short: topic %s keeps records 1h0m0s (retention.ms=3600000), "+
		"less than the 888h0m0s the counters need (--close-window + --close-grace)", topic))
	f([]string{"count"}, 1, "(or start with --allow-short-retention)")
	f([]string{"count", "--close-window", "240h", "--close-grace", "24h"}, 1, "less than the 264h0m0s the counters need")
	f([]string{"count", "--allow-short-retention"}, 0, `level=WARN msg="events topic retention is shorter than the counters need; starting anyway (--allow-short-retention)"`)
	f([]string{"migrate", "--events-topic", topic + ".new", "--events-retention", "24h"}, 2,
		"--events-retention 24h0m0s is less than --close-window + --close-grace (888h0m0s)")
	f([]string{"migrate", "--events-topic", topic + ".rf", "--replication-factor", "3"}, 1,
		"replication factor 3 needs at least 3 brokers, the cluster has 1 (a single development broker: --replication-factor 1")
	f([]string{"migrate", "--events-topic", topic + ".isr", "--min-insync-replicas", "2"}, 2,
		"--min-insync-replicas 2: want 1 to the replication factor (1)")
}
