package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/segmentio/kafka-go"

	"github.com/maumeter/maumeter/internal/kafkatest"
	"github.com/maumeter/maumeter/pipeline/bus"
	"github.com/maumeter/maumeter/pkg/event"
)

// Two rows of the chaos matrix (chaosRows) and their helpers: a tenant the gateways know before
// the counters do (its events are parked, then replayed), and records of a partition deleted by
// retention before the counter read them (detected, reported, accepted).

// allTraffic is the row's truth with the tenants a row added (extraTruth).
func (r *chaosRun) allTraffic() *traffic {
	all := &traffic{truth: map[string]map[string]map[string]bool{}}
	for tenant, months := range r.tr.truth {
		all.truth[tenant] = months
	}
	for tenant, months := range r.extraTruth {
		all.truth[tenant] = months
	}
	return all
}

// checkExtraAPI compares the MAU API (operator key) with the truth of the tenants a row added.
func (r *chaosRun) checkExtraAPI() {
	t := r.t
	t.Helper()
	for tenant, months := range r.extraTruth {
		for month, set := range months {
			var body struct {
				MAU uint64 `json:"mau"`
			}
			code, err := getJSON(fmt.Sprintf("%s/v1/tenants/%s/mau?month=%s", r.p.countURL, tenant, month), r.p.operator, &body)
			if err != nil || code != http.StatusOK {
				t.Errorf("API %s %s: %d %v", tenant, month, code, err)
				continue
			}
			if body.MAU != uint64(len(set)) {
				t.Errorf("API MAU %s %s = %d, want %d", tenant, month, body.MAU, len(set))
			}
			t.Logf("%-24s MAU %7d  (API %7d)", tenant+" "+month, len(set), body.MAU)
		}
	}
}

