package count

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/maumeter/maumeter/pipeline/bus"
	"github.com/maumeter/maumeter/pipeline/chstore"
	"github.com/maumeter/maumeter/pkg/event"
)

// cpuTime is the CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchRig is newRig for benchmarks.
func benchRig(b *testing.B) *rig {
	b.Helper()
	if os.Getenv("MAUMETER_KAFKA_BROKERS") == "" || os.Getenv("MAUMETER_CLICKHOUSE_ADDR") == "" {
		b.Skip("needs the real Kafka and ClickHouse: run `make bench`")
	}
	shanghai, _ := time.LoadLocation("Asia/Shanghai")
	return newRig(b, time.Date(2026, 11, 20, 0, 0, 0, 0, shanghai))
}

// prefill produces n events of distinct devices (a third seen twice) to the rig's topic.
func prefill(b *testing.B, r *rig, n int) {
	b.Helper()
	ts := time.Date(2026, 11, 10, 0, 0, 0, 0, time.UTC)
	batch := make([]event.Event, 0, 10000)
	for i := range n {
		g := i
		if i%3 == 0 {
			g = i / 3
		}
		batch = append(batch, event.Event{TenantID: "acme", AppID: "acme-app", GUID: fmt.Sprintf("dev-%d", g), Type: event.Open, MiniProgramID: fmt.Sprintf("mp-%d", i%40), TS: ts.Add(time.Duration(i%(20*24)) * time.Hour)})
		if len(batch) == cap(batch) || i == n-1 {
			if err := r.producer.Produce(context.Background(), batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
}

// BenchmarkCounterConsume: events/s (and per CPU-second) of a counter consuming a pre-filled
// topic from the real broker, through to ClickHouse and committed offsets.
func BenchmarkCounterConsume(b *testing.B) {
	const n = 300_000
	for b.Loop() {
		b.StopTimer()
		r := benchRig(b)
		prefill(b, r, n)
		c, err := New(Config{Kafka: bus.Plain(r.brokers), Topic: r.topic, Group: r.group, SessionTimeout: 6 * time.Second, CheckpointInterval: time.Second,
			Close: CloseConfig{AutoWindow: time.Nanosecond, RollupsTopic: r.rollups}}, r.catalog, r.store, r.clock.now, r.log, prometheus.NewRegistry())
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		b.StartTimer()
		cpu0, t0 := cpuTime(), time.Now()
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		for {
			if lag, err := bus.Lag(ctx, bus.Plain(r.brokers), r.group, r.topic); err == nil && lag == 0 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		wall, cpu := time.Since(t0), cpuTime()-cpu0
		b.StopTimer()
		cancel()
		<-done
		b.ReportMetric(n/wall.Seconds(), "events/s")
		b.ReportMetric(n/cpu.Seconds(), "events/cpu-s")
		b.StartTimer()
	}
}

// BenchmarkBareConsumer is the ceiling for BenchmarkCounterConsume: a kafka-go reader per
// partition on the same kind of topic, doing nothing with the messages.
func BenchmarkBareConsumer(b *testing.B) {
	const n = 300_000
	for b.Loop() {
		b.StopTimer()
		r := benchRig(b)
		prefill(b, r, n)
		b.StartTimer()
		cpu0, t0 := cpuTime(), time.Now()
		end, err := bus.EndOffsets(context.Background(), bus.Plain(r.brokers), r.topic)
		if err != nil {
			b.Fatal(err)
		}
		errs := make(chan error, len(end))
		for p, last := range end {
			go func() {
				rd := kafka.NewReader(kafka.ReaderConfig{Brokers: r.brokers, Topic: r.topic, Partition: p,
					MinBytes: 64 << 10, MaxBytes: 16 << 20, MaxWait: 250 * time.Millisecond, QueueCapacity: 10000})
				defer rd.Close()
				for off := int64(0); off < last; {
					m, err := rd.FetchMessage(context.Background())
					if err != nil {
						errs <- err
						return
					}
					off = m.Offset + 1
				}
				errs <- nil
			}()
		}
		for range end {
			if err := <-errs; err != nil {
				b.Fatal(err)
			}
		}
		wall, cpu := time.Since(t0), cpuTime()-cpu0
		b.ReportMetric(n/wall.Seconds(), "events/s")
		b.ReportMetric(n/cpu.Seconds(), "events/cpu-s")
	}
}

// seedDevices writes n device rows of one tenant-month on partition 0, plus a partition rollup.
func seedDevices(b *testing.B, r *rig, n int) {
	b.Helper()
	rows := make([]chstore.DeviceRow, 0, 100_000)
	ts := time.Date(2026, 10, 10, 0, 0, 0, 0, time.UTC)
	for i := range n {
		g := fmt.Sprintf("dev-%d", i)
		rows = append(rows, chstore.DeviceRow{TenantID: "acme", Month: "2026-10", AppID: "acme-app", Key: event.KeyOf("acme", "acme-app", g),
			GUID: g, FirstSeenAt: ts, FirstEvent: event.Open, MiniProgramID: "mp-1", Partition: 0, Offset: int64(i)})
		if len(rows) == cap(rows) || i == n-1 {
			if err := r.store.InsertDevices(context.Background(), rows); err != nil {
				b.Fatal(err)
			}
			rows = rows[:0]
		}
	}
}

// BenchmarkRebuild1M: time to rebuild a partition holding 1M devices of an open month.
func BenchmarkRebuild1M(b *testing.B) {
	r := benchRig(b)
	seedDevices(b, r, 1_000_000)
	c, err := New(Config{Kafka: bus.Plain(r.brokers), Topic: r.topic, Group: r.group}, r.catalog, r.store, r.clock.now, r.log, prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		p := newPartitionState(0)
		if err := c.rebuild(context.Background(), p); err != nil {
			b.Fatal(err)
		}
		if got := p.devices(); got != 1_000_000 {
			b.Fatalf("rebuilt %d devices, want 1,000,000", got)
		}
	}
}

// BenchmarkClose1M: time to close a month of 1M devices (exact MAU from ClickHouse, per app,
// partition rollups merged, rollup written and published).
func BenchmarkClose1M(b *testing.B) {
	r := benchRig(b)
	seedDevices(b, r, 1_000_000)
	closer, err := NewCloser(r.closeConfig(), bus.Plain(r.brokers), r.topic, r.group, r.catalog, r.store, r.clock.now, r.log, prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	pub := bus.NewJSONPublisher(bus.Plain(r.brokers), r.rollups, bus.RollupSchema)
	defer pub.Close()
	for b.Loop() {
		rollup, err := closer.close(context.Background(), tenantMonth{TenantID: "acme", Month: "2026-10"}, nil, pub)
		if err != nil {
			b.Fatal(err)
		}
		if rollup.MAU != 1_000_000 {
			b.Fatalf("closed with MAU %d, want 1,000,000", rollup.MAU)
		}
	}
}
