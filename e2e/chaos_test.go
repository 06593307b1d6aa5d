package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/maumeter/maumeter/internal/kafkatest"
	"github.com/maumeter/maumeter/pipeline/bus"
)

// The chaos matrix: each row runs its own pipeline (database, topics, groups) of the built
// binary on the real Kafka and ClickHouse, sends generated traffic whose truth the test knows,
// injects one kind of fault while the traffic streams in, and then requires every tenant-month's
// MAU to equal the truth, no device twice in mau_devices, and the invoices of the month closed
// before the fault unchanged. docs/RELIABILITY.md says what each row proves.
//
// MAUMETER_CHAOS=1 (`make test`) runs the short matrix; MAUMETER_CHAOS=full (`make chaos`) runs
// every row with more events and the 3-minute ClickHouse outage. MAUMETER_CHAOS_REPORT=FILE
// writes the results table (markdown) there. The rows stop and start the shared services, so
// the matrix runs alone, on services of its own.

// chaosRow is a row of the matrix. To add one, append it to chaosRows.
type chaosRow struct {
	name  string
	short bool // in the short matrix of `make test` too
	serve bool // one `serve` process (all roles) instead of ingest + count + rate processes
	// live spreads the live traffic over at least this long (default 20 s, 60 s in the full
	// matrix), so that the fault hits a pipeline under load.
	live time.Duration
	// setup, if set, runs once the row's processes started, before any traffic: it may restart
	// them with other flags and add tenants and their traffic (r.addTraffic).
	setup func(r *chaosRun)
	// fault runs while the live traffic is sent (r.at waits for a share of it) and returns
	// once the fault is over: every process it stopped is running again.
	fault func(r *chaosRun)
	// after, if set, runs once the live traffic is counted; it may inject a second fault
	// (redelivery) and returns once it is over.
	after func(r *chaosRun)
}

var chaosRows = []chaosRow{
	{name: "gateway SIGKILL ×3", short: true, fault: func(r *chaosRun) {
		for _, at := range r.moments(3) {
			r.at(at)
			r.restart(r.p.ingest, syscall.SIGKILL)
		}
	}},
	{name: "counter SIGKILL ×3", fault: func(r *chaosRun) {
		for _, at := range r.moments(3) {
			r.at(at)
			r.restart(r.p.counter, syscall.SIGKILL)
		}
	}},
	{name: "rater SIGKILL ×3, re-rating all", fault: func(r *chaosRun) {
		// The rater is idle while no month closes: kill it at random moments, then make it
		// rate every rollup again (a new group reads the topic from the start) and kill it
		// while it does. The invoices must not change.
		for _, at := range r.moments(2) {
			r.at(at)
			r.restart(r.rater, syscall.SIGKILL)
		}
		r.procMu.Lock()
		r.rater.kill()
		r.rater.env = append(r.rater.env, fmt.Sprintf("MAUMETER_RATE_GROUP=e2e-rate-again-%d", time.Now().UnixNano()))
		r.rater.start()
		r.procMu.Unlock()
		time.Sleep(time.Duration(500+r.rng.IntN(1500)) * time.Millisecond)
		r.restart(r.rater, syscall.SIGKILL)
		r.logf("rater restarted on a new group: it rates the whole rollups topic again")
	}},
	{name: "gateway + counter SIGTERM (drain)", short: true, fault: func(r *chaosRun) {
		r.at(0.3)
		r.restart(r.p.ingest, syscall.SIGTERM)
		r.at(0.6)
		r.restart(r.p.counter, syscall.SIGTERM)
	}},
	{name: "serve SIGTERM (drain) ×2", short: true, serve: true, fault: func(r *chaosRun) {
		for _, at := range r.moments(2) {
			r.at(at)
			r.restart(r.p.ingest, syscall.SIGTERM)
		}
	}},
	{name: "Kafka broker restart", short: true, fault: func(r *chaosRun) {
		r.at(0.3 + 0.4*r.rng.Float64())
		r.logf("restarting the Kafka broker")
		r.service(os.Getenv("MAUMETER_KAFKA_SCRIPT"), "stop", os.Getenv("MAUMETER_KAFKA_DATADIR"))
		r.service(os.Getenv("MAUMETER_KAFKA_SCRIPT"), "start", os.Getenv("MAUMETER_KAFKA_DATADIR"))
	}},
	{name: "ClickHouse down 30 s", short: true, live: 50 * time.Second, fault: func(r *chaosRun) { r.clickhouseDown(30 * time.Second) }},
	{name: "ClickHouse down 3 min", live: 4 * time.Minute, fault: func(r *chaosRun) { r.clickhouseDown(3 * time.Minute) }},
	{name: "counter SIGSTOPped past its session, 2 counters", short: true, live: 30 * time.Second, fault: func(r *chaosRun) {
		r.secondCounter()
		r.at(0.3 + 0.2*r.rng.Float64())
		// Past the session timeout (6 s): the group rebalances without it; when it wakes it
		// still believes it owns its partitions until the broker says otherwise.
		r.logf("SIGSTOP counter for 15 s")
		r.p.counter.cmd.Process.Signal(syscall.SIGSTOP)
		time.Sleep(15 * time.Second)
		r.p.counter.cmd.Process.Signal(syscall.SIGCONT)
		r.logf("SIGCONT counter")
	}},
	{name: "2 counters, one SIGKILLed", fault: func(r *chaosRun) {
		second := r.secondCounter()
		r.at(0.3 + 0.4*r.rng.Float64())
		r.procMu.Lock()
		delete(r.supervised, second)
		second.kill()
		r.procMu.Unlock()
		r.logf("SIGKILL the second counter (not restarted)")
	}},
	{name: "tenant added to the gateway first (parked)", short: true, setup: func(r *chaosRun) { r.lateTenant(r.devices / 5) }, fault: lateTenantFault},
	{name: "retention loss on one partition", short: true, fault: retentionLossFault},
	{name: "redelivery of the whole topic", short: true, after: func(r *chaosRun) {
		// Every event again: the counters' group back to the first offsets.
		r.procMu.Lock()
		defer r.procMu.Unlock()
		r.p.counter.stop()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		first, err := bus.FirstOffsets(ctx, bus.Plain([]string{brokers}), r.p.topic)
		if err != nil {
			r.t.Fatal(err)
		}
		if err := kafkatest.Commit(ctx, []string{brokers}, r.p.group, r.p.topic, first); err != nil {
			r.t.Fatal(err)
		}
		lag, err := bus.Lag(ctx, bus.Plain([]string{brokers}), r.p.group, r.p.topic)
		if err != nil {
			r.t.Fatal(err)
		}
		r.logf("counters' group reset to the first offsets: %d messages to consume again", lag)
		if lag < int64(r.acked.Load()) {
			r.t.Errorf("lag after the reset %d, want at least the %d acknowledged events", lag, r.acked.Load())
		}
		r.p.counter.start()
	}},
}

