// Package outage stops and restarts the real Kafka broker under a running ingest gateway (the
// built binary) while clients keep sending, and proves that no event the gateway acknowledged
// is lost and that every refusal was a 503.
//
// It stops the broker, so it must have one of its own: `make test` runs it in a separate step
// with MAUMETER_KAFKA_EXCLUSIVE=1 (scripts/with-services.sh --kafka). In the main `go test ./...`
// step, which shares its broker with every other package, it skips.
package outage

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/maumeter/maumeter/internal/clock"
	"github.com/maumeter/maumeter/pipeline/bus"
	"github.com/maumeter/maumeter/pkg/event"
	"github.com/maumeter/maumeter/pkg/tenant"
)

var (
	brokers = os.Getenv("MAUMETER_KAFKA_BROKERS")
	script  = os.Getenv("MAUMETER_KAFKA_SCRIPT")
	datadir = os.Getenv("MAUMETER_KAFKA_DATADIR")
	// clockNow is the clock of the test and of the gateway it starts (see e2e/harness_test.go).
	clockNow func() time.Time
)

func TestMain(m *testing.M) {
	if os.Getenv("MAUMETER_KAFKA_EXCLUSIVE") != "1" {
		fmt.Fprintln(os.Stderr, "outage: skipped: it stops the Kafka broker, so it needs one of its own (MAUMETER_KAFKA_EXCLUSIVE=1; `make test` runs it in its own step)")
		os.Exit(0)
	}
	if brokers == "" || script == "" || datadir == "" {
		fmt.Fprintln(os.Stderr, "outage: MAUMETER_KAFKA_BROKERS, MAUMETER_KAFKA_SCRIPT and MAUMETER_KAFKA_DATADIR are required (scripts/with-services.sh --kafka)")
		os.Exit(1)
	}
	var err error
	if clockNow, err = clock.Pin(); err != nil {
		fmt.Fprintln(os.Stderr, "outage:", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// result is what one request got.
type result struct {
	guids  []string
	status int
	err    error
	at     time.Time
	phase  string
}

func TestNoAcknowledgedEventLostWhileKafkaRestarts(t *testing.T) {
	dir := t.TempDir()
	binary := filepath.Join(dir, "maumeter")
	if out, err := exec.Command("go", "build", "-o", binary, "../../cmd/maumeter").CombinedOutput(); err != nil {
		t.Fatalf("build maumeter: %v\n%s", err, out)
	}
	topic := fmt.Sprintf("outage.%d", time.Now().UnixNano())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	brokerList := strings.Split(brokers, ",")
	if err := bus.EnsureTopic(ctx, bus.Plain(brokerList), bus.Topic{Name: topic, Partitions: 8, ReplicationFactor: 1}, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}

	// A tenant with a key, as `maumeter keys new` makes them.
	// Its plan was bought a month ago, whatever the date.
	skeleton := "tenants:\n  - {id: acme, plan: pro, purchased: " + clockNow().AddDate(0, -1, 0).UTC().Format(time.DateOnly) +
		", apps: [acme-super], ingest_keys: [%s]}\n"
	cat, err := tenant.Parse("t.yaml", fmt.Appendf(nil, skeleton, ""))
	if err != nil {
		t.Fatal(err)
	}
	acme, _ := cat.Tenant("acme")
	key, entry, err := tenant.NewKey(rand.Reader, acme, nil, clockNow())
	if err != nil {
		t.Fatal(err)
	}
	tenants := filepath.Join(dir, "tenants.yaml")
	if err := os.WriteFile(tenants, fmt.Appendf(nil, skeleton, strings.TrimPrefix(entry.YAML(), "- ")), 0o600); err != nil {
		t.Fatal(err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	logFile := filepath.Join(dir, "ingest.log")
	lf, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	gw := exec.Command(binary, "ingest", "--http-addr", addr, "--tenant-rate", "0")
	gw.Env = append(os.Environ(), "MAUMETER_KAFKA_BROKERS="+brokers, "MAUMETER_EVENTS_TOPIC="+topic, "MAUMETER_TENANTS="+tenants)
	gw.Stdout, gw.Stderr = lf, lf
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { gw.Wait(); lf.Close(); close(exited) }()
	tail := func() string {
		data, _ := os.ReadFile(logFile)
		if len(data) > 3000 {
			data = data[len(data)-3000:]
		}
		return string(data)
	}
	t.Cleanup(func() {
		gw.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			gw.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("ingest log:\n%s", tail())
		}
	})
	url := "http://" + addr + "/v1/events"
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ingest did not start:\n%s", tail())
		}
	}

	// Clients send batches of 100 events of new devices, without pause, until told to stop.
	var phase atomic.Value
	phase.Store("before")
	var stop atomic.Bool
	var mu sync.Mutex
	var results []result
	var acked atomic.Int64
	client := &http.Client{Timeout: 30 * time.Second}
	var wg sync.WaitGroup
	const clients, batch = 6, 100
	for c := range clients {
		wg.Go(func() {
			for b := 0; !stop.Load(); b++ {
				r := result{phase: phase.Load().(string)}
				var body bytes.Buffer
				ts := clockNow().Add(-time.Minute).UTC().Format(time.RFC3339Nano)
				for i := range batch {
					g := fmt.Sprintf("c%d-b%d-e%d", c, b, i)
					r.guids = append(r.guids, g)
					fmt.Fprintf(&body, `{"tenant_id":"acme","app_id":"acme-super","guid":%q,"event":"open","mini_program_id":"mp","ts":%q}`+"\n", g, ts)
				}
				req, _ := http.NewRequest(http.MethodPost, url, &body)
				req.Header.Set("Authorization", "Bearer "+key)
				resp, err := client.Do(req)
				r.at = time.Now()
				if err != nil {
					r.err = err
				} else {
					data, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					r.status = resp.StatusCode
					switch resp.StatusCode {
					case http.StatusOK:
						var a struct{ Accepted int }
						if json.Unmarshal(data, &a) != nil || a.Accepted != batch {
							r.err = fmt.Errorf("200 %s: want %d accepted", data, batch)
						}
						acked.Add(batch)
					case http.StatusServiceUnavailable:
						if resp.Header.Get("Retry-After") == "" {
							r.err = fmt.Errorf("503 without Retry-After")
						}
					default:
						r.err = fmt.Errorf("%s: %s", resp.Status, data)
					}
				}
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
			}
		})
	}
	waitAcked := func(n int64, within time.Duration) {
		t.Helper()
		target := acked.Load() + n
		for deadline := time.Now().Add(within); acked.Load() < target; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				stop.Store(true)
				wg.Wait()
				t.Fatalf("fewer than %d events acknowledged within %s:\n%s", n, within, tail())
			}
		}
	}
	kafkaScript := func(verb string) {
		t.Helper()
		start := time.Now()
		out, err := exec.Command(script, verb, datadir).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s %s: %v\n%s", script, verb, datadir, err, out)
		}
		t.Logf("kafka %s took %s", verb, time.Since(start).Round(time.Millisecond))
	}

	waitAcked(5_000, 30*time.Second)
	phase.Store("outage")
	kafkaScript("stop")
	time.Sleep(4 * time.Second) // requests meanwhile must all be refused with 503
	phase.Store("restart")
	kafkaScript("start")
	waitAcked(5_000, 90*time.Second)
	phase.Store("after")
	waitAcked(5_000, 30*time.Second)
	stop.Store(true)
	wg.Wait()

	// Tally: every answer was 200 or 503, and there were both.
	count := map[string]map[int]int{}
	var ackedGUIDs []string
	for _, r := range results {
		if r.err != nil {
			t.Errorf("%s: %v", r.phase, r.err)
			continue
		}
		if count[r.phase] == nil {
			count[r.phase] = map[int]int{}
		}
		count[r.phase][r.status]++
		if r.status == http.StatusOK {
			ackedGUIDs = append(ackedGUIDs, r.guids...)
		}
	}
	t.Logf("requests by phase and status: %v", count)
	if count["outage"][http.StatusServiceUnavailable] == 0 {
		t.Errorf("no request was refused with 503 while Kafka was down: %v", count)
	}
	if count["outage"][http.StatusOK] > 0 {
		t.Logf("%d requests in the outage phase were acknowledged (sent before the broker went away)", count["outage"][http.StatusOK])
	}

	// Every acknowledged event is in the topic.
	inTopic, messages := readAll(t, brokerList, topic)
	missing := 0
	for _, g := range ackedGUIDs {
		if !inTopic[g] {
			if missing < 10 {
				t.Errorf("acknowledged event %s is not in the topic", g)
			}
			missing++
		}
	}
	refused := len(results)*batch - len(ackedGUIDs)
	t.Logf("%d events acknowledged, %d of them found in the topic (%d messages, %d distinct events); %d events refused with 503",
		len(ackedGUIDs), len(ackedGUIDs)-missing, messages, len(inTopic), refused)
	if missing > 0 {
		t.Fatalf("%d of %d acknowledged events lost", missing, len(ackedGUIDs))
	}
}

