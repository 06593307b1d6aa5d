package count

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/maumeter/maumeter/pipeline/chstore"
	"github.com/maumeter/maumeter/pkg/event"
	"github.com/maumeter/maumeter/pkg/tenant"
)

// TestStateIsOrderAndDuplicateFree is the counter's core property: any permutation,
// duplication or replay of an event stream leaves the same exact sets, the same first-seen
// devices and the same sketches (byte for byte) in every tenant-month.
func TestStateIsOrderAndDuplicateFree(t *testing.T) {
	cat, err := tenant.Parse("t.yaml", []byte(`
tenants:
  - {id: sh, plan: pro, purchased: 2026-01-01, time_zone: Asia/Shanghai, apps: [a1, a2]}
  - {id: ny, plan: pro, purchased: 2026-01-01, time_zone: America/New_York, apps: [b1]}
`))
	if err != nil {
		t.Fatal(err)
	}
	notClosed := func(tenantMonth) bool { return false }
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 99))
		stream := genStream(rng, 2000)
		base := applyAll(cat, stream, notClosed)

		variants := map[string][]event.Event{}
		perm := append([]event.Event(nil), stream...)
		rng.Shuffle(len(perm), func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
		variants["permuted"] = perm
		var dup []event.Event
		for _, e := range stream {
			dup = append(dup, e)
			if rng.IntN(3) == 0 {
				dup = append(dup, e)
			}
		}
		variants["duplicated"] = dup
		cut := rng.IntN(len(stream))
		variants["replayed"] = append(append([]event.Event(nil), stream...), stream[cut:]...)

		for name, v := range variants {
			got := applyAll(cat, v, notClosed)
			if len(got.months) != len(base.months) {
				t.Fatalf("seed %d %s: %d tenant-months, want %d", seed, name, len(got.months), len(base.months))
			}
			for tm, want := range base.months {
				m := got.months[tm]
				if m == nil || m.set.Len() != want.set.Len() {
					t.Fatalf("seed %d %s: %v has %v devices, want %d", seed, name, tm, m, want.set.Len())
				}
				a, _ := want.sk.MarshalBinary()
				b, _ := m.sk.MarshalBinary()
				if !bytes.Equal(a, b) {
					t.Errorf("seed %d %s: %v sketches differ", seed, name, tm)
				}
			}
			if len(got.pending) != len(base.pending) {
				t.Errorf("seed %d %s: %d first-seen rows, want %d", seed, name, len(got.pending), len(base.pending))
			}
		}
	}
}

// TestClosedMonthsGoDownTheLatePath: events of a closed month (not in memory) never touch the
// sets; each device is queued once for the ClickHouse check.
func TestClosedMonthsGoDownTheLatePath(t *testing.T) {
	cat, _ := tenant.Parse("t.yaml", []byte("tenants:\n  - {id: sh, plan: pro, purchased: 2026-01-01, time_zone: Asia/Shanghai, apps: [a1]}\n"))
	closed := func(tm tenantMonth) bool { return tm.Month == "2026-10" }
	oct := time.Date(2026, 10, 31, 15, 59, 0, 0, time.UTC) // 23:59 in Shanghai
	nov := oct.Add(time.Minute)                            // 00:00 Nov 1 in Shanghai
	var stream []event.Event
	for i := range 10 {
		for _, ts := range []time.Time{oct, nov, oct} {
			stream = append(stream, event.Event{TenantID: "sh", AppID: "a1", GUID: fmt.Sprint(i), Type: event.Search, TS: ts})
		}
	}
	p := applyAll(cat, stream, closed)
	if n := len(p.late[tenantMonth{TenantID: "sh", Month: "2026-10"}]); n != 10 {
		t.Errorf("late devices of October = %d, want 10", n)
	}
	if _, held := p.months[tenantMonth{TenantID: "sh", Month: "2026-10"}]; held {
		t.Error("a closed month came back into memory")
	}
	if m := p.months[tenantMonth{TenantID: "sh", Month: "2026-11"}]; m == nil || m.set.Len() != 10 || len(p.pending) != 10 {
		t.Errorf("November: %v devices, %d pending; want 10 and 10", m, len(p.pending))
	}
}

func genStream(rng *rand.Rand, n int) []event.Event {
	apps := map[string][]string{"sh": {"a1", "a2"}, "ny": {"b1"}}
	tenants := []string{"sh", "ny"}
	start := time.Date(2026, 10, 25, 0, 0, 0, 0, time.UTC)
	out := make([]event.Event, n)
	for i := range out {
		tn := tenants[rng.IntN(2)]
		out[i] = event.Event{
			TenantID: tn, AppID: apps[tn][rng.IntN(len(apps[tn]))], GUID: fmt.Sprintf("g%d", rng.IntN(n/3)),
			Type: event.Type(1 + rng.IntN(3)), MiniProgramID: fmt.Sprintf("mp%d", rng.IntN(7)),
			TS: start.Add(time.Duration(rng.Int64N(int64(14 * 24 * time.Hour)))),
		}
	}
	return out
}

func applyAll(cat *tenant.Catalog, stream []event.Event, closed func(tenantMonth) bool) *partitionState {
	p := newPartitionState(0)
	for i := range stream {
		tn, _ := cat.Tenant(stream[i].TenantID)
		p.apply(&stream[i], tn, int64(i), closed)
	}
	return p
}

// TestProcessStopsAtAGap: a message beyond the next expected offset (kafka-go's reader skipped
// deleted records) is not applied and returns the end of the gap; a contiguous one is applied.
func TestProcessStopsAtAGap(t *testing.T) {
	cat, err := tenant.Parse("t.yaml", []byte("tenants:\n  - {id: acme, plan: pro, purchased: 2026-01-01, apps: [acme-app]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	c := &Counter{m: metrics{events: prometheus.NewCounter(prometheus.CounterOpts{Name: "e"})}}
	c.catalog.Store(cat)
	c.closed.Store(&map[tenantMonth]*chstore.Rollup{})
	p := newPartitionState(0)
	p.next = 10
	e := event.Event{TenantID: "acme", AppID: "acme-app", GUID: "g", Type: event.Open, MiniProgramID: "mp", TS: time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)}
	v, err := e.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	msg := func(off int64) kafka.Message {
		return kafka.Message{Offset: off, Value: v, Headers: []kafka.Header{{Key: event.SchemaHeader, Value: []byte(event.SchemaV1)}}}
	}
	if gap := c.process(p, msg(10)); gap != -1 || p.next != 11 || p.devices() != 1 {
		t.Fatalf("offset 10 after 10: gap %d, next %d, devices %d; want -1, 11, 1", gap, p.next, p.devices())
	}
	if gap := c.process(p, msg(15)); gap != 15 || p.next != 11 {
		t.Fatalf("offset 15 after 11: gap %d, next %d; want 15 (lost [11, 15)), next still 11", gap, p.next)
	}
}
