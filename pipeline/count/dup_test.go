package count

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"

	"github.com/maumeter/maumeter/internal/kafkatest"
	"github.com/maumeter/maumeter/pipeline/bus"
	"github.com/maumeter/maumeter/pkg/event"
)

// eventRecord is the record the events producer writes for e.
func eventRecord(t *testing.T, e event.Event) kafka.Record {
	t.Helper()
	v, err := e.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	return kafka.Record{Key: kafka.NewBytes(e.PartitionKey()), Value: kafka.NewBytes(v),
		Headers: []kafka.Header{{Key: event.SchemaHeader, Value: []byte(event.SchemaV1)}}}
}

// TestDuplicatesAndMovedDevicesCountOnce: the kafka-go writer is not idempotent, so a retried
// produce can store a batch twice; and switching the partitioner (FNV-1a to murmur2) can put a
// device's later events on another partition. Duplicates count once in the open month's
// real-time read (the partition's set absorbs them) and in the closed rollup. A moved device is
// in two partitions' sets: their sum counts it twice (shown here, before the switch is
// recorded); once the switch is recorded (migration 008), the open month's read takes
// uniqExact over mau_devices and counts it once, and the close bills it once.
func TestDuplicatesAndMovedDevicesCountOnce(t *testing.T) {
	shanghai, _ := time.LoadLocation("Asia/Shanghai")
	endOct := time.Date(2026, 11, 1, 0, 0, 0, 0, shanghai)
	r := newRig(t, endOct.Add(-5*24*time.Hour))
	c := r.startCounter(t)
	ctx := context.Background()
	ts := endOct.Add(-time.Hour)
	devs := guids("dup", 40)
	r.send(t, devs, ts)

	// A retry's copy of 20 of those events, on the partitions the producer put them on.
	parts := []int{0, 1, 2, 3}
	copies := map[int][]kafka.Record{}
	for _, g := range devs[:20] {
		e := event.Event{TenantID: "acme", AppID: "acme-app", GUID: g, Type: event.Open, MiniProgramID: "mp-1", TS: ts}
		p := bus.EventsBalancer.Balance(kafka.Message{Key: e.PartitionKey()}, parts...)
		copies[p] = append(copies[p], eventRecord(t, e))
	}
	for p, recs := range copies {
		if _, err := kafkatest.AppendRecords(ctx, r.brokers, r.topic, p, recs); err != nil {
			t.Fatal(err)
		}
	}
	// A device whose events the old partitioner (kafka.Hash, FNV-1a) and the new (murmur2)
	// put on different partitions: one event each way.
	var moved event.Event
	var oldP, newP int
	for i := 0; ; i++ {
		moved = event.Event{TenantID: "acme", AppID: "acme-app", GUID: fmt.Sprintf("moved-%d", i), Type: event.Search, TS: ts}
		key := kafka.Message{Key: moved.PartitionKey()}
		if oldP, newP = (&kafka.Hash{}).Balance(key, parts...), bus.EventsBalancer.Balance(key, parts...); oldP != newP {
			break
		}
	}
	for _, p := range []int{oldP, newP} {
		if _, err := kafkatest.AppendRecords(ctx, r.brokers, r.topic, p, []kafka.Record{eventRecord(t, moved)}); err != nil {
			t.Fatal(err)
		}
	}
	r.waitCounted(t)
	if got := testutil.ToFloat64(c.m.events); got != 40+20+2 {
		t.Fatalf("counter consumed %v events, want 62 (40, 20 copies, the moved device twice)", got)
	}
	// Before the switch is recorded: the copies change nothing, the moved device counts twice.
	if got, err := c.MAU(ctx, "acme", "2026-10"); err != nil || got != 42 {
		t.Fatalf("open-month MAU before the switch is recorded = %d, %v; want 42 (40 + the moved device in two sets)", got, err)
	}
	if err := r.store.RecordPartitionerSwitch(ctx, "murmur2", endOct.Add(-10*24*time.Hour), t.Name()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the open-month read to count the moved device once", func() bool {
		got, err := c.MAU(ctx, "acme", "2026-10")
		return err == nil && got == 41
	})
	if _, d, err := c.MAUDetail(ctx, "acme", "2026-10"); err != nil || d.Source[:10] != "clickhouse" {
		t.Errorf("MAUDetail source = %q, %v; want the uniqExact read", d.Source, err)
	}

	r.clock.set(endOct.Add(48 * time.Hour))
	v1 := r.rollup(t, "2026-10", 1)
	if v1.MAU != 41 || v1.MAUByApp["acme-app"] != 41 {
		t.Errorf("closed rollup MAU %d (acme-app %d), want 41: copies and the moved device once", v1.MAU, v1.MAUByApp["acme-app"])
	}
	if v1.MAUMemory != 42 {
		t.Errorf("closed rollup in-memory sum %d, want 42 (the moved device in two sets: a recorded mismatch, not billed)", v1.MAUMemory)
	}
}