// chaosResult is a row of the results table.
type chaosResult struct {
	name                      string
	acked                     int64
	truth, measured           uint64 // MAU summed over the tenant-months
	tenantMonths, exact       int    // tenant-months, and those measured exactly
	rowsFinal, uniq, rowsRaw  uint64 // mau_devices: count() FINAL, uniqExact(tenant, month, device), raw count()
	invoicesBefore, invAfter  int
	invoicesSame              bool
	versionsBefore, versAfter uint64
	closed                    []string
	recovery                  time.Duration
	ok                        bool
	notes                     string
}

func TestChaos(t *testing.T) {
	mode := os.Getenv("MAUMETER_CHAOS")
	if mode != "1" && mode != "full" {
		t.Skip("run by `make test` (MAUMETER_CHAOS=1) and `make chaos` (MAUMETER_CHAOS=full) on services of their own: it restarts them")
	}
	for _, v := range []string{"MAUMETER_KAFKA_SCRIPT", "MAUMETER_KAFKA_DATADIR", "MAUMETER_CLICKHOUSE_SCRIPT", "MAUMETER_CLICKHOUSE_DATADIR"} {
		if os.Getenv(v) == "" {
			t.Fatalf("%s is required (scripts/with-services.sh sets it)", v)
		}
	}
	full := mode == "full"
	devices := 2_500
	if full {
		devices = 25_000
	}
	var results []chaosResult
	start := time.Now()
	for _, row := range chaosRows {
		if !full && !row.short {
			continue
		}
		t.Run(strings.NewReplacer(" ", "_", "×", "x", ",", "").Replace(row.name), func(t *testing.T) {
			if row.live == 0 {
				row.live = 20 * time.Second
				if full {
					row.live = time.Minute
				}
			}
			res := &chaosResult{name: row.name}
			// Recorded even when the row stops at a t.Fatal: FAIL with what it measured so far.
			defer func() {
				res.ok = !t.Failed()
				results = append(results, *res)
			}()
			runChaosRow(t, row, devices, res)
		})
	}
	t.Logf("matrix of %d rows in %s", len(results), time.Since(start).Round(time.Second))
	table := chaosTable(results)
	t.Log("\n" + table)
	if path := os.Getenv("MAUMETER_CHAOS_REPORT"); path != "" {
		name := map[bool]string{true: "full", false: "short"}[full]
		head := fmt.Sprintf("Matrix: %s, %d rows, %d devices per tenant and row, %s wall.\n\n", name, len(results), devices, time.Since(start).Round(time.Second))
		if err := os.WriteFile(path, []byte(head+table), 0o644); err != nil {
			t.Error(err)
		}
	}
}

