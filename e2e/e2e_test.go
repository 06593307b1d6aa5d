package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/maumeter/maumeter/pipeline/bus"
)

// catalogue is the tenant catalogue of every test (catalogueAt the clock, set by TestMain),
// with the ingest keys of t-shanghai, t-newyork, t-auckland and t-poc in the four %s
// (startPipeline makes them with `maumeter keys new`; withReadKeys adds read and operator
// keys). t-poc, on poc_pro (cap 200), gets traffic only in TestPOCCap.
var catalogue string

// catalogueAt is the catalogue with every plan purchased on the first day of the month six
// months before now's: in force, whatever the date, over every month a test uses, from four
// months back (TestImport) to the current one, and for five months ahead.
func catalogueAt(now time.Time) string {
	y, m, _ := now.UTC().Date()
	return strings.ReplaceAll(catalogueTemplate, "PURCHASED", time.Date(y, m-6, 1, 0, 0, 0, 0, time.UTC).Format(time.DateOnly))
}

const catalogueTemplate = `
tenants:
  - id: t-shanghai
    plan: pro
    purchased: PURCHASED
    time_zone: Asia/Shanghai
    apps: [sh-super, sh-lite]
    testing_apps: [sh-qa]
    ingest_keys: [%s]
  - id: t-newyork
    plan: enterprise
    purchased: PURCHASED
    time_zone: America/New_York
    apps: [ny-super]
    ingest_keys: [%s]
  - id: t-auckland
    plan: pro
    purchased: PURCHASED
    time_zone: Pacific/Auckland
    apps: [nz-super]
    contract: {included_mau: 100, unit_price_usd: "0.015"}
    ingest_keys: [%s]
  - id: t-poc
    plan: poc_pro
    purchased: PURCHASED
    time_zone: Europe/Berlin
    testing_apps: [poc-app, poc-app-2]
    ingest_keys: [%s]
`

var tenantOrder = []string{"t-shanghai", "t-newyork", "t-auckland", "t-poc"}

var zones = map[string]string{"t-shanghai": "Asia/Shanghai", "t-newyork": "America/New_York", "t-auckland": "Pacific/Auckland"}
var apps = map[string][]string{"t-shanghai": {"sh-super", "sh-lite", "sh-qa"}, "t-newyork": {"ny-super"}, "t-auckland": {"nz-super"}}

// line is one event line of a request and what the API must answer for it.
type line struct {
	tenant string // whose ingest key sends it
	json   string
	reason string // "" when the event must be accepted
}

// traffic is a generated run: request bodies and the truth of the accepted events.
type traffic struct {
	batches   [][]line
	truth     map[string]map[string]map[string]bool // tenant → month → app/guid
	events    int
	malformed int
}

func (tr *traffic) add(tenant, app, guid string, ts time.Time) {
	loc, _ := time.LoadLocation(zones[tenant])
	month := ts.In(loc).Format("2006-01") // computed here, not with pkg/calendar
	if tr.truth[tenant] == nil {
		tr.truth[tenant] = map[string]map[string]bool{}
	}
	if tr.truth[tenant][month] == nil {
		tr.truth[tenant][month] = map[string]bool{}
	}
	tr.truth[tenant][month][app+"/"+guid] = true
}

