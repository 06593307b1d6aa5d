package count

import (
	"context"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"

	"github.com/maumeter/maumeter/internal/kafkatest"
	"github.com/maumeter/maumeter/pipeline/bus"
	"github.com/maumeter/maumeter/pipeline/chstore"
	"github.com/maumeter/maumeter/pkg/event"
)

// TestLostWhileReading: records deleted ahead of a counter that is reading (kafka-go's reader
// would skip to the log start) stop the partition at the first missing offset. The counter is
// held behind (mau_devices taken away, so its flush retries) while 40,000 events fill its
// queues; then 100 more arrive, everything up to the end is deleted, and the table comes back.
// The counter stores and commits what it read before the gap, stops at exactly [first unread,
// end), and after the loss is accepted counts the later events: MAU = what was read + after.
func TestLostWhileReading(t *testing.T) {
	shanghai, _ := time.LoadLocation("Asia/Shanghai")
	endOct := time.Date(2026, 11, 1, 0, 0, 0, 0, shanghai)
	r := newRig(t, endOct.Add(-5*24*time.Hour))
	c := r.startCounter(t)
	ctx := context.Background()
	ts := endOct.Add(-time.Hour)
	const P = 1
	// onP returns n random GUIDs (incompressible, so fetches stay small) whose key lands on P.
	onP := func(n int) []event.Event {
		out := make([]event.Event, 0, n)
		for len(out) < n {
			e := event.Event{TenantID: "acme", AppID: "acme-app", GUID: rand.Text(), Type: event.Open, MiniProgramID: "mp-1", TS: ts}
			if bus.EventsBalancer.Balance(kafka.Message{Key: e.PartitionKey()}, 0, 1, 2, 3) == P {
				out = append(out, e)
			}
		}
		return out
	}
	produce := func(events []event.Event) {
		t.Helper()
		for i := 0; i < len(events); i += 5000 {
			if err := r.producer.Produce(ctx, events[i:min(i+5000, len(events))]); err != nil {
				t.Fatal(err)
			}
		}
	}
	produce(onP(100))
	r.waitCounted(t)
	committed, err := bus.CommittedOffsets(ctx, bus.Plain(r.brokers), r.group, r.topic)
	if err != nil {
		t.Fatal(err)
	}
	x := committed[P]

	if err := r.store.Exec(ctx, "RENAME TABLE mau_devices TO mau_devices_held"); err != nil {
		t.Fatal(err)
	}
	produce(onP(40000))
	time.Sleep(3 * time.Second) // the counter's queues fill; its reader stops fetching
	produce(onP(100))
	end, err := bus.EndOffsets(ctx, bus.Plain(r.brokers), r.topic)
	if err != nil {
		t.Fatal(err)
	}
	if start, err := kafkatest.DeleteRecords(ctx, r.brokers, r.topic, P, end[P]); err != nil || start != end[P] {
		t.Fatalf("DeleteRecords = %d, %v; want log start %d", start, err, end[P])
	}
	if err := r.store.Exec(ctx, "RENAME TABLE mau_devices_held TO mau_devices"); err != nil {
		t.Fatal(err)
	}
	produce(onP(100))

	var loss Loss
	waitFor(t, "the counter to stop partition 1", func() bool {
		ls := c.Losses()
		if len(ls) == 1 {
			loss = ls[0]
		}
		return len(ls) == 1
	})
	if loss.Partition != P || loss.To != end[P] || loss.From <= x || loss.From >= end[P]-100 {
		t.Fatalf("loss %+v; want partition %d, from beyond the commit %d and before the last 100, to %d", loss, P, x, end[P])
	}
	if got := testutil.ToFloat64(c.m.lost.WithLabelValues(fmt.Sprint(P))); got != float64(loss.To-loss.From) {
		t.Errorf("maumeter_count_lost_offsets{partition=1} = %v, want %d", got, loss.To-loss.From)
	}
	if got, _ := bus.CommittedOffsets(ctx, bus.Plain(r.brokers), r.group, r.topic); got[P] != loss.From {
		t.Errorf("committed %d at the stop, want %d: what was read before the gap is stored and committed", got[P], loss.From)
	}
	if err := r.store.InsertOffsetLoss(ctx, chstore.OffsetLoss{Topic: r.topic, Group: r.group, Partition: P, From: loss.From, To: loss.To, AcceptedBy: "test"}); err != nil {
		t.Fatal(err)
	}
	r.waitCounted(t)
	want := uint64(100 + (loss.From - x) + 100)
	waitFor(t, fmt.Sprintf("MAU %d (100 + %d read before the gap + 100 after)", want, loss.From-x), func() bool {
		n, err := r.store.MAU(ctx, "acme", "2026-10")
		return err == nil && n == want
	})
	if len(c.Losses()) != 0 {
		t.Errorf("losses after acceptance: %+v", c.Losses())
	}
}