func chaosTable(results []chaosResult) string {
	var b strings.Builder
	b.WriteString("| row | events acked | MAU truth | MAU measured | exact tenant-months | mau_devices FINAL / distinct (raw) | closed months | invoices before → after | rollup versions before → after | recovery | result | notes |\n")
	b.WriteString("|---|---:|---:|---:|---:|---|---|---|---|---:|---|---|\n")
	for _, r := range results {
		result := "pass"
		if !r.ok {
			result = "**FAIL**"
		}
		same := "unchanged"
		if !r.invoicesSame {
			same = "**changed**"
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d/%d | %d / %d (%d) | %s | %d → %d %s | %d → %d | %s | %s | %s |\n",
			r.name, r.acked, r.truth, r.measured, r.exact, r.tenantMonths, r.rowsFinal, r.uniq, r.rowsRaw,
			strings.Join(r.closed, ", "), r.invoicesBefore, r.invAfter, same, r.versionsBefore, r.versAfter,
			r.recovery.Round(100*time.Millisecond), result, r.notes)
	}
	return b.String()
}

// chaosRun is one row being run.
type chaosRun struct {
	t     *testing.T
	rng   *rand.Rand
	p     *pipeline
	rater *proc // the rater process (the serve process in a serve row)
	// devices is the number of generated devices per tenant; tr the traffic's truth, which a
	// row may correct for what its fault destroyed (retention loss) and nothing else; live
	// the live batches.
	devices int
	tr      *traffic
	live    [][]line
	// extraTruth is the truth (tenant → month → app/guid) of tenants a row added, which the
	// shared catalogue of the e2e tests lacks: measured in ClickHouse and the MAU API, not
	// priced by p.check.
	extraTruth map[string]map[string]map[string]bool
	// recovery, when a row sets it, replaces the recovery measured by the matrix (the row
	// says in its notes from what to what).
	recovery time.Duration
	// The tenant the gateway knows first: its events sent, the gateway's and the counter's
	// catalogue files, and the gateway's catalogue (which the counter's file gets mid-run).
	lateEvents    int
	lateFiles     [2]string
	lateCatalogue []byte
	// progress is the share of the live batches sent, in millionths.
	progress atomic.Int64
	acked    atomic.Int64
	extra    []*proc
	res      *chaosResult
	// procMu guards the processes: the faults stop and start them, supervise restarts them.
	procMu     sync.Mutex
	supervised map[*proc]bool
}