// generate makes devicesPer devices per tenant with 1-3 events each over [now−33d, now−1m],
// a block of devices whose events straddle the start of the current month in the tenant's
// zone, 5% duplicated events, and about 1% malformed events of every kind.
func generate(rng *rand.Rand, now time.Time, devicesPer int) *traffic {
	tr := &traffic{truth: map[string]map[string]map[string]bool{}}
	from, to := now.Add(-33*24*time.Hour), now.Add(-time.Minute)
	var all []line
	types := []string{"search", "pre_download", "open"}
	mk := func(tenant, app, guid string, ts time.Time) line {
		typ := types[rng.IntN(3)]
		mp := ""
		if typ != "search" || rng.IntN(2) == 0 {
			mp = fmt.Sprintf(`,"mini_program_id":"mp-%d"`, rng.IntN(40))
		}
		loc, _ := time.LoadLocation(zones[tenant])
		return line{tenant: tenant, json: fmt.Sprintf(`{"tenant_id":%q,"app_id":%q,"guid":%q,"event":%q%s,"ts":%q}`,
			tenant, app, guid, typ, mp, ts.In(loc).Format(time.RFC3339Nano))}
	}
	for tenant := range zones {
		loc, _ := time.LoadLocation(zones[tenant])
		y, m, _ := now.In(loc).Date()
		boundary := time.Date(y, m, 1, 0, 0, 0, 0, loc)
		for d := range devicesPer {
			app := apps[tenant][d%len(apps[tenant])]
			guid := fmt.Sprintf("%s-%07d-%x", tenant, d, rng.Uint32())
			n := 1 + rng.IntN(3)
			for range n {
				ts := from.Add(time.Duration(rng.Int64N(int64(to.Sub(from)))))
				if d%20 == 0 { // 5% of devices live at the month boundary, ±90 s
					ts = boundary.Add(time.Duration(rng.Int64N(int64(180*time.Second))) - 90*time.Second)
				}
				l := mk(tenant, app, guid, ts)
				tr.add(tenant, app, guid, ts)
				all = append(all, l)
				if rng.IntN(20) == 0 {
					all = append(all, l) // an SDK that sent the same event twice
				}
			}
		}
	}
	// Malformed events: each kind must be rejected with its reason and count nothing.
	hourAgo := now.Add(-time.Hour).Format(time.RFC3339)
	bad := []line{
		{"t-shanghai", `{"tenant_id":"t-shanghai","app_id":"sh-super","guid":"x",`, "bad_json"},
		{"t-shanghai", `"just a string"`, "bad_json"},
		{"t-shanghai", `{"tenant_id":"t-shanghai","app_id":"sh-super","event":"open","mini_program_id":"m","ts":"` + hourAgo + `"}`, "missing_field"},
		{"t-shanghai", `{"tenant_id":"t-shanghai","app_id":"sh-super","guid":42,"event":"open","mini_program_id":"m","ts":"` + hourAgo + `"}`, "bad_field"},
		{"t-newyork", `{"tenant_id":"t-newyork","app_id":"ny-super","guid":"bad-type","event":"install","ts":"` + hourAgo + `"}`, "bad_event_type"},
		{"t-newyork", `{"tenant_id":"t-newyork","app_id":"ny-super","guid":"no-mp","event":"open","ts":"` + hourAgo + `"}`, "missing_field"},
		{"t-newyork", `{"tenant_id":"t-newyork","app_id":"sh-super","guid":"wrong-app","event":"search","ts":"` + hourAgo + `"}`, "unknown_app"},
		{"t-newyork", `{"tenant_id":"t-nobody","app_id":"x","guid":"who","event":"search","ts":"` + hourAgo + `"}`, "tenant_mismatch"},
		{"t-newyork", `{"tenant_id":"t-shanghai","app_id":"sh-super","guid":"cross","event":"search","ts":"` + hourAgo + `"}`, "tenant_mismatch"},
		{"t-auckland", `{"tenant_id":"t-auckland","app_id":"nz-super","guid":"old","event":"search","ts":"` + now.Add(-40*24*time.Hour).Format(time.RFC3339) + `"}`, "ts_too_old"},
		{"t-auckland", `{"tenant_id":"t-auckland","app_id":"nz-super","guid":"future","event":"search","ts":"` + now.Add(time.Hour).Format(time.RFC3339) + `"}`, "ts_in_future"},
		{"t-auckland", `{"tenant_id":"t-auckland","app_id":"nz-super","guid":"no-offset","event":"search","ts":"` + now.Add(-time.Hour).UTC().Format("2006-01-02T15:04:05") + `"}`, "bad_field"},
	}
	for i := 0; i < len(all)/100; i++ {
		all = append(all, bad[i%len(bad)])
		tr.malformed++
	}
	rng.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	tr.events = len(all)
	// A request carries one tenant's key, so one tenant's lines; the requests of the tenants mix.
	byTenant := map[string][]line{}
	for _, l := range all {
		byTenant[l.tenant] = append(byTenant[l.tenant], l)
	}
	for _, tenant := range tenantOrder {
		lines := byTenant[tenant]
		for len(lines) > 0 {
			n := min(len(lines), 200+rng.IntN(801))
			tr.batches = append(tr.batches, lines[:n])
			lines = lines[n:]
		}
	}
	rng.Shuffle(len(tr.batches), func(i, j int) { tr.batches[i], tr.batches[j] = tr.batches[j], tr.batches[i] })
	return tr
}

