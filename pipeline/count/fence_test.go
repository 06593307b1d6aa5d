package count

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/segmentio/kafka-go"

	"github.com/maumeter/maumeter/internal/kafkatest"
	"github.com/maumeter/maumeter/pipeline/bus"
	"github.com/maumeter/maumeter/pipeline/chstore"
	"github.com/maumeter/maumeter/pkg/event"
)

// feeder stands in for the counters in the closer tests: it appends placeholder records to the
// events topic, writes the devices they carried with those offsets straight into mau_devices
// (choosing inserted_at, as a slow part would), and commits the group past them.
type feeder struct {
	r    *rig
	conn clickhouse.Conn
	mu   sync.Mutex // one append-insert-commit at a time, as one counter per partition
}

func newFeeder(t *testing.T, r *rig) *feeder {
	t.Helper()
	_, ch := services(t)
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{ch}, Auth: clickhouse.Auth{Database: r.store.Database()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &feeder{r: r, conn: conn}
}

// devices records guids as first seen in acme/month on partition p, inserted_at = at.
func (f *feeder) devices(t *testing.T, p int, month string, guids []string, at time.Time) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	ctx := context.Background()
	base, err := kafkatest.Append(ctx, f.r.brokers, f.r.topic, p, len(guids))
	if err != nil {
		t.Fatal(err)
	}
	b, err := f.conn.PrepareBatch(ctx, `INSERT INTO mau_devices (tenant_id, month, app_id, device_key, guid, first_seen_at,
		first_event, mini_program_id, kafka_partition, kafka_offset, inserted_at)`)
	if err != nil {
		t.Fatal(err)
	}
	for i, g := range guids {
		k := event.KeyOf("acme", "acme-app", g)
		if err := b.Append("acme", month, "acme-app", string(k[:]), g, at, "open", "mp-1", uint32(p), uint64(base)+uint64(i), at); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	if err := kafkatest.Commit(ctx, f.r.brokers, f.r.group, f.r.topic, map[int]int64{p: base + int64(len(guids))}); err != nil {
		t.Fatal(err)
	}
}

func (r *rig) newCloser(t *testing.T) *Closer {
	t.Helper()
	c, err := NewCloser(r.closeConfig(), bus.Plain(r.brokers), r.topic, r.group, r.catalog, r.store, r.clock.now, r.log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestRestatementOfASlowPart: a device row that becomes visible after a close, with an
// inserted_at older than the close (a slow part, a clock step), is restated, by `close` and by
// the automatic check alike: what is new is decided by offsets, not server time.
func TestRestatementOfASlowPart(t *testing.T) {
	shanghai, _ := time.LoadLocation("Asia/Shanghai")
	endOct := time.Date(2026, 11, 1, 0, 0, 0, 0, shanghai)
	r := newRig(t, endOct.Add(49*time.Hour))
	f := newFeeder(t, r)
	c := r.newCloser(t)
	ctx := context.Background()
	tm := tenantMonth{TenantID: "acme", Month: "2026-10"}
	f.devices(t, 0, "2026-10", guids("a", 5), time.Now())
	f.devices(t, 1, "2026-10", guids("b", 3), time.Now())
	v1, err := c.Close(ctx, tm)
	if err != nil || v1 == nil || v1.MAU != 8 {
		t.Fatalf("v1 = %+v, %v; want MAU 8", v1, err)
	}
	// Visible now, stamped an hour before the close.
	f.devices(t, 1, "2026-10", guids("slow", 1), time.Now().Add(-time.Hour))
	v2, err := c.Close(ctx, tm)
	if err != nil || v2 == nil || v2.Version != 2 || v2.MAU != 9 || v2.Kind != "restatement" {
		t.Fatalf("v2 = %+v, %v; want restatement v2 with MAU 9", v2, err)
	}
	// Nothing new: nothing written.
	if v, err := c.Close(ctx, tm); err != nil || v != nil {
		t.Fatalf("close without new devices wrote %+v, %v", v, err)
	}
	// The automatic check finds the next one the same way.
	f.devices(t, 2, "2026-10", guids("slow2", 2), time.Now().Add(-24*time.Hour))
	pub := bus.NewJSONPublisher(bus.Plain(r.brokers), r.rollups, bus.RollupSchema)
	defer pub.Close()
	if err := c.check(ctx, pub); err != nil {
		t.Fatal(err)
	}
	if v3 := r.rollup(t, "2026-10", 3); v3.MAU != 11 {
		t.Errorf("v3 MAU = %d, want 11", v3.MAU)
	}
	for p, off := range v2.Watermark {
		if v1.Watermark[p] > off {
			t.Errorf("partition %d: v2 watermark %d below v1's %d", p, off, v1.Watermark[p])
		}
	}
}

// TestCloseRaceFenced: four closers (the automatic one and three commands, as separate
// processes would be) close and restate one month at once for 30 rounds, each round bringing
// late devices on a random partition. Versions strictly increase, every version has one
// writer and one content in ClickHouse and on the topic, and the last equals uniqExact.
func TestCloseRaceFenced(t *testing.T) {
	shanghai, _ := time.LoadLocation("Asia/Shanghai")
	endOct := time.Date(2026, 11, 1, 0, 0, 0, 0, shanghai)
	r := newRig(t, endOct.Add(49*time.Hour))
	f := newFeeder(t, r)
	ctx := context.Background()
	tm := tenantMonth{TenantID: "acme", Month: "2026-10"}
	auto := r.newCloser(t)
	autoCtx, stopAuto := context.WithCancel(ctx)
	autoDone := make(chan struct{})
	go func() { defer close(autoDone); auto.Run(autoCtx) }()
	closers := []*Closer{r.newCloser(t), r.newCloser(t), r.newCloser(t)}
	total := 0
	for round := range 30 {
		n := 1 + round%4
		f.devices(t, round%4, "2026-10", guids(fmt.Sprintf("late%d", round), n), time.Now().Add(-time.Duration(round)*time.Minute))
		total += n
		var wg sync.WaitGroup
		for _, c := range closers {
			wg.Go(func() {
				cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				defer cancel()
				if _, err := c.Close(cctx, tm); err != nil {
					t.Errorf("round %d: close: %v", round, err)
				}
			})
		}
		wg.Wait()
	}
	stopAuto()
	<-autoDone

	// ClickHouse, raw rows (no FINAL): one writer per version, versions 1..N in a row, MAU and
	// watermark never going down.
	conn := f.conn
	rows, err := conn.Query(ctx, `SELECT version, count(), groupUniqArray(writer), any(mau), any(watermark)
		FROM mau_rollups WHERE tenant_id = 'acme' AND month = '2026-10' GROUP BY version ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	writers := map[uint32]string{}
	mau := map[uint32]uint64{}
	var last uint32
	var lastMAU uint64
	lastWM := map[uint32]int64{}
	for rows.Next() {
		var v uint32
		var n, m uint64
		var ws []string
		var wm map[uint32]int64
		if err := rows.Scan(&v, &n, &ws, &m, &wm); err != nil {
			t.Fatal(err)
		}
		if v != last+1 || n != 1 || len(ws) != 1 || m < lastMAU {
			t.Errorf("version %d after %d: %d rows, writers %v, MAU %d after %d", v, last, n, ws, m, lastMAU)
		}
		for p, off := range lastWM {
			if wm[p] < off {
				t.Errorf("version %d: partition %d watermark %d below %d", v, p, wm[p], off)
			}
		}
		writers[v], mau[v], last, lastMAU, lastWM = ws[0], m, v, m, wm
	}
	rows.Close()
	if last < 30 {
		t.Errorf("%d versions for 30 rounds of late devices, want at least 30", last)
	}
	var exact uint64
	if err := conn.QueryRow(ctx, `SELECT uniqExact(device_key) FROM mau_devices WHERE tenant_id = 'acme' AND month = '2026-10'`).Scan(&exact); err != nil {
		t.Fatal(err)
	}
	if exact != uint64(total) || lastMAU != exact {
		t.Errorf("last version %d has MAU %d; uniqExact %d; devices sent %d", last, lastMAU, exact, total)
	}
	// The topic: every message of a version carries that version's writer and MAU.
	end, err := bus.EndOffsets(ctx, bus.Plain(r.brokers), r.rollups)
	if err != nil {
		t.Fatal(err)
	}
	rd := kafka.NewReader(kafka.ReaderConfig{Brokers: r.brokers, Topic: r.rollups, Partition: 0, MaxWait: 100 * time.Millisecond})
	defer rd.Close()
	seen := map[uint32]bool{}
	for i := int64(0); i < end[0]; i++ {
		rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		m, err := rd.ReadMessage(rctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		var ro chstore.Rollup
		if err := json.Unmarshal(m.Value, &ro); err != nil {
			t.Fatal(err)
		}
		if ro.Writer != writers[ro.Version] || ro.MAU != mau[ro.Version] {
			t.Errorf("topic: v%d by %s MAU %d; ClickHouse: by %s MAU %d", ro.Version, ro.Writer, ro.MAU, writers[ro.Version], mau[ro.Version])
		}
		seen[ro.Version] = true
	}
	if len(seen) != int(last) {
		t.Errorf("topic carries %d of %d versions", len(seen), last)
	}
	// The race really ran: closes lost versions to others and re-read them.
	var lost float64
	for _, c := range append(closers, auto) {
		var m dto.Metric
		if err := c.lost.Write(&m); err != nil {
			t.Fatal(err)
		}
		lost += m.GetCounter().GetValue()
	}
	if lost == 0 {
		t.Error("no close lost a version: the closers never raced")
	}
	t.Logf("30 rounds, %d devices: %d versions, final MAU %d; %v writes lost to another close", total, last, lastMAU, lost)
}