// supervise restarts, as an orchestrator would (compose's restart: unless-stopped), a process of
// the row that exited on its own, e.g. a counter that could not reach ClickHouse at its start,
// until ctx ends. It says so in the row's notes.
func (r *chaosRun) supervise(ctx context.Context) {
	restarts := map[string]int{}
	defer func() {
		for name, n := range restarts {
			r.note("%s exited on its own %d× and was restarted", name, n)
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
		r.procMu.Lock()
		for p := range r.supervised {
			if p.exited() {
				last := p.tail()
				last = last[strings.LastIndex(last, "\n")+1:]
				r.logf("%s exited on its own (%s); restarting it", p.name, last)
				restarts[p.name]++
				p.start()
			}
		}
		r.procMu.Unlock()
	}
}

// waitCounted waits until the counters' group has committed the end of every partition (the
// processes may restart meanwhile: supervise).
func (r *chaosRun) waitCounted(timeout time.Duration) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var lag int64 = -1
	var err error
	for ctx.Err() == nil {
		if lag, err = bus.Lag(ctx, bus.Plain([]string{brokers}), r.p.group, r.p.topic); err == nil && lag == 0 {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	r.t.Fatalf("counters still %d messages behind after %s (err %v):\n%s", lag, timeout, err, r.p.counter.tail())
}

// note adds a remark to the row's result.
func (r *chaosRun) note(format string, a ...any) {
	if r.res.notes != "" {
		r.res.notes += "; "
	}
	r.res.notes += fmt.Sprintf(format, a...)
}

// chCrashes is how often scripts/with-services.sh restarted a ClickHouse that died on its own.
func chCrashes() int {
	data, err := os.ReadFile(filepath.Join(filepath.Dir(os.Getenv("MAUMETER_CLICKHOUSE_DATADIR")), "clickhouse.crashes"))
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return n
}

func (r *chaosRun) logf(format string, a ...any) {
	r.t.Helper()
	r.t.Logf("%s  %s", time.Now().UTC().Format("15:04:05.000"), fmt.Sprintf(format, a...))
}

// moments returns n increasing random shares of the live traffic in (0.1, 0.9).
func (r *chaosRun) moments(n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = 0.1 + 0.8*(float64(i)+r.rng.Float64())/float64(n)
	}
	return out
}

// at waits until share of the live batches are sent (or all are).
func (r *chaosRun) at(share float64) {
	for float64(r.progress.Load())/1e6 < share {
		time.Sleep(20 * time.Millisecond)
	}
}

// restart stops p with sig and starts it again. With SIGTERM the process must drain and exit 0
// within its --shutdown-timeout (25 s) and say so in its log.
func (r *chaosRun) restart(p *proc, sig syscall.Signal) {
	r.t.Helper()
	r.procMu.Lock()
	defer r.procMu.Unlock()
	start := time.Now()
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		r.t.Errorf("%s still running 30 s after %s", p.name, sig)
		p.kill()
	}
	took := time.Since(start)
	if sig == syscall.SIGTERM {
		if code := p.cmd.ProcessState.ExitCode(); code != 0 {
			r.t.Errorf("%s exited %d after SIGTERM, want 0:\n%s", p.name, code, p.tail())
		}
		if log := p.tail(); !strings.Contains(log, "msg=drained") {
			r.t.Errorf("%s did not log its drain after SIGTERM:\n%s", p.name, log)
		} else if order := drainOrder(log); !slices.Equal(order, drainWant[p.args[0]]) {
			r.t.Errorf("%s drained in the order %v, want %v:\n%s", p.name, order, drainWant[p.args[0]], log)
		}
	}
	r.logf("%s %s: exited after %s", sig, p.name, took.Round(time.Millisecond))
	time.Sleep(time.Duration(r.rng.IntN(500)) * time.Millisecond)
	p.start()
}

// drainWant is the order in which each role's stages stop after SIGTERM: reverse data flow.
// A process with --admin-addr stops its admin listener after them (drainOrder checks that and
// leaves it out).
var drainWant = map[string][]string{
	"serve":  {"http", "caps", "counter", "rater"},
	"ingest": {"http", "caps"},
	"count":  {"http", "counter"},
	"rate":   {"http", "rater"},
}

// drainOrder returns the stages of the last drain in a log, in the order they stopped, without
// the admin listener, which must be the last when present (it is not on the data path).
func drainOrder(log string) []string {
	if i := strings.LastIndex(log, "msg=\"stopping: draining"); i >= 0 {
		log = log[i:]
	}
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if _, rest, ok := strings.Cut(l, "msg=stopped stage="); ok {
			out = append(out, strings.Fields(rest)[0])
		}
	}
	if i := slices.Index(out, "admin"); i >= 0 {
		if i != len(out)-1 {
			return out // the comparison fails and shows the order
		}
		out = out[:i]
	}
	return out
}

func (r *chaosRun) service(script, action, dir string) {
	r.t.Helper()
	start := time.Now()
	out, err := exec.Command(script, action, dir).CombinedOutput()
	if err != nil {
		r.t.Errorf("%s %s: %v\n%s", script, action, err, out)
	}
	r.logf("%s %s: %s", script, action, time.Since(start).Round(time.Millisecond))
}

func (r *chaosRun) clickhouseDown(d time.Duration) {
	r.at(0.2 + 0.3*r.rng.Float64())
	script, dir := os.Getenv("MAUMETER_CLICKHOUSE_SCRIPT"), os.Getenv("MAUMETER_CLICKHOUSE_DATADIR")
	r.logf("stopping ClickHouse for %s", d)
	r.service(script, "stop", dir)
	time.Sleep(d)
	r.service(script, "start", dir)
}