// send posts every batch (4 in flight) and checks each answer event by event. Every 50th batch
// is sent twice, as an SDK retrying after a lost response does. onProgress is called with the
// fraction of batches sent.
func send(t *testing.T, p *pipeline, tr *traffic, onProgress func(done float64)) {
	t.Helper()
	var next atomic.Int64
	var sent atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(tr.batches) {
					return
				}
				times := 1
				if i%50 == 0 {
					times = 2
				}
				for range times {
					if err := post(p.ingestURL+"/v1/events", p.keys[tr.batches[i][0].tenant], tr.batches[i]); err != nil {
						errs <- fmt.Errorf("batch %d: %w", i, err)
						return
					}
				}
				if onProgress != nil {
					onProgress(float64(sent.Add(1)) / float64(len(tr.batches)))
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func post(url, key string, batch []line) error {
	accepted, reasons, err := submit(url, key, batch)
	if err != nil {
		return err
	}
	want := 0
	for i, l := range batch {
		if reasons[i] != l.reason {
			return fmt.Errorf("event %d %s: reason %q, want %q", i, l.json, reasons[i], l.reason)
		}
		if l.reason == "" {
			want++
		}
	}
	if accepted != want || len(reasons) != len(batch)-want {
		return fmt.Errorf("accepted %d rejected %d, want %d and %d", accepted, len(reasons), want, len(batch)-want)
	}
	return nil
}

// submit posts a batch as NDJSON, retrying 503 and 429, and returns the accepted count and the
// reason of every rejected index.
func submit(url, key string, batch []line) (int, map[int]string, error) {
	var body bytes.Buffer
	for _, l := range batch {
		body.WriteString(l.json)
		body.WriteByte('\n')
	}
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body.Bytes()))
		if err != nil {
			return 0, nil, err
		}
		req.Header.Set("Content-Type", "application/x-ndjson")
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, nil, err
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if (resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusTooManyRequests) && attempt < 300 {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		if resp.StatusCode != http.StatusOK {
			return 0, nil, fmt.Errorf("%s: %s", resp.Status, data)
		}
		var r struct {
			Accepted int `json:"accepted"`
			Rejected []struct {
				Index  int    `json:"index"`
				Reason string `json:"reason"`
			} `json:"rejected"`
		}
		if err := json.Unmarshal(data, &r); err != nil {
			return 0, nil, err
		}
		reasons := map[int]string{}
		for _, rj := range r.Rejected {
			reasons[rj.Index] = rj.Reason
		}
		return r.Accepted, reasons, nil
	}
}

// pipeline is one isolated maumeter deployment: its own database, topic and group.
type pipeline struct {
	env       []string
	ingest    *proc
	counter   *proc
	ingestURL string
	countURL  string
	// The admin listeners (--admin-addr): /metrics and /debug/pprof/, which the public
	// listeners do not serve.
	ingestAdmin string
	countAdmin  string
	keys        map[string]string // tenant → ingest key
	readKeys    map[string]string // tenant → read key (its MAU and invoices)
	operator    string            // operator key (every tenant's MAU and invoices)
	database    string
	topic       string
	group       string
	// unchecked are tenants that check leaves to its caller: a chaos row's tenant that the
	// shared catalogue lacks (measureChaos and checkExtraAPI check it).
	unchecked map[string]bool
}