// readAll returns the GUIDs of every event in the topic, and the number of messages.
func readAll(t *testing.T, brokers []string, topic string) (map[string]bool, int) {
	t.Helper()
	conn, err := kafka.Dial("tcp", brokers[0])
	if err != nil {
		t.Fatal(err)
	}
	parts, err := conn.ReadPartitions(topic)
	conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	n := 0
	for _, p := range parts {
		pc, err := kafka.DialLeader(context.Background(), "tcp", brokers[0], topic, p.ID)
		if err != nil {
			t.Fatal(err)
		}
		first, last, err := pc.ReadOffsets()
		pc.Close()
		if err != nil {
			t.Fatal(err)
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: p.ID, MinBytes: 1, MaxBytes: 16 << 20, MaxWait: 200 * time.Millisecond})
		for off := first; off < last; {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			m, err := r.ReadMessage(ctx)
			cancel()
			if err != nil {
				t.Fatalf("partition %d at %d of %d: %v", p.ID, off, last, err)
			}
			e, err := event.Decode(m.Value)
			if err != nil {
				t.Fatalf("partition %d offset %d: %v", p.ID, m.Offset, err)
			}
			out[e.GUID] = true
			n++
			off = m.Offset + 1
		}
		r.Close()
	}
	return out, n
}
