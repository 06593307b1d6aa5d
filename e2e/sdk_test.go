package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/maumeter/maumeter/pkg/calendar"
)

// sdks are the client SDKs whose conformance drivers (sdk/CONFORMANCE.md) TestSDKConformance
// runs against the real gateway.
var sdks = []string{"go"}

// TestSDKConformance runs each SDK's driver against the built gateway and counter on the real
// broker and ClickHouse, as sdk/CONFORMANCE.md describes: traffic through a tight tenant rate
// limit (429s) with the gateway SIGKILLed and restarted once mid-run; then, with the persistent
// queue, events tracked while the gateway is down, the client process restarted, the gateway
// up. Every event the client reported sent is counted once, MAU equals the truth.
func TestSDKConformance(t *testing.T) {
	for _, sdk := range sdks {
		t.Run(sdk, func(t *testing.T) { testSDK(t, sdk) })
	}
}

// sdkRun is one phase's driver run.
type sdkRun struct {
	Tracked, Sent, Rejected, Pending int
}

func testSDK(t *testing.T, sdk string) {
	dir, err := filepath.Abs(filepath.Join("..", "sdk", sdk))
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "conformance.sh")
	build := exec.Command("bash", script, "build")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("%s build: %v\n%s", script, err, out)
	}
	p := startPipeline(t, "sdk_"+sdk)
	// A tight rate limit: the send phase's 30,000 events take about ten seconds of tokens, so
	// the SDK meets 429s and must retry after Retry-After.
	p.ingest.stop()
	p.ingest.args = append(p.ingest.args, "--tenant-rate", "3000", "--tenant-burst", "1000")
	p.ingest.start()
	waitHTTP(t, p.ingest, p.ingestURL+"/healthz", 30*time.Second)

	now := clockNow()
	base := now.Add(-2 * time.Minute).Truncate(time.Second)
	tmp := t.TempDir()
	sentFile := filepath.Join(tmp, "sent.tsv")
	env := func(tenant, app, url string, events, guids int, mode, queue string, deadline time.Duration) []string {
		return []string{
			"MAUMETER_URL=" + url, "MAUMETER_INGEST_KEY=" + p.keys[tenant],
			"SDK_TENANT=" + tenant, "SDK_APP=" + app, "SDK_MINI_PROGRAM=mp-sdk",
			fmt.Sprintf("SDK_EVENTS=%d", events), fmt.Sprintf("SDK_GUIDS=%d", guids),
			fmt.Sprintf("SDK_TS_MS=%d", base.UnixMilli()), "SDK_QUEUE_FILE=" + queue, "SDK_MODE=" + mode,
			"SDK_SENT_FILE=" + sentFile, fmt.Sprintf("SDK_DEADLINE_MS=%d", deadline.Milliseconds()),
		}
	}
	run := func(name string, env []string, deadline time.Duration, during func(*exec.Cmd)) sdkRun {
		t.Helper()
		cmd := exec.Command("bash", script, "run")
		cmd.Env = append(os.Environ(), env...)
		var out strings.Builder
		logf, err := os.Create(filepath.Join(tmp, name+".log"))
		if err != nil {
			t.Fatal(err)
		}
		defer logf.Close()
		cmd.Stdout, cmd.Stderr = &out, logf
		start := time.Now()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		if during != nil {
			during(cmd)
		}
		// The driver must end by its close deadline: no thread keeps it alive after Close.
		margin := deadline + 90*time.Second
		select {
		case err = <-done:
		case <-time.After(margin):
			cmd.Process.Kill()
			<-done
			t.Fatalf("%s: the %s driver did not exit within %s", name, sdk, margin)
		}
		stderr, _ := os.ReadFile(logf.Name())
		if err != nil {
			t.Fatalf("%s: the %s driver failed: %v\nstdout: %s\nstderr: %s", name, sdk, err, out.String(), tail(stderr))
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		var r sdkRun
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil {
			t.Fatalf("%s: the driver's last line %q: %v", name, lines[len(lines)-1], err)
		}
		t.Logf("%s %s: %+v in %s", sdk, name, r, time.Since(start).Round(time.Millisecond))
		return r
	}

	// 1. send: 30,000 events of 6,000 devices through the rate limit, the gateway killed and
	// restarted once a third of the way.
	const events, guids = 30_000, 6_000
	limited := func() float64 {
		return scrape(t, p.ingestAdmin, `maumeter_ingest_rate_limited_total{reason="tenant_rate_limited",tenant="t-newyork"}`)
	}
	var refused float64
	send := run("send", env("t-newyork", "ny-super", p.ingestURL, events, guids, "send", "", 3*time.Minute), 3*time.Minute, func(*exec.Cmd) {
		for sentLines(sentFile) < events/3 {
			time.Sleep(20 * time.Millisecond)
		}
		refused += limited()
		p.ingest.kill()
		time.Sleep(time.Second)
		p.ingest.start()
		waitHTTP(t, p.ingest, p.ingestURL+"/healthz", 30*time.Second)
		t.Logf("gateway killed and restarted after %d events were reported sent", sentLines(sentFile))
	})
	refused += limited()
	if send.Tracked != events || send.Sent != events || send.Rejected != 0 || send.Pending != 0 {
		t.Errorf("send: %+v, want all %d sent", send, events)
	}
	if refused == 0 {
		t.Errorf("the gateway answered no 429 tenant_rate_limited: the retries were not exercised")
	}
	t.Logf("429 tenant_rate_limited answered: %.0f", refused)

	// 2. enqueue while the gateway is down, then a new client process drains the file.
	const qEvents, qGUIDs = 5_000, 1_500
	queue := filepath.Join(tmp, "queue")
	down := "http://" + freeAddr(t) // nothing listens there
	enq := run("enqueue", env("t-auckland", "nz-super", down, qEvents, qGUIDs, "enqueue", queue, 2*time.Second), 2*time.Second, nil)
	if enq.Tracked != qEvents || enq.Pending != qEvents || enq.Sent != 0 {
		t.Errorf("enqueue: %+v, want all %d pending", enq, qEvents)
	}
	drain := run("drain", env("t-auckland", "nz-super", p.ingestURL, 0, qGUIDs, "drain", queue, 2*time.Minute), 2*time.Minute, nil)
	if drain.Sent != qEvents || drain.Pending != 0 || drain.Rejected != 0 {
		t.Errorf("drain: %+v, want the %d queued events sent", drain, qEvents)
	}

	// Every event reported sent once, with a UUIDv7 id.
	ids := map[string]bool{}
	perTenantGUIDs := map[string]map[string]bool{"ny": {}, "nz": {}}
	f, err := os.Open(sentFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	uuid7 := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	n := 0
	for sc.Scan() {
		fields := strings.Split(sc.Text(), "\t")
		if fields[0] != "sent" {
			t.Errorf("a result line %q", sc.Text())
			continue
		}
		n++
		if !uuid7.MatchString(fields[1]) {
			t.Errorf("event id %q is not a UUIDv7", fields[1])
		}
		if ids[fields[1]] {
			t.Errorf("event %s reported sent twice", fields[1])
		}
		ids[fields[1]] = true
		key := "ny"
		if n > events {
			key = "nz"
		}
		perTenantGUIDs[key][fields[2]] = true
	}
	if n != events+qEvents {
		t.Errorf("%d events reported sent, want %d", n, events+qEvents)
	}
	if len(perTenantGUIDs["ny"]) != guids || len(perTenantGUIDs["nz"]) != qGUIDs {
		t.Errorf("devices reported sent: %d and %d, want %d and %d", len(perTenantGUIDs["ny"]), len(perTenantGUIDs["nz"]), guids, qGUIDs)
	}

	// The counter counted every device once.
	p.waitCounted(t, 2*time.Minute)
	for _, c := range []struct {
		tenant, zone string
		want         int
	}{{"t-newyork", "America/New_York", guids}, {"t-auckland", "Pacific/Auckland", qGUIDs}} {
		loc, _ := time.LoadLocation(c.zone)
		month := calendar.MonthOf(base, loc).String()
		var body struct {
			MAU int `json:"mau"`
		}
		deadline := time.Now().Add(time.Minute)
		for {
			code, err := getJSON(fmt.Sprintf("%s/v1/tenants/%s/mau?month=%s", p.countURL, c.tenant, month), p.readKeys[c.tenant], &body)
			if err != nil || code != http.StatusOK {
				t.Fatalf("MAU %s: %d %v", c.tenant, code, err)
			}
			if body.MAU == c.want || time.Now().After(deadline) {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		if body.MAU != c.want {
			t.Errorf("%s MAU %s = %d, want %d", c.tenant, month, body.MAU, c.want)
		}
		t.Logf("%s %s MAU %d (truth %d)", sdk, c.tenant, body.MAU, c.want)
	}
}

// sentLines counts the lines of the driver's results file so far.
func sentLines(path string) int {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return strings.Count(string(data), "\n")
}

func tail(b []byte) string {
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}