func startPipeline(t *testing.T, name string) *pipeline {
	t.Helper()
	dir := t.TempDir()
	tenants := filepath.Join(dir, "tenants.yaml")
	if err := os.WriteFile(tenants, fmt.Appendf(nil, catalogue, "", "", "", ""), 0o644); err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("%s_%d", name, time.Now().UnixNano())
	p := &pipeline{database: "e2e_" + id, topic: "e2e." + id, group: "e2e-count-" + id, keys: map[string]string{}, readKeys: map[string]string{}}
	p.env = []string{
		"MAUMETER_KAFKA_BROKERS=" + brokers,
		"MAUMETER_CLICKHOUSE_ADDR=" + clickhouseA,
		"MAUMETER_CLICKHOUSE_DATABASE=" + p.database,
		"MAUMETER_EVENTS_TOPIC=" + p.topic,
		"MAUMETER_CAPS_TOPIC=e2e.caps." + id,
		"MAUMETER_PARKED_TOPIC=e2e.parked." + id,
		"MAUMETER_DLQ_TOPIC=e2e.dlq." + id,
		"MAUMETER_QUOTA_TOPIC=e2e.quota." + id,
		"MAUMETER_COUNT_GROUP=" + p.group,
		"MAUMETER_ROLLUPS_TOPIC=e2e.rollups." + id,
		"MAUMETER_RATE_GROUP=e2e-rate-" + id,
		"MAUMETER_TENANTS=" + tenants,
		"MAUMETER_SESSION_TIMEOUT=6s",
		"MAUMETER_CHECKPOINT_INTERVAL=2s",
		"MAUMETER_LOG_LEVEL=info",
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// An ingest key per tenant, made as an operator would: `maumeter keys new` prints the key
	// once and the line to add to the catalogue.
	var entries []any
	for _, tenant := range tenantOrder {
		key, entry := newKey(t, ctx, p.env, tenant)
		p.keys[tenant] = key
		entries = append(entries, entry)
	}
	// A read key per tenant (its billing staff) and an operator key (the billing process), the
	// same way: `maumeter keys new --read --tenant T` and `maumeter keys new --operator`.
	readEntries := map[string]string{}
	for _, tenant := range tenantOrder {
		p.readKeys[tenant], readEntries[tenant] = newKey(t, ctx, p.env, tenant, "--read")
	}
	var opEntry string
	p.operator, opEntry = newOperatorKey(t, ctx, p.env)
	if err := os.WriteFile(tenants, withReadKeys(t, fmt.Sprintf(catalogue, entries...), readEntries, opEntry), 0o644); err != nil {
		t.Fatal(err)
	}
	runOnce(t, ctx, p.env, "migrate")
	// A second migrate is a no-op.
	runOnce(t, ctx, p.env, "migrate")
	ingestAddr, countAddr, ingestAdmin, countAdmin := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	p.ingestURL, p.countURL = "http://"+ingestAddr, "http://"+countAddr
	p.ingestAdmin, p.countAdmin = "http://"+ingestAdmin, "http://"+countAdmin
	p.ingest = startProc(t, "ingest", p.env, "ingest", "--http-addr", ingestAddr, "--admin-addr", ingestAdmin)
	p.counter = startProc(t, "count", p.env, "count", "--http-addr", countAddr, "--admin-addr", countAdmin)
	waitHTTP(t, p.ingest, p.ingestURL+"/healthz", 30*time.Second)
	waitHTTP(t, p.counter, p.countURL+"/healthz", 30*time.Second)
	return p
}

// waitCounted waits until the counter group has committed the end of every partition.
func (p *pipeline) waitCounted(t *testing.T, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var lag int64 = -1
	var err error
	for ctx.Err() == nil {
		if p.counter.exited() {
			t.Fatalf("counter exited:\n%s", p.counter.tail())
		}
		lag, err = bus.Lag(ctx, bus.Plain([]string{brokers}), p.group, p.topic)
		if err == nil && lag == 0 {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("counter still %d messages behind after %s (err %v):\n%s", lag, timeout, err, p.counter.tail())
}

// check compares the MAU of every tenant-month from the API and from ClickHouse with the truth,
// and the API's billing fields with the truth priced (checkBilling).
func (p *pipeline) check(t *testing.T, tr *traffic) {
	t.Helper()
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{clickhouseA}, Auth: clickhouse.Auth{Database: p.database}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := context.Background()
	rows, err := conn.Query(ctx, "SELECT tenant_id, month, uniqExact(device_key), uniqExact(app_id, guid) FROM mau_devices GROUP BY tenant_id, month")
	if err != nil {
		t.Fatal(err)
	}
	fromCH := map[string]uint64{}
	for rows.Next() {
		var tenant, month string
		var n, byGUID uint64
		if err := rows.Scan(&tenant, &month, &n, &byGUID); err != nil {
			t.Fatal(err)
		}
		if n != byGUID {
			t.Errorf("%s %s: %d device keys but %d distinct (app, guid)", tenant, month, n, byGUID)
		}
		fromCH[tenant+" "+month] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := map[string]uint64{}
	var keys []string
	for tenant, months := range tr.truth {
		for month, set := range months {
			k := tenant + " " + month
			want[k] = uint64(len(set))
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	if len(keys) < 6 {
		t.Errorf("the traffic covers %d tenant-months, want at least 6 (3 tenants × 2 months)", len(keys))
	}
	for k, n := range fromCH {
		if _, ok := want[k]; !ok && !p.unchecked[strings.Fields(k)[0]] {
			t.Errorf("ClickHouse has %s with MAU %d, which the truth does not", k, n)
		}
	}
	for _, k := range keys {
		var tenant, month string
		fmt.Sscan(k, &tenant, &month)
		if fromCH[k] != want[k] {
			t.Errorf("ClickHouse MAU %s = %d, want %d", k, fromCH[k], want[k])
		}
		// The tenant's own read key, as its billing staff would read it.
		var body struct {
			MAU   uint64 `json:"mau"`
			Month string `json:"month"`
		}
		if code, err := getJSON(fmt.Sprintf("%s/v1/tenants/%s/mau?month=%s", p.countURL, tenant, month), p.readKeys[tenant], &body); err != nil || code != http.StatusOK {
			t.Fatalf("API %s: %d %v", k, code, err)
		}
		if body.MAU != want[k] || body.Month != month {
			t.Errorf("API MAU %s = %d (%s), want %d", k, body.MAU, body.Month, want[k])
		}
		t.Logf("%-24s MAU %7d  (ClickHouse %7d, API %7d)", k, want[k], fromCH[k], body.MAU)
		p.checkBilling(t, conn, tenant, month, tr.truth[tenant][month])
	}
}

func TestEndToEnd(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	tr := generate(rand.New(rand.NewPCG(seed, 1)), clockNow(), 34_000)
	if tr.events < 200_000 {
		t.Fatalf("generated %d events, want at least 200,000", tr.events)
	}
	t.Logf("%d events in %d batches, %d malformed", tr.events, len(tr.batches), tr.malformed)
	p := startPipeline(t, "plain")
	start := time.Now()
	send(t, p, tr, nil)
	t.Logf("sent in %s", time.Since(start).Round(time.Millisecond))
	p.waitCounted(t, 3*time.Minute)
	t.Logf("counted %s after the start", time.Since(start).Round(time.Millisecond))
	p.check(t, tr)
	checkReadAuth(t, p, p.countURL, "mau")
	// A read key never ingests, on the real gateway: 401 and nothing accepted.
	for _, key := range []string{p.readKeys["t-newyork"], p.operator} {
		err := post(p.ingestURL+"/v1/events", key, []line{{tenant: "t-newyork", json: `{"tenant_id":"t-newyork","app_id":"ny-super","guid":"read-key","event":"search","ts":"` + clockNow().UTC().Format(time.RFC3339) + `"}`}})
		if err == nil || !strings.Contains(err.Error(), "401") {
			t.Errorf("POST /v1/events with a %.4s… key: %v, want 401", key, err)
		}
	}
}

// checkReadAuth asks a read endpoint of the real binary with every kind of wrong credentials:
// each must be refused with the right status, whatever the tenant, before anything is read.
func checkReadAuth(t *testing.T, p *pipeline, base, endpoint string) {
	t.Helper()
	url := func(tenant string) string { return fmt.Sprintf("%s/v1/tenants/%s/%s", base, tenant, endpoint) }
	for _, a := range []struct {
		name, tenant, key string
		want              int
	}{
		{"no key", "t-newyork", "", http.StatusUnauthorized},
		{"no key, unknown tenant", "t-nobody", "", http.StatusUnauthorized},
		{"t-newyork's ingest key", "t-newyork", p.keys["t-newyork"], http.StatusUnauthorized},
		{"a malformed key", "t-newyork", "mmr_not-a-key", http.StatusUnauthorized},
		{"t-shanghai's read key for t-newyork", "t-newyork", p.readKeys["t-shanghai"], http.StatusForbidden},
		{"t-shanghai's read key for an unknown tenant", "t-nobody", p.readKeys["t-shanghai"], http.StatusForbidden},
		{"the operator key for an unknown tenant", "t-nobody", p.operator, http.StatusNotFound},
		{"t-newyork's read key", "t-newyork", p.readKeys["t-newyork"], http.StatusOK},
		{"the operator key", "t-newyork", p.operator, http.StatusOK},
	} {
		code, err := getJSON(url(a.tenant), a.key, nil)
		if err != nil || code != a.want {
			t.Errorf("%s: GET %s = %d %v, want %d", a.name, url(a.tenant), code, err, a.want)
		}
	}
}

// getJSON sends GET url with key as bearer ("" sends none) and decodes a 200 answer into v.
func getJSON(url, key string, v any) (int, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") == "" {
		return resp.StatusCode, fmt.Errorf("401 without WWW-Authenticate")
	}
	if resp.StatusCode != http.StatusOK || v == nil {
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}
	return resp.StatusCode, json.NewDecoder(resp.Body).Decode(v)
}

// TestCounterKilled SIGKILLs the counter three times while events stream in and once more while
// it catches up, restarting it each time: the MAU must be exactly the truth.
func TestCounterKilled(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 2))
	tr := generate(rng, clockNow(), 34_000)
	p := startPipeline(t, "killed")
	killAt := []float64{0.15 + 0.1*rng.Float64(), 0.45 + 0.1*rng.Float64(), 0.75 + 0.1*rng.Float64()}
	var mu sync.Mutex
	kills := 0
	killAndRestart := func(why string) {
		p.counter.kill()
		kills++
		t.Logf("SIGKILL counter %d (%s)", kills, why)
		time.Sleep(time.Duration(rng.IntN(500)) * time.Millisecond)
		p.counter.start()
	}
	start := time.Now()
	send(t, p, tr, func(done float64) {
		mu.Lock()
		defer mu.Unlock()
		if len(killAt) > 0 && done >= killAt[0] {
			killAt = killAt[1:]
			killAndRestart(fmt.Sprintf("%.0f%% of batches sent", 100*done))
		}
	})
	// Once more while it catches up, if it has not already.
	time.Sleep(time.Duration(rng.IntN(1500)) * time.Millisecond)
	killAndRestart("after sending, while consuming")
	if kills < 4 {
		t.Fatalf("killed the counter %d times, want 4", kills)
	}
	p.waitCounted(t, 4*time.Minute)
	t.Logf("counted %s after the start", time.Since(start).Round(time.Millisecond))
	p.check(t, tr)
}

// TestTwoCounters runs two counter processes in one consumer group: they split the partitions
// and, together, count exactly.
func TestTwoCounters(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	tr := generate(rand.New(rand.NewPCG(seed, 3)), clockNow(), 8_000)
	p := startPipeline(t, "two")
	secondAddr, secondAdmin := freeAddr(t), freeAddr(t)
	second := startProc(t, "count-2", p.env, "count", "--http-addr", secondAddr, "--admin-addr", secondAdmin)
	waitHTTP(t, second, "http://"+secondAddr+"/healthz", 30*time.Second)
	// Healthy is not yet assigned: the group rebalances after the second member joins. Wait for
	// the split before sending, so that both really count.
	shared := func() bool {
		for _, url := range []string{p.countAdmin, "http://" + secondAdmin} {
			if n := assignedPartitions(t, url); n == 0 || n == 8 {
				return false
			}
		}
		return true
	}
	for deadline := time.Now().Add(time.Minute); !shared() && time.Now().Before(deadline); {
		time.Sleep(200 * time.Millisecond)
	}
	send(t, p, tr, nil)
	p.waitCounted(t, 3*time.Minute)
	for _, url := range []string{p.countAdmin, "http://" + secondAdmin} {
		if n := assignedPartitions(t, url); n == 0 || n == 8 {
			t.Errorf("%s owns %v of 8 partitions, want a share", url, n)
		}
	}
	p.check(t, tr)
	// The second counter answers the same exact MAU: its own partitions from memory, the
	// others from their partition rollups.
	p.countURL = "http://" + secondAddr
	p.check(t, tr)
	// Its answer carries the merged sketches of all partitions: an estimate within 3 standard
	// errors and per-app figures.
	for tenant, months := range tr.truth {
		for month, set := range months {
			var body struct {
				MAU         float64            `json:"mau"`
				HLLEstimate float64            `json:"hll_estimate"`
				RelErr      float64            `json:"hll_relative_error"`
				ByApp       map[string]float64 `json:"by_app"`
				Closed      bool               `json:"closed"`
			}
			if code, err := getJSON(fmt.Sprintf("%s/v1/tenants/%s/mau?month=%s", p.countURL, tenant, month), p.operator, &body); err != nil || code != http.StatusOK {
				t.Fatalf("%s %s: %d %v", tenant, month, code, err)
			}
			if d := body.HLLEstimate - float64(len(set)); d*d > (3*body.RelErr*float64(len(set))+3)*(3*body.RelErr*float64(len(set))+3) || len(body.ByApp) == 0 {
				t.Errorf("%s %s: hll_estimate %.0f (±%.4f) by_app %v for MAU %d", tenant, month, body.HLLEstimate, body.RelErr, body.ByApp, len(set))
			}
		}
	}
}

// assignedPartitions reads maumeter_count_assigned_partitions from a counter's /metrics (base:
// its admin listener).
func assignedPartitions(t *testing.T, base string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	for _, line := range bytes.Split(data, []byte("\n")) {
		var v float64
		if n, _ := fmt.Sscanf(string(line), "maumeter_count_assigned_partitions %g", &v); n == 1 {
			return v
		}
	}
	t.Fatalf("%s/metrics has no maumeter_count_assigned_partitions", base)
	return 0
}

// newKey runs `maumeter keys new --tenant tenant` (an ingest key; a read key with --read) and
// returns the key and its catalogue entry (the flow-mapping inside the "- {...}" line it prints).
func newKey(t *testing.T, ctx context.Context, env []string, tenant string, flags ...string) (key, entry string) {
	t.Helper()
	return runKeysNew(t, ctx, env, append([]string{"--tenant", tenant}, flags...)...)
}

// newOperatorKey runs `maumeter keys new --operator`.
func newOperatorKey(t *testing.T, ctx context.Context, env []string) (key, entry string) {
	t.Helper()
	return runKeysNew(t, ctx, env, "--operator")
}

func runKeysNew(t *testing.T, ctx context.Context, env []string, flags ...string) (key, entry string) {
	t.Helper()
	out := runOnce(t, ctx, env, append([]string{"keys", "new"}, flags...)...)
	var lines []string
	for l := range strings.SplitSeq(out, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	prefix := "mmk_"
	if slices.Contains(flags, "--read") {
		prefix = "mmr_"
	} else if slices.Contains(flags, "--operator") {
		prefix = "mmo_"
	}
	if len(lines) != 2 || !strings.HasPrefix(lines[0], prefix) || !strings.HasPrefix(lines[1], "- {") {
		t.Fatalf("maumeter keys new %v printed %q, want a %s… key and a catalogue line", flags, out, prefix)
	}
	return lines[0], strings.TrimPrefix(lines[1], "- ")
}

// withReadKeys adds to a block-style catalogue the read key entry of each tenant (after its
// "  - id: T" line) and the operator key entry (at the top level), as an operator pastes the
// lines `maumeter keys new --read` and `--operator` print.
func withReadKeys(t *testing.T, catalogue string, read map[string]string, operator string) []byte {
	t.Helper()
	added := 0
	out := tenantLine.ReplaceAllStringFunc(catalogue, func(l string) string {
		tenant := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "- id:"))
		if e, ok := read[tenant]; ok {
			added++
			return l + "    read_keys: [" + e + "]\n"
		}
		return l
	})
	if added != len(read) {
		t.Fatalf("withReadKeys: placed %d of %d read keys in:\n%s", added, len(read), catalogue)
	}
	if operator != "" {
		out += "operator_keys: [" + operator + "]\n"
	}
	return []byte(out)
}

var tenantLine = regexp.MustCompile(`(?m)^  - id: \S+\n`)