// secondCounter starts a second counter in the group and waits until both own partitions.
func (r *chaosRun) secondCounter() *proc {
	r.t.Helper()
	addr, admin := freeAddr(r.t), freeAddr(r.t)
	second := startProc(r.t, "count-2", r.p.env, "count", "--http-addr", addr, "--admin-addr", admin)
	waitHTTP(r.t, second, "http://"+addr+"/healthz", 30*time.Second)
	// /metrics is on the admin listener only.
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if n := assignedPartitions(r.t, "http://"+admin); n > 0 && n < 8 {
			r.logf("second counter owns %v of 8 partitions", n)
			break
		}
	}
	r.procMu.Lock()
	r.extra = append(r.extra, second)
	r.supervised[second] = true
	r.procMu.Unlock()
	return second
}

// runChaosRow runs a row: history (the months before the current one) sent, counted, closed
// and rated; then the live traffic (the current month, some history again) sent while the fault
// runs; then everything counted, and the checks.
func runChaosRow(t *testing.T, row chaosRow, devices int, res *chaosResult) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 11))
	now := clockNow()
	tr := generate(rng, now, devices)
	history, live := splitTraffic(rng, tr, now, devices/2)
	r := &chaosRun{t: t, rng: rng, devices: devices, tr: tr, live: live, extraTruth: map[string]map[string]map[string]bool{}}
	crashes := chCrashes()
	defer func() {
		// `make chaos` restarts a ClickHouse that died on its own (MAUMETER_RESTART_CLICKHOUSE=1):
		// chDB aborts when a SIGKILLed client tears a query's connection.
		if n := chCrashes() - crashes; n > 0 {
			r.note("ClickHouse (chDB) aborted %d× on a connection torn by a SIGKILLed client and was restarted", n)
		}
	}()
	r.res = res
	p := startPipeline(t, "chaos")
	r.p = p
	if row.serve {
		p.ingest.stop()
		p.counter.stop()
		addr := freeAddr(t)
		serve := startProc(t, "serve", p.env, "serve", "--http-addr", addr)
		p.ingest, p.counter, r.rater = serve, serve, serve
		p.ingestURL, p.countURL = "http://"+addr, "http://"+addr
		waitHTTP(t, serve, p.ingestURL+"/healthz", 30*time.Second)
	} else {
		addr := freeAddr(t)
		r.rater = startProc(t, "rate", p.env, "rate", "--http-addr", addr)
		waitHTTP(t, r.rater, "http://"+addr+"/healthz", 30*time.Second)
	}
	if row.setup != nil {
		row.setup(r)
	}

	r.supervised = map[*proc]bool{p.ingest: true, p.counter: true, r.rater: true}
	sctx, stopSupervising := context.WithCancel(context.Background())
	supervised := make(chan struct{})
	go func() { defer close(supervised); r.supervise(sctx) }()
	defer func() { stopSupervising(); <-supervised }()

	// History: sent, counted, closed (as an operator would: the close grace may not have
	// passed yet on every date) and rated.
	start := time.Now()
	chaosSend(t, r, history, 0, nil)
	r.waitCounted(5 * time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	closed := closedMonths(tr, now)
	for _, tm := range closed {
		tenant, month, _ := strings.Cut(tm, " ")
		runOnce(t, ctx, p.env, "close", "--month", month, "--tenant", tenant, "--close-grace", "1ms", "--timeout", "3m")
	}
	res.closed = closed
	if len(closed) < 3 {
		t.Errorf("%d closed tenant-months %v, want one per tenant at least", len(closed), closed)
	}
	before := waitInvoices(t, p, closed)
	res.invoicesBefore = len(before)
	res.versionsBefore = rollupVersions(t, p)
	t.Logf("history: %d events acked, %d tenant-months closed and invoiced, in %s", r.acked.Load(), len(closed), time.Since(start).Round(time.Millisecond))

	// Live traffic with the fault.
	faultDone := make(chan struct{})
	go func() {
		defer close(faultDone)
		if row.fault != nil {
			row.fault(r)
		}
	}()
	start = time.Now()
	chaosSend(t, r, r.live, row.live, func(done float64) { r.progress.Store(int64(done * 1e6)) })
	r.progress.Store(1e6)
	t.Logf("live: sent in %s", time.Since(start).Round(time.Millisecond))
	<-faultDone
	recoverFrom := time.Now()
	r.waitCounted(10 * time.Minute)
	if row.after != nil {
		row.after(r)
		recoverFrom = time.Now()
		r.waitCounted(10 * time.Minute)
	}
	waitHTTP(t, p.counter, p.countURL+"/readyz", 2*time.Minute)
	res.recovery = time.Since(recoverFrom)
	if r.recovery > 0 {
		res.recovery = r.recovery
	}
	t.Logf("counted and ready %s after the fault ended", res.recovery.Round(time.Millisecond))

	// The checks.
	res.acked = r.acked.Load()
	measureChaos(t, p, r.allTraffic(), res)
	after := waitInvoices(t, p, closed)
	res.invAfter = len(after)
	res.versAfter = rollupVersions(t, p)
	res.invoicesSame = slices.Equal(before, after)
	if !res.invoicesSame {
		t.Errorf("invoices changed across the fault:\nbefore %v\nafter  %v", before, after)
	}
	if res.versAfter != res.versionsBefore {
		t.Errorf("rollup versions %d before the fault, %d after: a restatement without new devices", res.versionsBefore, res.versAfter)
	}
	p.check(t, tr)
	r.checkExtraAPI()
	// What the logs say of the fence (count.go flush): a checkpoint that did not write its
	// rollups because its commit failed (a woken stale counter; or the broker away).
	fenced := 0
	for _, q := range append([]*proc{p.counter}, r.extra...) {
		data, _ := os.ReadFile(q.log)
		fenced += strings.Count(string(data), "fence commit failed")
	}
	if fenced > 0 {
		r.note("fence commit failed %d× (generation over, or broker away): no rollups written then", fenced)
	}
	t.Logf("acked %d, MAU truth %d measured %d (%d/%d tenant-months exact), mau_devices FINAL %d distinct %d raw %d, invoices %d → %d",
		res.acked, res.truth, res.measured, res.exact, res.tenantMonths, res.rowsFinal, res.uniq, res.rowsRaw, res.invoicesBefore, res.invAfter)
}

