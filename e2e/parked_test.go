package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/segmentio/kafka-go"

	"github.com/maumeter/maumeter/internal/kafkatest"
	"github.com/maumeter/maumeter/pkg/event"
)

// lateTenant is a tenant the gateway's catalogue gets before the counter's (a rolling deploy
// that updated the gateways first).
const lateTenant = `  - id: t-late
    plan: pro
    purchased: PURCHASED
    time_zone: Europe/Paris
    apps: [late-app]
    ingest_keys: [%s]
`

// chMAU is the exact MAU of every tenant-month in ClickHouse (uniqExact over mau_devices).
func chMAU(t *testing.T, database string) map[string]uint64 {
	t.Helper()
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{clickhouseA}, Auth: clickhouse.Auth{Database: database}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rows, err := conn.Query(context.Background(), "SELECT tenant_id, month, uniqExact(device_key) FROM mau_devices GROUP BY tenant_id, month")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]uint64{}
	for rows.Next() {
		var tenant, month string
		var n uint64
		if err := rows.Scan(&tenant, &month, &n); err != nil {
			t.Fatal(err)
		}
		out[tenant+" "+month] = n
	}
	return out
}

// TestParkedUntilTheCounterKnowsTheTenant: a gateway whose catalogue has tenant t-late and a
// counter whose catalogue does not. t-late's acknowledged events are parked (metric, /readyz),
// none is counted, and t-shanghai's are counted meanwhile; once the counter's catalogue file is
// replaced with one that has t-late, every one of t-late's devices is counted once (ClickHouse
// uniqExact and the API agree with the test's truth) and t-shanghai's MAU does not move.
func TestParkedUntilTheCounterKnowsTheTenant(t *testing.T) {
	start := time.Now()
	now := clockNow()
	dir := t.TempDir()
	gwFile, countFile := filepath.Join(dir, "gateway.yaml"), filepath.Join(dir, "counter.yaml")
	id := fmt.Sprintf("parked_%d", time.Now().UnixNano())
	purchased := time.Date(now.UTC().Year(), now.UTC().Month()-6, 1, 0, 0, 0, 0, time.UTC).Format(time.DateOnly)
	withLate := catalogueAt(now) + strings.ReplaceAll(lateTenant, "PURCHASED", purchased)
	if err := os.WriteFile(gwFile, fmt.Appendf(nil, withLate, "", "", "", "", ""), 0o644); err != nil {
		t.Fatal(err)
	}
	database, topic, group := "e2e_"+id, "e2e."+id, "e2e-count-"+id
	env := []string{
		"MAUMETER_KAFKA_BROKERS=" + brokers,
		"MAUMETER_CLICKHOUSE_ADDR=" + clickhouseA,
		"MAUMETER_CLICKHOUSE_DATABASE=" + database,
		"MAUMETER_EVENTS_TOPIC=" + topic,
		"MAUMETER_CAPS_TOPIC=e2e.caps." + id,
		"MAUMETER_PARKED_TOPIC=e2e.parked." + id,
		"MAUMETER_DLQ_TOPIC=e2e.dlq." + id,
		"MAUMETER_QUOTA_TOPIC=e2e.quota." + id,
		"MAUMETER_COUNT_GROUP=" + group,
		"MAUMETER_ROLLUPS_TOPIC=e2e.rollups." + id,
		"MAUMETER_TENANTS=" + gwFile,
		"MAUMETER_SESSION_TIMEOUT=6s",
		"MAUMETER_CHECKPOINT_INTERVAL=1s",
		"MAUMETER_PARKED_INTERVAL=500ms",
		"MAUMETER_CATALOG_RELOAD=200ms",
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	shKey, shEntry := newKey(t, ctx, env, "t-shanghai")
	lateKey, lateEntry := newKey(t, ctx, env, "t-late")
	opKey, opEntry := newOperatorKey(t, ctx, env)
	gwYAML := withReadKeys(t, fmt.Sprintf(withLate, shEntry, "", "", "", lateEntry), nil, opEntry)
	countYAML := withReadKeys(t, fmt.Sprintf(catalogueAt(now), shEntry, "", "", ""), nil, opEntry)
	if err := os.WriteFile(gwFile, gwYAML, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(countFile, countYAML, 0o644); err != nil {
		t.Fatal(err)
	}
	runOnce(t, ctx, env, "migrate")
	ingestAddr, countAddr, countAdminAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	ingestURL, countURL, countAdmin := "http://"+ingestAddr, "http://"+countAddr, "http://"+countAdminAddr
	gw := startProc(t, "ingest", env, "ingest", "--http-addr", ingestAddr)
	counter := startProc(t, "count", env, "count", "--http-addr", countAddr, "--admin-addr", countAdminAddr, "--tenants", countFile)
	waitHTTP(t, gw, ingestURL+"/healthz", 30*time.Second)
	waitHTTP(t, counter, countURL+"/healthz", 30*time.Second)

	// Traffic over the last 20 days (so over two months on some days of the month), 1-2
	// events a device.
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	truth := map[string]map[string]bool{} // "tenant month" → app/guid
	sent := map[string]int{}
	for _, tn := range []struct {
		id, app, zone, key string
		devices            int
	}{{"t-shanghai", "sh-super", "Asia/Shanghai", shKey, 150}, {"t-late", "late-app", "Europe/Paris", lateKey, 400}} {
		loc, _ := time.LoadLocation(tn.zone)
		var batch []line
		for d := range tn.devices {
			guid := fmt.Sprintf("%s-%05d", tn.id, d)
			for range 1 + rng.IntN(2) {
				ts := now.Add(-time.Minute - time.Duration(rng.Int64N(int64(20*24*time.Hour))))
				k := tn.id + " " + ts.In(loc).Format("2006-01")
				if truth[k] == nil {
					truth[k] = map[string]bool{}
				}
				truth[k][tn.app+"/"+guid] = true
				batch = append(batch, line{tenant: tn.id, json: fmt.Sprintf(`{"tenant_id":%q,"app_id":%q,"guid":%q,"event":"open","mini_program_id":"mp-1","ts":%q}`,
					tn.id, tn.app, guid, ts.In(loc).Format(time.RFC3339Nano))})
			}
		}
		for len(batch) > 0 {
			n := min(len(batch), 300)
			if err := post(ingestURL+"/v1/events", tn.key, batch[:n]); err != nil {
				t.Fatalf("%s: %v", tn.id, err)
			}
			sent[tn.id] += n
			batch = batch[n:]
		}
	}
	p := &pipeline{counter: counter, topic: topic, group: group}
	p.waitCounted(t, time.Minute)
	waitUntil(t, counter, "t-late's events to be parked", time.Minute, func() bool {
		return scrape(t, countAdmin, `maumeter_count_parked_total{reason="unknown_tenant"}`) == float64(sent["t-late"])
	})
	ready := readyz(t, countURL, opKey)
	if ready.code != http.StatusOK || !strings.Contains(ready.Reported["parked"], fmt.Sprintf("%d parked events", sent["t-late"])) {
		t.Errorf("/readyz with parked events = %d %+v, want 200 reporting %d parked events", ready.code, ready, sent["t-late"])
	}
	before := chMAU(t, database)
	for k, n := range before {
		if !strings.HasPrefix(k, "t-shanghai ") || n != uint64(len(truth[k])) {
			t.Errorf("before the reload ClickHouse has %s = %d, want only t-shanghai's truth (%d)", k, n, len(truth[k]))
		}
	}
	t.Logf("%d of t-late's events parked, %d of t-shanghai's counted (%s)", sent["t-late"], sent["t-shanghai"], time.Since(start).Round(time.Millisecond))

	// The counter's catalogue learns t-late: replaced atomically, as an operator's deploy would.
	tmp := countFile + ".tmp"
	if err := os.WriteFile(tmp, gwYAML, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, countFile); err != nil {
		t.Fatal(err)
	}
	reloaded := time.Now()
	waitUntil(t, counter, "t-late's parked events to be replayed and counted", time.Minute, func() bool {
		got := chMAU(t, database)
		for k, set := range truth {
			if got[k] != uint64(len(set)) {
				return false
			}
		}
		return scrape(t, countAdmin, "maumeter_count_parked_waiting") == 0
	})
	p.waitCounted(t, time.Minute)
	t.Logf("replayed and counted %s after the catalogue changed", time.Since(reloaded).Round(time.Millisecond))
	after := chMAU(t, database)
	for k, n := range after {
		if n != uint64(len(truth[k])) {
			t.Errorf("ClickHouse MAU %s = %d, want %d", k, n, len(truth[k]))
		}
		if strings.HasPrefix(k, "t-shanghai ") && before[k] != n {
			t.Errorf("t-shanghai's MAU %s moved from %d to %d", k, before[k], n)
		}
	}
	if len(after) != len(truth) {
		t.Errorf("ClickHouse has %d tenant-months, the truth %d", len(after), len(truth))
	}
	for k, set := range truth {
		tenant, month, _ := strings.Cut(k, " ")
		var body struct {
			MAU uint64 `json:"mau"`
		}
		if code, err := getJSON(fmt.Sprintf("%s/v1/tenants/%s/mau?month=%s", countURL, tenant, month), opKey, &body); err != nil || code != http.StatusOK {
			t.Fatalf("API %s: %d %v", k, code, err)
		}
		if body.MAU != uint64(len(set)) {
			t.Errorf("API MAU %s = %d, want %d", k, body.MAU, len(set))
		}
		t.Logf("%-22s MAU %4d (ClickHouse %4d, API %4d)", k, len(set), after[k], body.MAU)
	}
	if got := scrape(t, countAdmin, "maumeter_count_parked_replayed_total"); got != float64(sent["t-late"]) {
		t.Errorf("replayed %v parked events, want %d", got, sent["t-late"])
	}
	if ready := readyz(t, countURL, opKey); ready.code != http.StatusOK || ready.Reported["parked"] != "" {
		t.Errorf("/readyz after the replay = %d %+v, want 200 with nothing parked", ready.code, ready)
	}
	t.Logf("took %s", time.Since(start).Round(time.Millisecond))
}

type readyBody struct {
	code     int
	Status   string            `json:"status"`
	Failed   map[string]string `json:"failed"`
	Reported map[string]string `json:"reported"`
}

// readyz reads base's /readyz with an operator key (only operators see the checks' details).
func readyz(t *testing.T, base, operatorKey string) readyBody {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+"/readyz", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+operatorKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b readyBody
	if err := json.NewDecoder(resp.Body).Decode(&b); err != nil {
		t.Fatal(err)
	}
	b.code = resp.StatusCode
	return b
}

// waitUntil polls ok every 200 ms until it holds, failing with p's log after timeout.
func waitUntil(t *testing.T, p *proc, what string, timeout time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("waiting for %s: gave up after %s:\n%s", what, timeout, p.tail())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// runStatus runs the binary once and returns its output and exit status.
func runStatus(t *testing.T, ctx context.Context, env []string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	t.Fatalf("maumeter %s: %v\n%s", strings.Join(args, " "), err, out)
	return "", 0
}

// TestDLQ: records no gateway would write, appended to partition 0 of the events topic, go to
// the DLQ with their source coordinates and error, and the partition goes on counting what
// follows. `dlq list` shows them; `dlq replay` counts the one that is a valid event without its
// schema header and reports the two that still fail (exit 3); replaying it again counts
// nothing twice.
func TestDLQ(t *testing.T) {
	start := time.Now()
	p := startPipeline(t, "dlq")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	now := clockNow()
	fixed := event.Event{TenantID: "t-shanghai", AppID: "sh-super", GUID: "dlq-fixed", Type: event.Open, MiniProgramID: "mp-1", TS: now.Add(-time.Hour)}
	value, err := fixed.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	base, err := kafkatest.AppendRecords(ctx, []string{brokers}, p.topic, 0, []kafka.Record{
		{Value: kafka.NewBytes([]byte("garbage\x00\x01"))},
		{Value: kafka.NewBytes(value)}, // no schema header: a producer that forgot it
		{Value: kafka.NewBytes([]byte{0xff, 0xff}), Headers: []kafka.Header{{Key: event.SchemaHeader, Value: []byte(event.SchemaV1)}}}})
	if err != nil {
		t.Fatal(err)
	}
	// Events behind them, through the gateway, on every partition (0 included).
	shanghai, _ := time.LoadLocation("Asia/Shanghai")
	truth := map[string]bool{}
	var batch []line
	for d := range 200 {
		guid := fmt.Sprintf("after-%04d", d)
		truth[guid] = true
		batch = append(batch, line{tenant: "t-shanghai", json: fmt.Sprintf(`{"tenant_id":"t-shanghai","app_id":"sh-super","guid":%q,"event":"search","ts":%q}`,
			guid, now.Add(-time.Hour).In(shanghai).Format(time.RFC3339))})
	}
	if err := post(p.ingestURL+"/v1/events", p.keys["t-shanghai"], batch); err != nil {
		t.Fatal(err)
	}
	p.waitCounted(t, time.Minute)
	month := now.Add(-time.Hour).In(shanghai).Format("2006-01")
	key := "t-shanghai " + month
	waitUntil(t, p.counter, "the DLQ metrics", 30*time.Second, func() bool {
		return scrape(t, p.countAdmin, `maumeter_count_dlq_total{reason="unknown_schema"}`) == 2 &&
			scrape(t, p.countAdmin, `maumeter_count_dlq_total{reason="undecodable"}`) == 1
	})
	if got := chMAU(t, p.database)[key]; got != uint64(len(truth)) {
		t.Fatalf("MAU %s = %d after the DLQ records, want %d", key, got, len(truth))
	}

	env := append(p.env, "MAUMETER_LOG_LEVEL=warn")
	out := runOnce(t, ctx, env, "dlq", "list")
	t.Logf("dlq list:\n%s", out)
	for i, want := range []string{`reason unknown_schema  error "no schema header"  key ""  value (9 bytes) "garbage\x00\x01"`,
		`reason unknown_schema  error "no schema header"`, `reason undecodable  error "decode event`} {
		src := fmt.Sprintf("source %s/0@%d  ", p.topic, base+int64(i))
		if !strings.Contains(out, src+want) {
			t.Errorf("dlq list lacks %q", src+want)
		}
	}
	if !strings.Contains(out, "3 records") {
		t.Errorf("dlq list does not count 3 records")
	}

	out, code := runStatus(t, ctx, env, "dlq", "replay")
	t.Logf("dlq replay:\n%s", out)
	if code != 3 || !strings.Contains(out, "replayed 1 records") || !strings.Contains(out, "2 still fail") {
		t.Fatalf("dlq replay exited %d, want 3 with 1 replayed and 2 still failing", code)
	}
	truth["dlq-fixed"] = true
	waitUntil(t, p.counter, "the replayed event to be counted", 30*time.Second, func() bool {
		return chMAU(t, p.database)[key] == uint64(len(truth))
	})
	// Replayed again, only it: nothing more is counted.
	out = runOnce(t, ctx, env, "dlq", "replay", "--source-partition", "0", "--source-offset", fmt.Sprint(base+1))
	if !strings.Contains(out, "replayed 1 records") || !strings.Contains(out, "0 still fail") {
		t.Errorf("second replay printed %q", out)
	}
	p.waitCounted(t, time.Minute)
	time.Sleep(1500 * time.Millisecond) // a flush interval and more
	if got := chMAU(t, p.database)[key]; got != uint64(len(truth)) {
		t.Errorf("MAU %s = %d after replaying twice, want %d", key, got, len(truth))
	}
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{clickhouseA}, Auth: clickhouse.Auth{Database: p.database}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var rows uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM mau_devices WHERE guid = 'dlq-fixed'").Scan(&rows); err != nil || rows != 1 {
		t.Errorf("mau_devices holds %d rows of the replayed device (%v), want 1", rows, err)
	}
	var body struct {
		MAU uint64 `json:"mau"`
	}
	if code, err := getJSON(fmt.Sprintf("%s/v1/tenants/t-shanghai/mau?month=%s", p.countURL, month), p.operator, &body); err != nil || code != http.StatusOK || body.MAU != uint64(len(truth)) {
		t.Errorf("API MAU %s = %d (%d %v), want %d", key, body.MAU, code, err, len(truth))
	}
	t.Logf("took %s", time.Since(start).Round(time.Millisecond))
}