// lateTenant sets up the row "tenant added to the gateway first": tenant t-late (Europe/Paris,
// app late-app) is added to the gateway's catalogue (a file of its own) but not to the
// counter's (another file, which lateTenantFault replaces), and devices devices of t-late with
// 1-3 events each in the current month (5% sent twice) are mixed into the first 40% of the
// live batches: every one is acknowledged before the counter learns the tenant. The counter
// reloads its catalogue every second and looks for parked events every second.
func (r *chaosRun) lateTenant(devices int) {
	t := r.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	base, err := os.ReadFile(envValue(r.p.env, "MAUMETER_TENANTS"))
	if err != nil {
		t.Fatal(err)
	}
	now := clockNow()
	purchased := time.Date(now.UTC().Year(), now.UTC().Month()-6, 1, 0, 0, 0, 0, time.UTC).Format(time.DateOnly)
	i := strings.Index(string(base), "\noperator_keys:")
	if i < 0 {
		t.Fatalf("the pipeline's catalogue has no operator_keys line:\n%s", base)
	}
	withLate := func(entry string) []byte {
		return []byte(string(base[:i+1]) + strings.ReplaceAll(fmt.Sprintf(lateTenant, entry), "PURCHASED", purchased) + string(base[i+1:]))
	}
	dir := t.TempDir()
	r.lateFiles = [2]string{filepath.Join(dir, "gateway.yaml"), filepath.Join(dir, "counter.yaml")}
	// `maumeter keys new` wants the tenant in its catalogue: the gateway's, without a key yet.
	if err := os.WriteFile(r.lateFiles[0], withLate(""), 0o644); err != nil {
		t.Fatal(err)
	}
	key, entry := newKey(t, ctx, append(slices.Clone(r.p.env), "MAUMETER_TENANTS="+r.lateFiles[0]), "t-late")
	r.lateCatalogue = withLate(entry)
	if err := os.WriteFile(r.lateFiles[0], r.lateCatalogue, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(r.lateFiles[1], base, 0o644); err != nil {
		t.Fatal(err)
	}
	r.procMu.Lock()
	r.p.ingest.stop()
	r.p.ingest.args = append(slices.Clone(r.p.ingest.args), "--tenants", r.lateFiles[0])
	r.p.ingest.start()
	r.p.counter.stop()
	r.p.counter.args = append(slices.Clone(r.p.counter.args), "--tenants", r.lateFiles[1], "--catalog-reload", "1s", "--parked-interval", "1s")
	r.p.counter.start()
	r.procMu.Unlock()
	waitHTTP(t, r.p.ingest, r.p.ingestURL+"/healthz", 30*time.Second)
	waitHTTP(t, r.p.counter, r.p.countURL+"/healthz", 30*time.Second)
	r.p.keys["t-late"] = key
	r.p.unchecked = map[string]bool{"t-late": true}

	loc, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	y, m, _ := now.In(loc).Date()
	from, to := time.Date(y, m, 1, 0, 0, 0, 0, loc), now.Add(-time.Minute)
	if !to.After(from) {
		to = now
	}
	truth := map[string]map[string]bool{}
	var lines []line
	for d := range devices {
		guid := fmt.Sprintf("late-%07d-%x", d, r.rng.Uint32())
		for range 1 + r.rng.IntN(3) {
			ts := from.Add(time.Duration(r.rng.Int64N(int64(to.Sub(from)) + 1)))
			month := ts.In(loc).Format("2006-01")
			if truth[month] == nil {
				truth[month] = map[string]bool{}
			}
			truth[month]["late-app/"+guid] = true
			l := line{tenant: "t-late", json: fmt.Sprintf(`{"tenant_id":"t-late","app_id":"late-app","guid":%q,"event":"open","mini_program_id":"mp-%d","ts":%q}`,
				guid, d%40, ts.In(loc).Format(time.RFC3339Nano))}
			lines = append(lines, l)
			if r.rng.IntN(20) == 0 {
				lines = append(lines, l) // an SDK that sent the same event twice
			}
		}
	}
	r.extraTruth["t-late"] = truth
	r.lateEvents = len(lines)
	r.rng.Shuffle(len(lines), func(i, j int) { lines[i], lines[j] = lines[j], lines[i] })
	batches := 0
	for len(lines) > 0 {
		n := min(len(lines), 200+r.rng.IntN(801))
		r.live = slices.Insert(r.live, r.rng.IntN(len(r.live)*2/5+1), lines[:n])
		lines = lines[n:]
		batches++
	}
	t.Logf("t-late: %d devices, %d events in %d batches among the first 40%% of %d live batches; gateway catalogue %s, counter's %s",
		devices, r.lateEvents, batches, len(r.live), r.lateFiles[0], r.lateFiles[1])
}

// lateTenantFault: once every event of t-late is acknowledged and parked by the counter (the
// metric, /readyz's report, nothing of t-late in ClickHouse), the counter's catalogue file is
// replaced atomically by the gateway's, under the live traffic of the other tenants. The row's
// recovery is from that swap until ClickHouse holds t-late's exact MAU and nothing is parked.
func lateTenantFault(r *chaosRun) {
	t := r.t
	r.at(0.5)
	parked := `maumeter_count_parked_total{reason="unknown_tenant"}`
	deadline := time.Now().Add(3 * time.Minute)
	n, err := scrapeValue(r.p.countAdmin, parked)
	for ; (err != nil || n < float64(r.lateEvents)) && time.Now().Before(deadline); n, err = scrapeValue(r.p.countAdmin, parked) {
		time.Sleep(200 * time.Millisecond)
	}
	if n != float64(r.lateEvents) {
		t.Errorf("%s = %v (%v), want t-late's %d acknowledged events", parked, n, err, r.lateEvents)
	}
	if ready, err := readyzE(r.p.countURL, r.p.operator); err != nil || ready.code != http.StatusOK ||
		!strings.Contains(ready.Reported["parked"], fmt.Sprintf("%d parked events", r.lateEvents)) {
		t.Errorf("/readyz while t-late is parked = %+v %v, want 200 reporting %d parked events", ready, err, r.lateEvents)
	}
	if got, err := tenantMAU(r.p, "t-late"); err != nil || len(got) != 0 {
		t.Errorf("ClickHouse holds t-late's MAU %v (%v) before the counter knows t-late, want nothing", got, err)
	}
	r.logf("t-late: %v events parked; replacing the counter's catalogue with the gateway's", n)

	tmp := r.lateFiles[1] + ".tmp"
	if err := os.WriteFile(tmp, r.lateCatalogue, 0o644); err != nil {
		t.Error(err)
		return
	}
	if err := os.Rename(tmp, r.lateFiles[1]); err != nil {
		t.Error(err)
		return
	}
	swapped := time.Now()
	exact := func() bool {
		got, err := tenantMAU(r.p, "t-late")
		if err != nil || len(got) != len(r.extraTruth["t-late"]) {
			return false
		}
		for month, set := range r.extraTruth["t-late"] {
			if got[month] != uint64(len(set)) {
				return false
			}
		}
		w, err := scrapeValue(r.p.countAdmin, "maumeter_count_parked_waiting")
		return err == nil && w == 0
	}
	for deadline := time.Now().Add(5 * time.Minute); !exact(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			got, err := tenantMAU(r.p, "t-late")
			t.Errorf("t-late's MAU %v (%v) 5 minutes after the catalogue swap, want %v", got, err, monthSizes(r.extraTruth["t-late"]))
			return
		}
	}
	r.recovery = time.Since(swapped)
	r.logf("t-late counted exactly %s after the catalogue swap", r.recovery.Round(time.Millisecond))
	if got, err := scrapeValue(r.p.countAdmin, "maumeter_count_parked_replayed_total"); err != nil || got != float64(r.lateEvents) {
		t.Errorf("replayed %v parked events (%v), want %d", got, err, r.lateEvents)
	}
	devices := 0
	for _, set := range r.extraTruth["t-late"] {
		devices += len(set)
	}
	r.note("t-late: %d events of %d devices acknowledged and parked, replayed and counted exactly %s after the counter's catalogue swap (recovery)",
		r.lateEvents, devices, r.recovery.Round(100*time.Millisecond))
}

