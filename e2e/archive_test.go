package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/maumeter/maumeter/pipeline/bus"
)

// TestArchiveKeepsEveryEventOnce runs the archive role beside the counter, SIGKILLs it a third of
// the way through the traffic and starts it again: every acknowledged event is in the events
// table once (FINAL), with and without an event_id, including a batch the client sent twice,
// and the table answers a dispute: the event at each billed device's mau_devices offset is an
// archived event of that device.
func TestArchiveKeepsEveryEventOnce(t *testing.T) {
	p := startPipeline(t, "archive")
	group := "e2e-archive-" + p.database
	env := append(p.env[:len(p.env):len(p.env)], "MAUMETER_ARCHIVE_GROUP="+group)
	addr := freeAddr(t)
	arch := startProc(t, "archive", env, "archive", "--http-addr", addr, "--archive-batch", "3000")
	waitHTTP(t, arch, "http://"+addr+"/healthz", 30*time.Second)

	// 240 batches of 250 events of two tenants; batches i%40 == 0 are sent twice (a client retry
	// after a lost answer) and all their events carry an event_id; elsewhere every 7th event has
	// none.
	now := clockNow()
	rng := rand.New(rand.NewPCG(uint64(now.UnixNano()), 7))
	type batch struct {
		tenant string
		lines  []line
	}
	var batches []batch
	withID, withoutID := 0, 0
	for i := range 240 {
		tenant, app := "t-shanghai", "sh-super"
		if i%2 == 1 {
			tenant, app = "t-newyork", "ny-super"
		}
		b := batch{tenant: tenant}
		for j := range 250 {
			id := fmt.Sprintf(`"event_id":"ev-%d-%d",`, i, j)
			if i%40 != 0 && j%7 == 3 {
				id = ""
				withoutID++
			} else {
				withID++
			}
			ts := now.Add(-time.Duration(rng.IntN(3600)) * time.Second)
			b.lines = append(b.lines, line{tenant: tenant, json: fmt.Sprintf(`{%s"tenant_id":%q,"app_id":%q,"guid":"g%d","event":"search","ts":%q}`,
				id, tenant, app, rng.IntN(5000), ts.UTC().Format(time.RFC3339Nano))})
		}
		batches = append(batches, b)
	}
	var next, done atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for range 2 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(batches) {
					return
				}
				times := 1
				if i%40 == 0 {
					times = 2
				}
				for range times {
					if err := post(p.ingestURL+"/v1/events", p.keys[batches[i].tenant], batches[i].lines); err != nil {
						errs <- err
						return
					}
				}
				done.Add(1)
			}
		})
	}
	for done.Load() < int64(len(batches)/3) {
		time.Sleep(10 * time.Millisecond)
	}
	arch.kill()
	t.Logf("archive SIGKILLed after %d of %d batches were acknowledged", done.Load(), len(batches))
	time.Sleep(500 * time.Millisecond)
	arch.start()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	// Wait until the archive's group has committed the end of every partition.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for {
		if arch.exited() {
			t.Fatalf("archive exited:\n%s", arch.tail())
		}
		lag, err := bus.Lag(ctx, bus.Plain([]string{brokers}), group, p.topic)
		if err == nil && lag == 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("archive still %d behind: %v\n%s", lag, err, arch.tail())
		}
		time.Sleep(200 * time.Millisecond)
	}
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{clickhouseA}, Auth: clickhouse.Auth{Database: p.database}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var rows, dupes, ids, noIDs uint64
	if err := conn.QueryRow(ctx, `SELECT count(), toUInt64(count() - uniqExact(dedup_id)), countIf(event_id != ''), countIf(event_id = '') FROM events FINAL`).Scan(&rows, &dupes, &ids, &noIDs); err != nil {
		t.Fatal(err)
	}
	var raw uint64
	if err := conn.QueryRow(ctx, `SELECT count() FROM events`).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	t.Logf("events: %d rows before FINAL, %d after; %d with an event_id, %d without", raw, rows, ids, noIDs)
	if rows != uint64(withID+withoutID) || dupes != 0 || ids != uint64(withID) || noIDs != uint64(withoutID) {
		t.Errorf("events FINAL: %d rows (%d duplicated), %d with id, %d without; want %d, 0, %d, %d",
			rows, dupes, ids, noIDs, withID+withoutID, withID, withoutID)
	}

	// A dispute: the event that made each billed device count (its mau_devices row's partition
	// and offset) is in the archive, with the same device and time.
	p.waitCounted(t, 2*time.Minute)
	var mismatched, devices uint64
	if err := conn.QueryRow(ctx, `SELECT countIf(e.guid != d.guid OR e.ts != d.first_seen_at), count() FROM mau_devices AS d
		LEFT JOIN (SELECT kafka_partition, kafka_offset, guid, ts FROM events FINAL) AS e
		ON e.kafka_partition = d.kafka_partition AND e.kafka_offset = d.kafka_offset`).Scan(&mismatched, &devices); err != nil {
		t.Fatal(err)
	}
	if devices == 0 || mismatched != 0 {
		t.Errorf("%d of %d billed devices' first sightings are not an archived event of the device", mismatched, devices)
	}
	t.Logf("%d billed devices, each first sighting an archived event of the device", devices)
}
