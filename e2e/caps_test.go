package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/segmentio/kafka-go"

	"github.com/maumeter/maumeter/pipeline/bus"
	"github.com/maumeter/maumeter/pkg/event"
)

// TestPOCCap: t-poc is on poc_pro, capped at 200 devices per month. Through the built binaries
// (a counter and two gateways) on the real Kafka and ClickHouse:
//
//  1. 200 devices get in through gateway A; A refuses the 201st at once, on its own
//     reservations, and still accepts the 200.
//  2. The counter publishes the month's counted devices; gateway B, which saw none of that
//     traffic, learns from the caps topic (the figure logged is how long after the 200th device
//     was acknowledged) and refuses new devices too, while the 200 still get in.
//  3. In another month, a burst of 250 new devices at each gateway at once, before either
//     knows the other's: each admits at most the cap, so together at most 2 × 200 — the
//     documented overshoot of N gateways, (N−1) × cap at worst. Once the counter's state
//     arrives both refuse new devices and accept the other's.
//
// The month of step 1 ends at exactly 200; nothing refused is counted; every accepted device is.
func TestPOCCap(t *testing.T) {
	p := startPipeline(t, "caps")
	addrB, adminB := freeAddr(t), freeAddr(t)
	gwB := startProc(t, "ingest-2", p.env, "ingest", "--http-addr", addrB, "--admin-addr", adminB)
	urlA, urlB := p.ingestURL, "http://"+addrB
	metricsA, metricsB := p.ingestAdmin, "http://"+adminB // the admin listeners
	// Ready means each gateway has read the caps topic to its end.
	waitHTTP(t, p.ingest, urlA+"/readyz", 30*time.Second)
	waitHTTP(t, gwB, urlB+"/readyz", 30*time.Second)
	key := p.keys["t-poc"]
	const limit = 200

	berlin, _ := time.LoadLocation("Europe/Berlin")
	ts := clockNow().Add(-2 * time.Minute)
	if ts.In(berlin).Month() != ts.Add(2*time.Minute).In(berlin).Month() {
		ts = ts.Add(-5 * time.Minute) // keep the events clear of a month boundary
	}
	month := ts.In(berlin).Format("2006-01")
	monthStart := time.Date(ts.In(berlin).Year(), ts.In(berlin).Month(), 1, 0, 0, 0, 0, berlin)
	ts2 := monthStart.Add(-time.Hour) // the month before, well within the 35-day window
	month2 := ts2.In(berlin).Format("2006-01")
	ev := func(app, guid string, at time.Time, reason string) line {
		return line{tenant: "t-poc", reason: reason, json: fmt.Sprintf(`{"tenant_id":"t-poc","app_id":%q,"guid":%q,"event":"open","mini_program_id":"mp-1","ts":%q}`,
			app, guid, at.In(berlin).Format(time.RFC3339Nano))}
	}
	const capped = "poc_cap_reached"
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	postAll := func(url string, lines []line) {
		t.Helper()
		for len(lines) > 0 {
			n := min(len(lines), 100)
			if err := post(url+"/v1/events", key, lines[:n]); err != nil {
				t.Fatal(err)
			}
			lines = lines[n:]
		}
	}
	rejectedTotal := 0

	// 1. 200 devices, two events each, shuffled over four requests to gateway A.
	counted := make([]string, limit)
	var lines []line
	for i := range counted {
		counted[i] = fmt.Sprintf("dev-%03d", i)
		lines = append(lines, ev("poc-app", counted[i], ts, ""), ev("poc-app", counted[i], ts.Add(time.Second), ""))
	}
	rng.Shuffle(len(lines), func(i, j int) { lines[i], lines[j] = lines[j], lines[i] })
	postAll(urlA, lines)
	fullAt := time.Now()
	postAll(urlA, []line{
		ev("poc-app", "new-a1", ts, capped),
		ev("poc-app", counted[3], ts, ""),
		ev("poc-app-2", counted[0], ts, capped), // the same GUID in another app is another device
		ev("poc-app", "new-a2", ts, capped),
		ev("poc-app", counted[199], ts.Add(time.Minute), ""),
	})
	rejectedTotal += 3

	// 2. Gateway B learns from the counter's cap state.
	for scrape(t, metricsB, "maumeter_caps_state_capped_tenant_months") < 1 {
		if time.Since(fullAt) > time.Minute {
			t.Fatalf("gateway B has not learnt the cap state a minute after the 200th device")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("cap state at gateway B %s after the 200th device was acknowledged (counter flush 1 s, --cap-interval 1 s)",
		time.Since(fullAt).Round(time.Millisecond))
	lines = nil
	for i := range 20 {
		lines = append(lines, ev("poc-app", fmt.Sprintf("new-b%02d", i), ts, capped), ev("poc-app", counted[rng.IntN(limit)], ts, ""))
	}
	rng.Shuffle(len(lines), func(i, j int) { lines[i], lines[j] = lines[j], lines[i] })
	postAll(urlB, lines)
	rejectedTotal += 20

	// 3. A burst in another month at both gateways at once.
	admitted := map[string]map[string]bool{urlA: {}, urlB: {}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g, url := range []string{urlA, urlB} {
		wg.Go(func() {
			var burst []line
			for i := range 250 {
				burst = append(burst, ev("poc-app", fmt.Sprintf("burst-%d-%03d", g, i), ts2, ""))
			}
			for len(burst) > 0 {
				n := min(len(burst), 50)
				accepted, reasons, err := submit(url+"/v1/events", key, burst[:n])
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				for i, l := range burst[:n] {
					switch reasons[i] {
					case "":
						admitted[url][guidOf(l)] = true
					case capped:
						rejectedTotal++
					default:
						t.Errorf("burst event %s: reason %q", l.json, reasons[i])
					}
				}
				mu.Unlock()
				if accepted != n-len(reasons) {
					t.Errorf("burst: accepted %d of %d with %d rejected", accepted, n, len(reasons))
				}
				burst = burst[n:]
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	nA, nB := len(admitted[urlA]), len(admitted[urlB])
	t.Logf("burst of 250 new devices at each gateway in %s: A admitted %d, B admitted %d (cap %d each, 2 × cap together)", month2, nA, nB, limit)
	if nA > limit || nB > limit || nA+nB < limit {
		t.Errorf("burst: gateways admitted %d and %d, want each at most %d and together at least %d", nA, nB, limit, limit)
	}
	// Once the counter's state of month2 reaches both, a device admitted by one gets in at the
	// other, and new devices get in at neither.
	var fromA, fromB string
	for g := range admitted[urlA] {
		fromA = g
	}
	for g := range admitted[urlB] {
		fromB = g
	}
	deadline := time.Now().Add(time.Minute)
	for {
		// Probing with a counted device never changes the state.
		_, rA, errA := submit(urlA+"/v1/events", key, []line{ev("poc-app", fromB, ts2, "")})
		_, rB, errB := submit(urlB+"/v1/events", key, []line{ev("poc-app", fromA, ts2, "")})
		if errA != nil || errB != nil {
			t.Fatal(errA, errB)
		}
		if len(rA) == 0 && len(rB) == 0 {
			break
		}
		rejectedTotal += len(rA) + len(rB)
		if time.Now().After(deadline) {
			t.Fatalf("a minute after the burst the gateways still refuse each other's devices: %v %v", rA, rB)
		}
		time.Sleep(50 * time.Millisecond)
	}
	postAll(urlA, []line{ev("poc-app", "new-after-burst-a", ts2, capped)})
	postAll(urlB, []line{ev("poc-app", "new-after-burst-b", ts2, capped)})
	rejectedTotal += 2

	// What was produced: nothing refused reached the events topic.
	produced := 0
	for _, e := range readEvents(t, p.topic) {
		produced++
		switch {
		case strings.HasPrefix(e.GUID, "new-") || e.AppID == "poc-app-2":
			t.Errorf("refused event of %s/%s is in the events topic", e.AppID, e.GUID)
		case strings.HasPrefix(e.GUID, "burst-") && !admitted[urlA][e.GUID] && !admitted[urlB][e.GUID]:
			t.Errorf("refused burst device %s is in the events topic", e.GUID)
		}
	}
	t.Logf("%d events in the topic, %d refused with poc_cap_reached", produced, rejectedTotal)

	// What was counted.
	p.waitCounted(t, 2*time.Minute)
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{clickhouseA}, Auth: clickhouse.Auth{Database: p.database}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := context.Background()
	var mau, refused uint64
	if err := conn.QueryRow(ctx, `SELECT uniqExact(device_key), countIf(guid LIKE 'new-%') FROM mau_devices WHERE tenant_id = 't-poc' AND month = ?`, month).Scan(&mau, &refused); err != nil {
		t.Fatal(err)
	}
	if mau != limit || refused != 0 {
		t.Errorf("%s: MAU %d with %d refused devices counted, want exactly %d and none", month, mau, refused, limit)
	}
	var mau2 uint64
	var guids []string
	if err := conn.QueryRow(ctx, `SELECT uniqExact(device_key), groupUniqArray(guid) FROM mau_devices WHERE tenant_id = 't-poc' AND month = ?`, month2).Scan(&mau2, &guids); err != nil {
		t.Fatal(err)
	}
	if int(mau2) != nA+nB {
		t.Errorf("%s: MAU %d, want the %d devices the gateways admitted", month2, mau2, nA+nB)
	}
	for _, g := range guids {
		if !admitted[urlA][g] && !admitted[urlB][g] {
			t.Errorf("%s: device %s counted, but no gateway admitted it", month2, g)
		}
	}
	t.Logf("%s: MAU %d (cap %d); %s: MAU %d, overshoot %d from the burst at two gateways", month, mau, limit, month2, mau2, int(mau2)-limit)
	// The API agrees, and the gateways counted their refusals.
	var body struct {
		MAU uint64 `json:"mau"`
	}
	code, err := getJSON(fmt.Sprintf("%s/v1/tenants/t-poc/mau?month=%s", p.countURL, month), p.readKeys["t-poc"], &body)
	if err != nil || code != http.StatusOK || body.MAU != limit {
		t.Errorf("API MAU of %s = %d %d (%v), want %d", month, code, body.MAU, err, limit)
	}
	got := scrape(t, metricsA, `maumeter_ingest_events_rejected_total{reason="poc_cap_reached"}`) +
		scrape(t, metricsB, `maumeter_ingest_events_rejected_total{reason="poc_cap_reached"}`)
	if int(got) != rejectedTotal {
		t.Errorf("gateways counted %v poc_cap_reached rejections, the responses said %d", got, rejectedTotal)
	}
}

// guidOf is the guid of a line made by TestPOCCap.
func guidOf(l line) string {
	var e struct {
		GUID string `json:"guid"`
	}
	json.Unmarshal([]byte(l.json), &e)
	return e.GUID
}

// scrape reads one sample from a process's /metrics (base: its admin listener): the line that starts with series (a metric
// name, with its labels when it has any); 0 when there is none.
func scrape(t *testing.T, base, series string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	for l := range bytes.SplitSeq(data, []byte("\n")) {
		rest, ok := strings.CutPrefix(string(l), series+" ")
		if !ok {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(rest, &v); err == nil {
			return v
		}
	}
	return 0
}

// readEvents reads every event of a topic, from its first to its current end offsets.
func readEvents(t *testing.T, topic string) []event.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ends, err := bus.EndOffsets(ctx, bus.Plain([]string{brokers}), topic)
	if err != nil {
		t.Fatal(err)
	}
	var out []event.Event
	for p, end := range ends {
		if end == 0 {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{brokers}, Topic: topic, Partition: p, MaxWait: 100 * time.Millisecond})
		for {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				t.Fatalf("read %s partition %d: %v", topic, p, err)
			}
			e, err := event.Decode(m.Value)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, e)
			if m.Offset+1 >= end {
				break
			}
		}
		r.Close()
	}
	return out
}