// retentionLossFault: the counter stopped (SIGTERM, drained) while the live traffic goes on;
// then the records of the partition with the most uncounted records are deleted up to its end
// (kafkatest.DeleteRecords, as retention would) after the test read them, and the counter is
// started again. It must stop that partition and report the exact range (/readyz's offsets
// check, maumeter_count_lost_offsets) while the other partitions count on exactly; then
// `maumeter offsets accept-loss` lets the partition resume. The truth loses the device-months
// whose only records on the partition were the deleted ones (every event of a device-app goes
// to one partition), and nothing else.
func retentionLossFault(r *chaosRun) {
	t := r.t
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	kn := bus.Plain([]string{brokers})
	topic, group := r.p.topic, r.p.group

	r.at(0.2 + 0.1*r.rng.Float64())
	r.procMu.Lock()
	delete(r.supervised, r.p.counter)
	r.procMu.Unlock()
	r.p.counter.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.p.counter.done:
		if code := r.p.counter.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("count exited %d after SIGTERM, want 0:\n%s", code, r.p.counter.tail())
		}
	case <-time.After(30 * time.Second):
		t.Errorf("count still running 30 s after SIGTERM")
		r.p.counter.kill()
	}
	r.logf("counter stopped (SIGTERM); the traffic goes on")
	r.at(0.5 + 0.1*r.rng.Float64())

	committed, err := bus.CommittedOffsets(ctx, kn, group, topic)
	if err != nil {
		t.Error(err)
	}
	first, err1 := bus.FirstOffsets(ctx, kn, topic)
	end, err2 := bus.EndOffsets(ctx, kn, topic)
	if err := errors.Join(err1, err2); err != nil {
		t.Error(err)
	}
	parts := make([]int, 0, len(end))
	for p := range end {
		parts = append(parts, p)
	}
	slices.Sort(parts)
	P := parts[0]
	for _, p := range parts {
		if _, ok := committed[p]; ok && end[p]-committed[p] > end[P]-committed[P] {
			P = p
		}
	}
	from, to := committed[P], end[P]
	// What the test produced into P up to to, read before it goes: the records below from,
	// counted before the stop, and those of [from, to), about to be lost.
	seen := map[string]*[2]int{} // "tenant month app/guid" → records in [from, to), outside
	readP := func(lo, hi int64, in bool) {
		err := bus.ReadRange(ctx, kn, topic, P, lo, hi, func(m kafka.Message) (bool, error) {
			e, err := event.Decode(m.Value)
			if err != nil {
				return true, fmt.Errorf("%s/%d@%d: %w", topic, P, m.Offset, err)
			}
			loc, err := time.LoadLocation(zones[e.TenantID])
			if err != nil || zones[e.TenantID] == "" {
				return true, fmt.Errorf("%s/%d@%d: tenant %q has no zone in the test", topic, P, m.Offset, e.TenantID)
			}
			k := e.TenantID + " " + e.TS.In(loc).Format("2006-01") + " " + e.AppID + "/" + e.GUID
			if seen[k] == nil {
				seen[k] = &[2]int{}
			}
			if in {
				seen[k][0]++
			} else {
				seen[k][1]++
			}
			return false, nil
		})
		if err != nil {
			t.Errorf("read %s/%d [%d, %d): %v", topic, P, lo, hi, err)
		}
	}
	readP(first[P], from, false)
	readP(from, to, true)
	start, err := kafkatest.DeleteRecords(ctx, []string{brokers}, topic, P, to)
	if err != nil || start != to {
		t.Errorf("DeleteRecords(%s/%d, %d) = %d, %v; want log start %d", topic, P, to, start, err, to)
	}
	r.logf("partition %d: deleted [%d, %d) (%d records the counter never read; committed %d)", P, from, to, to-from, from)
	r.procMu.Lock()
	r.p.counter.start()
	r.supervised[r.p.counter] = true
	r.procMu.Unlock()
	restarted := time.Now()

	// Detected and reported with the exact range.
	want := fmt.Sprintf("partition %d stopped: offsets [%d, %d) (%d records) were deleted before they were counted", P, from, to, to-from)
	var ready readyBody
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
		ready, err = readyzE(r.p.countURL, r.p.operator)
		if err == nil && ready.code == http.StatusServiceUnavailable && strings.Contains(ready.Failed["offsets"], want) {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("/readyz 2 minutes after the restart = %+v %v, want 503 with offsets %q", ready, err, want)
			break
		}
	}
	detected := time.Since(restarted)
	metric := fmt.Sprintf(`maumeter_count_lost_offsets{partition="%d"}`, P)
	if v, err := scrapeValue(r.p.countAdmin, metric); err != nil || v != float64(to-from) {
		t.Errorf("%s = %v (%v), want %d", metric, v, err, to-from)
	}
	r.logf("loss reported %s after the restart: %s", detected.Round(time.Millisecond), ready.Failed["offsets"])

	// The traffic ends; every other partition counts to its end while P holds at from.
	r.at(1)
	end, err = bus.EndOffsets(ctx, kn, topic)
	if err != nil {
		t.Error(err)
	}
	for deadline := time.Now().Add(5 * time.Minute); ; time.Sleep(200 * time.Millisecond) {
		c, err := bus.CommittedOffsets(ctx, kn, group, topic)
		caught := err == nil && c[P] == from
		for _, p := range parts {
			caught = caught && (p == P || c[p] == end[p])
		}
		if caught {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("5 minutes after the traffic: committed %v (%v), want the ends %v except partition %d at %d", c, err, end, P, from)
			break
		}
	}
	readP(to, end[P], false)
	r.checkPartitionsExcept(ctx, parts, P)

	// Accepted: the partition resumes at the log start.
	cmd := exec.CommandContext(ctx, binary, "offsets", "accept-loss", "--partition", fmt.Sprint(P), "--by", "chaos", "--reason", "chaos matrix: retention loss row")
	cmd.Env = append(os.Environ(), r.p.env...)
	out, err := cmd.CombinedOutput()
	acceptWant := fmt.Sprintf("accepted: partition %d of %s, offsets [%d, %d) (%d records) never counted, by chaos", P, topic, from, to, to-from)
	if err != nil || !strings.Contains(string(out), acceptWant) {
		t.Errorf("offsets accept-loss: %v\n%s\nwant %q", err, out, acceptWant)
	}
	r.logf("accept-loss: %s", strings.TrimSpace(string(out)))

	// The truth without the device-months whose only records were deleted.
	inRange, lost := 0, 0
	for k, n := range seen {
		f := strings.Fields(k)
		if _, ok := r.tr.truth[f[0]][f[1]][f[2]]; !ok {
			t.Errorf("partition %d holds %s, which the test never sent", P, k)
			continue
		}
		if n[0] == 0 {
			continue
		}
		inRange++
		if n[1] == 0 {
			delete(r.tr.truth[f[0]][f[1]], f[2])
			lost++
		}
	}
	r.logf("partition %d [%d, %d): %d device-months had records there, %d only there: subtracted from the truth", P, from, to, inRange, lost)
	r.note("partition %d lost offsets [%d, %d) (%d records, %d device-months, %d only there: truth minus %d); reported %s after the restart (/readyz offsets, maumeter_count_lost_offsets %d); other partitions exact while it held; accepted",
		P, from, to, to-from, inRange, lost, lost, detected.Round(100*time.Millisecond), to-from)
}