// splitTraffic splits tr into the history (accepted events of the months before the current one
// in the tenant's zone) and the live traffic: the current month's events, extra devices of the
// current month (extra per tenant, added to the truth), every malformed line, and a fifth of the
// history again (an SDK resending: devices already counted in a closed month).
func splitTraffic(rng *rand.Rand, tr *traffic, now time.Time, extra int) (history, live [][]line) {
	var hist, cur []line
	for _, batch := range tr.batches {
		for _, l := range batch {
			if l.reason != "" {
				cur = append(cur, l)
				continue
			}
			var e struct {
				Tenant string `json:"tenant_id"`
				TS     string `json:"ts"`
			}
			if err := json.Unmarshal([]byte(l.json), &e); err != nil {
				panic(err)
			}
			ts, err := time.Parse(time.RFC3339Nano, e.TS)
			if err != nil {
				panic(err)
			}
			loc, _ := time.LoadLocation(zones[e.Tenant])
			if ts.In(loc).Format("2006-01") < now.In(loc).Format("2006-01") {
				hist = append(hist, l)
				if rng.IntN(5) == 0 {
					cur = append(cur, l)
				}
			} else {
				cur = append(cur, l)
			}
		}
	}
	for tenant := range zones {
		loc, _ := time.LoadLocation(zones[tenant])
		y, m, _ := now.In(loc).Date()
		from, to := time.Date(y, m, 1, 0, 0, 0, 0, loc), now.Add(-time.Minute)
		if !to.After(from) {
			to = now
		}
		for d := range extra {
			app := apps[tenant][d%len(apps[tenant])]
			guid := fmt.Sprintf("live-%s-%07d-%x", tenant, d, rng.Uint32())
			ts := from.Add(time.Duration(rng.Int64N(int64(to.Sub(from)) + 1)))
			tr.add(tenant, app, guid, ts)
			cur = append(cur, line{tenant: tenant, json: fmt.Sprintf(`{"tenant_id":%q,"app_id":%q,"guid":%q,"event":"open","mini_program_id":"mp-%d","ts":%q}`,
				tenant, app, guid, d%40, ts.In(loc).Format(time.RFC3339Nano))})
		}
	}
	rng.Shuffle(len(cur), func(i, j int) { cur[i], cur[j] = cur[j], cur[i] })
	return rebatch(rng, hist), rebatch(rng, cur)
}

