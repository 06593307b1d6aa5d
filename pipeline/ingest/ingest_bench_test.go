package ingest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/maumeter/maumeter/pipeline/api"
	"github.com/maumeter/maumeter/pipeline/bus"
	"github.com/maumeter/maumeter/pkg/event"
)

// benchInFlight are the numbers of requests (or produce calls) kept in flight at once, as many
// SDKs keep one gateway busy: with acks=all every request waits a Kafka round trip, so a
// gateway's throughput grows with them until a core is saturated.
var benchInFlight = []int{16, 64}

// benchWarmUp is how many writers warm the broker up.
const benchWarmUp = 16

// benchBrokers is the real Kafka of `make bench`: figures against an in-process broker would
// say nothing about production.
func benchBrokers(b *testing.B) []string {
	b.Helper()
	if os.Getenv("MAUMETER_KAFKA_BROKERS") == "" && os.Getenv("MAUMETER_REQUIRE_SERVICES") != "1" {
		b.Skip("needs the real Kafka: run `make bench`")
	}
	return testBrokers(b)
}

// benchEvent is an event of the ~150-byte JSON size SDKs send.
func benchEvent(guid int, ts string) string {
	return fmt.Sprintf(`{"event_id":"e-%012d","tenant_id":"acme","app_id":"acme-super","guid":"%032x","event":"open","mini_program_id":"mp-%d","ts":%q}`,
		guid, guid, guid%500, ts)
}

// cpuTime is the CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runParallel runs b.N operations over inFlight goroutines and reports events/s of wall time
// and events per CPU-second of this process (the figure that holds on a shared machine; the
// broker's CPU is not in it, the HTTP clients' is).
func runParallel(b *testing.B, inFlight, eventsPerOp int, op func(i int) error) {
	b.Helper()
	var next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	b.ResetTimer()
	start, cpuStart := time.Now(), cpuTime()
	for range inFlight {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= b.N {
					return
				}
				if err := op(i); err != nil {
					failed.CompareAndSwap(nil, err)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed, cpu := time.Since(start), cpuTime()-cpuStart
	b.StopTimer()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N*eventsPerOp)/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(b.N*eventsPerOp)/cpu.Seconds(), "events/cpu-s")
}

// benchFixture is shared by the benchmarks of one run: a topic of 8 partitions and a producer,
// warmed up so that neither topic creation, metadata look-ups nor the broker's JIT are timed.
type benchFixture struct {
	brokers  []string
	producer *bus.Producer
}

var (
	benchOnce sync.Once
	bench     benchFixture
	benchErr  error
)

func fixture(b *testing.B) *benchFixture {
	b.Helper()
	brokers := benchBrokers(b)
	benchOnce.Do(func() {
		topic := fmt.Sprintf("ingest-bench.%d", time.Now().UnixNano())
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if benchErr = bus.EnsureTopic(ctx, bus.Plain(brokers), bus.Topic{Name: topic, Partitions: 8, ReplicationFactor: 1}, slog.New(slog.DiscardHandler)); benchErr != nil {
			return
		}
		bench = benchFixture{brokers: brokers, producer: bus.NewProducer(bus.Plain(brokers), topic)}
		// Warm up for 3 s: 16 writers of 1,000 events.
		batch := benchEvents(0, 1000, time.Now())
		var wg sync.WaitGroup
		deadline := time.Now().Add(3 * time.Second)
		for range benchWarmUp {
			wg.Go(func() {
				for time.Now().Before(deadline) && benchErr == nil {
					if err := bench.producer.Produce(ctx, batch); err != nil {
						benchErr = err
					}
				}
			})
		}
		wg.Wait()
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	return &bench
}

// benchEvents returns n validated events of distinct devices.
func benchEvents(from, n int, now time.Time) []event.Event {
	ts := now.Add(-time.Minute).UTC().Format(time.RFC3339Nano)
	out := make([]event.Event, n)
	for i := range out {
		e, rj := event.Parse([]byte(benchEvent(from+i, ts)), now, event.DefaultBounds)
		if rj != nil {
			panic(rj)
		}
		out[i] = e
	}
	return out
}

// BenchmarkGateway is what one gateway accepts: HTTP requests of NDJSON batches with a key,
// over loopback, through authentication, validation and the producer, to the real Kafka
// (acks=all), 16 or 64 requests in flight.
func BenchmarkGateway(b *testing.B) {
	for _, batch := range []int{100, 1000} {
		for _, inFlight := range benchInFlight {
			b.Run(fmt.Sprintf("batch=%d/inflight=%d", batch, inFlight), func(b *testing.B) { benchGateway(b, batch, inFlight) })
		}
	}
}

func benchGateway(b *testing.B, batch, inFlight int) {
	fx := fixture(b)
	cat, keys := testCatalog(b)
	h, err := New(Config{}, cat, fx.producer, nil, time.Now, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	url := serve(b, h, api.Timeouts{})
	ts := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339Nano)
	bodies := make([][]byte, 64)
	for i := range bodies {
		var buf bytes.Buffer
		for j := range batch {
			buf.WriteString(benchEvent(i*batch+j, ts))
			buf.WriteByte('\n')
		}
		bodies[i] = buf.Bytes()
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: inFlight}}
	want := fmt.Appendf(nil, `{"accepted":%d,"rejected":[]}`, batch)
	b.SetBytes(int64(len(bodies[0])))
	runParallel(b, inFlight, batch, func(i int) error {
		req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(bodies[i%len(bodies)]))
		req.Header.Set("Authorization", "Bearer "+keys.acme)
		req.Header.Set("Content-Type", "application/x-ndjson")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !bytes.HasPrefix(data, want) {
			return fmt.Errorf("%s: %s", resp.Status, data)
		}
		return nil
	})
}

// BenchmarkProducer is the ceiling of BenchmarkGateway: the bare producer writing validated
// events to the same Kafka, 16 or 64 calls in flight, no HTTP, JSON or validation.
func BenchmarkProducer(b *testing.B) {
	for _, batch := range []int{100, 1000} {
		for _, inFlight := range benchInFlight {
			b.Run(fmt.Sprintf("batch=%d/inflight=%d", batch, inFlight), func(b *testing.B) {
				fx := fixture(b)
				batches := make([][]event.Event, 64)
				for i := range batches {
					batches[i] = benchEvents(i*batch, batch, time.Now())
				}
				runParallel(b, inFlight, batch, func(i int) error {
					return fx.producer.Produce(b.Context(), batches[i%len(batches)])
				})
			})
		}
	}
}