// checkPartitionsExcept requires mau_devices to hold exactly the truth's device-months of every
// partition but held (a device-app's partition is the gateway's: murmur2 of tenant/app/guid).
func (r *chaosRun) checkPartitionsExcept(ctx context.Context, parts []int, held int) {
	t := r.t
	conn := chaosConn(t, r.p)
	defer conn.Close()
	rows, err := conn.Query(ctx, `SELECT DISTINCT tenant_id, month, app_id, guid FROM mau_devices`)
	if err != nil {
		t.Error(err)
		return
	}
	partOf := func(tenant, device string) int {
		return bus.EventsBalancer.Balance(kafka.Message{Key: []byte(tenant + "/" + device)}, parts...)
	}
	measured := map[string]bool{}
	for rows.Next() {
		var tenant, month, app, guid string
		if err := rows.Scan(&tenant, &month, &app, &guid); err != nil {
			t.Error(err)
			break
		}
		if partOf(tenant, app+"/"+guid) != held {
			measured[tenant+" "+month+" "+app+"/"+guid] = true
		}
	}
	rows.Close()
	want, missing := 0, 0
	for tenant, months := range r.tr.truth {
		for month, set := range months {
			for device := range set {
				if partOf(tenant, device) == held {
					continue
				}
				want++
				if !measured[tenant+" "+month+" "+device] {
					missing++
				}
			}
		}
	}
	if missing > 0 || len(measured) != want-missing {
		t.Errorf("while partition %d held, the other partitions: %d device-months in mau_devices, %d in the truth, %d of them missing", held, len(measured), want, missing)
	}
	r.logf("while partition %d held, the other partitions held %d device-months, the truth %d", held, len(measured), want)
}