// rebatch groups lines into requests of one tenant each (200-1000 lines), shuffled.
func rebatch(rng *rand.Rand, lines []line) [][]line {
	byTenant := map[string][]line{}
	for _, l := range lines {
		byTenant[l.tenant] = append(byTenant[l.tenant], l)
	}
	var out [][]line
	for _, tenant := range tenantOrder {
		ls := byTenant[tenant]
		for len(ls) > 0 {
			n := min(len(ls), 200+rng.IntN(801))
			out = append(out, ls[:n])
			ls = ls[n:]
		}
	}
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// closedMonths are the "tenant month"s of the truth before the current month in the tenant's zone.
func closedMonths(tr *traffic, now time.Time) []string {
	var out []string
	for tenant, months := range tr.truth {
		loc, _ := time.LoadLocation(zones[tenant])
		for month := range months {
			if month < now.In(loc).Format("2006-01") {
				out = append(out, tenant+" "+month)
			}
		}
	}
	slices.Sort(out)
	return out
}

// chaosSend posts every batch (4 in flight) as SDKs do through faults: a batch whose request
// failed (connection refused or cut, 503, 429) is sent again until it is answered, for up to 10
// minutes. Each answer is checked event by event; the accepted events of the answered requests
// are counted in r.acked. The batches are spread evenly over at least spread.
func chaosSend(t *testing.T, r *chaosRun, batches [][]line, spread time.Duration, onProgress func(done float64)) {
	t.Helper()
	start := time.Now()
	var next, sent atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(batches) {
					return
				}
				b := batches[i]
				time.Sleep(time.Until(start.Add(spread * time.Duration(i) / time.Duration(len(batches)))))
				n, err := chaosPost(r.p.ingestURL+"/v1/events", r.p.keys[b[0].tenant], b)
				if err != nil {
					errs <- fmt.Errorf("batch %d: %w", i, err)
					return
				}
				r.acked.Add(int64(n))
				if onProgress != nil {
					onProgress(float64(sent.Add(1)) / float64(len(batches)))
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

// chaosPost sends a batch until it is answered 200 and checks the answer; it returns the
// accepted count.
func chaosPost(u, key string, batch []line) (int, error) {
	var body strings.Builder
	want := 0
	for _, l := range batch {
		body.WriteString(l.json)
		body.WriteByte('\n')
		if l.reason == "" {
			want++
		}
	}
	deadline := time.Now().Add(10 * time.Minute)
	for {
		req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(body.String()))
		if err != nil {
			return 0, err
		}
		req.Header.Set("Content-Type", "application/x-ndjson")
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		var data []byte
		if err == nil {
			data, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		var ue *url.Error
		retry := (err != nil && (errors.As(err, &ue) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET))) ||
			(err == nil && (resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusTooManyRequests))
		if retry && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		if err != nil {
			return 0, err
		}
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("%s: %s", resp.Status, data)
		}
		var ans struct {
			Accepted int `json:"accepted"`
			Rejected []struct {
				Index  int    `json:"index"`
				Reason string `json:"reason"`
			} `json:"rejected"`
		}
		if err := json.Unmarshal(data, &ans); err != nil {
			return 0, err
		}
		reasons := map[int]string{}
		for _, rj := range ans.Rejected {
			reasons[rj.Index] = rj.Reason
		}
		for i, l := range batch {
			if reasons[i] != l.reason {
				return 0, fmt.Errorf("event %d %s: reason %q, want %q", i, l.json, reasons[i], l.reason)
			}
		}
		if ans.Accepted != want {
			return 0, fmt.Errorf("accepted %d, want %d", ans.Accepted, want)
		}
		return ans.Accepted, nil
	}
}

func chaosConn(t *testing.T, p *pipeline) clickhouse.Conn {
	t.Helper()
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{clickhouseA}, Auth: clickhouse.Auth{Database: p.database}})
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// waitInvoices waits until every closed tenant-month has an invoice and returns the invoices
// (FINAL), one string per invoice: tenant, month, version, invoice id, MAU, amount.
func waitInvoices(t *testing.T, p *pipeline, closed []string) []string {
	t.Helper()
	conn := chaosConn(t, p)
	defer conn.Close()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var out []string
		months := map[string]uint32{} // the latest version invoiced
		rows, err := conn.Query(context.Background(), `SELECT tenant_id, month, rollup_version, invoice_id, mau, toString(amount_usd)
			FROM invoices FINAL ORDER BY tenant_id, month, rollup_version`)
		if err == nil {
			for rows.Next() {
				var tenant, month, id, amount string
				var version uint32
				var mau uint64
				if err = rows.Scan(&tenant, &month, &version, &id, &mau, &amount); err != nil {
					break
				}
				out = append(out, fmt.Sprintf("%s %s v%d %s MAU %d USD %s", tenant, month, version, id, mau, amount))
				months[tenant+" "+month] = max(months[tenant+" "+month], version)
			}
			rows.Close()
		}
		// Every closed tenant-month invoiced, each at its latest rollup version.
		latest := map[string]uint32{}
		if err == nil {
			var lrows driver.Rows
			if lrows, err = conn.Query(context.Background(), `SELECT tenant_id, month, max(version) FROM mau_rollups FINAL GROUP BY tenant_id, month`); err == nil {
				for lrows.Next() {
					var tenant, month string
					var v uint32
					if err = lrows.Scan(&tenant, &month, &v); err != nil {
						break
					}
					latest[tenant+" "+month] = v
				}
				lrows.Close()
			}
		}
		missing := 0
		for _, tm := range closed {
			if months[tm] < latest[tm] || latest[tm] == 0 {
				missing++
			}
		}
		if err == nil && missing == 0 {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d closed tenant-months without an invoice of their latest rollup version after 2 minutes (err %v): %v", missing, err, out)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// rollupVersions is the number of rollup versions (closes and restatements) stored.
func rollupVersions(t *testing.T, p *pipeline) uint64 {
	t.Helper()
	conn := chaosConn(t, p)
	defer conn.Close()
	var n uint64
	if err := conn.QueryRow(context.Background(), `SELECT count() FROM mau_rollups FINAL`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// measureChaos reads the MAU of every tenant-month from mau_devices and compares it with the
// truth, and counts the rows: after FINAL (the ReplacingMergeTree's merge of replays) there must
// be exactly one row per device and month.
func measureChaos(t *testing.T, p *pipeline, tr *traffic, res *chaosResult) {
	t.Helper()
	conn := chaosConn(t, p)
	defer conn.Close()
	ctx := context.Background()
	rows, err := conn.Query(ctx, `SELECT tenant_id, month, uniqExact(device_key), count() FROM mau_devices FINAL GROUP BY tenant_id, month`)
	if err != nil {
		t.Fatal(err)
	}
	measured := map[string]uint64{}
	for rows.Next() {
		var tenant, month string
		var n, c uint64
		if err := rows.Scan(&tenant, &month, &n, &c); err != nil {
			t.Fatal(err)
		}
		measured[tenant+" "+month] = n
		res.uniq += n
		res.rowsFinal += c
	}
	rows.Close()
	if err := conn.QueryRow(ctx, `SELECT count() FROM mau_devices`).Scan(&res.rowsRaw); err != nil {
		t.Fatal(err)
	}
	for tenant, months := range tr.truth {
		for month, set := range months {
			k := tenant + " " + month
			res.tenantMonths++
			res.truth += uint64(len(set))
			if measured[k] == uint64(len(set)) {
				res.exact++
			} else {
				t.Errorf("MAU %s: measured %d, truth %d", k, measured[k], len(set))
			}
		}
	}
	for k, n := range measured {
		res.measured += n
		if _, ok := tr.truth[strings.Fields(k)[0]][strings.Fields(k)[1]]; !ok {
			t.Errorf("MAU %s: measured %d, not in the truth", k, n)
		}
	}
	// The current partition rollup of each tenant-month and partition (highest version) must
	// be the most advanced one (highest next_offset): a stale writer must not have overtaken it.
	stale, err := conn.Query(ctx, `SELECT tenant_id, month, kafka_partition, argMax(next_offset, version), max(next_offset)
		FROM mau_partition_rollups GROUP BY tenant_id, month, kafka_partition HAVING argMax(next_offset, version) != max(next_offset)`)
	if err != nil {
		t.Fatal(err)
	}
	for stale.Next() {
		var tenant, month string
		var part uint32
		var cur, hi int64
		if err := stale.Scan(&tenant, &month, &part, &cur, &hi); err != nil {
			t.Fatal(err)
		}
		t.Errorf("partition rollup %s %s p%d: the current version reflects offset %d, an older one %d: a stale counter wrote over it", tenant, month, part, cur, hi)
	}
	stale.Close()
	if res.rowsFinal != res.uniq {
		t.Errorf("mau_devices FINAL has %d rows for %d distinct devices: duplicates", res.rowsFinal, res.uniq)
	}
}