// monthSizes is the MAU of each month of a tenant's truth.
func monthSizes(months map[string]map[string]bool) map[string]int {
	out := map[string]int{}
	for month, set := range months {
		out[month] = len(set)
	}
	return out
}

// tenantMAU is the exact MAU of each month of tenant in ClickHouse.
func tenantMAU(p *pipeline, tenant string) (map[string]uint64, error) {
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{clickhouseA}, Auth: clickhouse.Auth{Database: p.database}})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	rows, err := conn.Query(context.Background(), `SELECT month, uniqExact(device_key) FROM mau_devices WHERE tenant_id = ? GROUP BY month`, tenant)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]uint64{}
	for rows.Next() {
		var month string
		var n uint64
		if err := rows.Scan(&month, &n); err != nil {
			return nil, err
		}
		out[month] = n
	}
	return out, rows.Err()
}

// scrapeValue reads one series of base's /metrics; 0 when absent. Unlike scrape it does not
// fail the test, so the faults (not the test's goroutine) may use it.
func scrapeValue(base, series string) (float64, error) {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for l := range strings.SplitSeq(string(data), "\n") {
		if rest, ok := strings.CutPrefix(l, series+" "); ok {
			var v float64
			_, err := fmt.Sscan(rest, &v)
			return v, err
		}
	}
	return 0, nil
}

// readyzE is readyz without failing the test.
func readyzE(base, operatorKey string) (readyBody, error) {
	req, err := http.NewRequest(http.MethodGet, base+"/readyz", nil)
	if err != nil {
		return readyBody{}, err
	}
	req.Header.Set("Authorization", "Bearer "+operatorKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return readyBody{}, err
	}
	defer resp.Body.Close()
	var b readyBody
	if err := json.NewDecoder(resp.Body).Decode(&b); err != nil {
		return readyBody{}, err
	}
	b.code = resp.StatusCode
	return b, nil
}
