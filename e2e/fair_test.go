package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestTenantIsolation: one tenant cannot take the gateway from another. Through the built
// binary with its default limits (--max-inflight 256, --tenant-max-inflight a quarter of it)
// on the real Kafka:
//
//  1. Solo: tenant B (t-newyork) sends batches at a steady rate (after a warm-up); every
//     request is timed.
//  2. Attack: tenant A (t-shanghai) opens 1,000 requests that send their headers and then
//     stall or trickle their bodies, and floods the gateway with normal batches, while B sends
//     as in 1.
//
// A holds exactly its 64 slots; its other slow requests and its whole flood get 429
// tenant_inflight_limit (or tenant_rate_limited) at once, with their connections closed. B's
// requests all succeed, and B's p99 latency under attack stays within 2x of its solo p99.
func TestTenantIsolation(t *testing.T) {
	const (
		slow      = 1000
		tenantCap = 64 // 256 / 4, the gateway's default
		rate      = 15 // B's requests per second
		phase     = 8 * time.Second
	)
	p := startPipeline(t, "fair")
	keyA, keyB := p.keys["t-shanghai"], p.keys["t-newyork"]
	addr := strings.TrimPrefix(p.ingestURL, "http://")
	var seq atomic.Int64
	batch := func(tenant, app string, n int) []byte {
		var b bytes.Buffer
		ts := clockNow().Add(-time.Minute).UTC().Format(time.RFC3339)
		for range n {
			fmt.Fprintf(&b, `{"tenant_id":%q,"app_id":%q,"guid":"fair-%d","event":"search","ts":%q}`+"\n", tenant, app, seq.Add(1), ts)
		}
		return b.Bytes()
	}
	type result struct {
		status   int
		code     string
		accepted int
		latency  time.Duration
	}
	postOnce := func(c *http.Client, key string, body []byte) result {
		req, _ := http.NewRequest(http.MethodPost, p.ingestURL+"/v1/events", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/x-ndjson")
		start := time.Now()
		resp, err := c.Do(req)
		if err != nil {
			return result{status: -1, code: err.Error(), latency: time.Since(start)}
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		r := result{status: resp.StatusCode, latency: time.Since(start)}
		var answer struct {
			Accepted int    `json:"accepted"`
			Code     string `json:"code"`
		}
		json.Unmarshal(data, &answer)
		r.accepted, r.code = answer.Accepted, answer.Code
		return r
	}
	// B: an open loop at a steady rate (a slow answer does not slow the sender), each request
	// a batch of 10 events, on its own keep-alive connections.
	clientB := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 30 * time.Second}
	runB := func(name string, phase time.Duration) []time.Duration {
		var mu sync.Mutex
		var results []result
		var wg sync.WaitGroup
		tick := time.NewTicker(time.Second / rate)
		defer tick.Stop()
		for end := time.Now().Add(phase); time.Now().Before(end); <-tick.C {
			wg.Go(func() {
				r := postOnce(clientB, keyB, batch("t-newyork", "ny-super", 10))
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
			})
		}
		wg.Wait()
		var lat []time.Duration
		failed := 0
		for _, r := range results {
			if r.status != http.StatusOK || r.accepted != 10 {
				failed++
				if failed <= 5 {
					t.Errorf("%s: B's request answered %d %q, accepted %d; want 200 with 10 accepted", name, r.status, r.code, r.accepted)
				}
			}
			lat = append(lat, r.latency)
		}
		slices.Sort(lat)
		p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
		t.Logf("%s: B sent %d requests, %d succeeded (%.1f%%); latency p50 %s, p99 %s, max %s", name, len(results), len(results)-failed,
			100*float64(len(results)-failed)/float64(len(results)), p50.Round(time.Microsecond), p99.Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond))
		return lat
	}
	// A warm-up, unmeasured: the producer finds its partitions, the counter joins its group.
	if warm := postOnce(clientB, keyB, batch("t-newyork", "ny-super", 10)); warm.status != http.StatusOK {
		t.Fatalf("B's first request: %d %s", warm.status, warm.code)
	}
	runB("warm-up", 3*time.Second)
	solo := runB("solo", phase)

	// 2. A's slow requests: headers, the start of a body that declares 100 kB, then nothing
	// (even) or one byte every 200 ms (odd). Each waits for its answer.
	type slowResult struct {
		status string
		body   string
	}
	slowDone := make(chan slowResult, slow)
	stop := make(chan struct{})
	var conns sync.WaitGroup
	var dialFailed atomic.Int64
	dialSem := make(chan struct{}, 64)
	for i := range slow {
		conns.Go(func() {
			dialSem <- struct{}{}
			conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
			<-dialSem
			if err != nil {
				dialFailed.Add(1)
				slowDone <- slowResult{status: "dial: " + err.Error()}
				return
			}
			defer conn.Close()
			fmt.Fprintf(conn, "POST /v1/events HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/x-ndjson\r\nContent-Length: 100000\r\n\r\n{\"tenant_id\":", addr, keyA)
			if i%2 == 1 {
				go func() {
					tick := time.NewTicker(200 * time.Millisecond)
					defer tick.Stop()
					for {
						select {
						case <-stop:
							return
						case <-tick.C:
							if _, err := conn.Write([]byte(" ")); err != nil {
								return
							}
						}
					}
				}()
			}
			done := make(chan slowResult, 1)
			go func() {
				resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
				if err != nil {
					done <- slowResult{status: "read: " + err.Error()}
					return
				}
				data, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				done <- slowResult{status: fmt.Sprint(resp.StatusCode), body: string(data)}
			}()
			select {
			case r := <-done:
				slowDone <- r
			case <-stop: // still held by the gateway
			}
		})
	}
	// Every slow request beyond A's slots is refused at once.
	refused := map[string]int{}
	deadline := time.After(15 * time.Second)
wait:
	for n := 0; n < slow-tenantCap; n++ {
		select {
		case r := <-slowDone:
			refused[r.status+" "+codeOf(r.body)]++
		case <-deadline:
			t.Errorf("after 15 s, %d of A's %d slow requests were answered (%v), want %d (all but its %d slots)", n, slow, refused, slow-tenantCap, tenantCap)
			break wait
		}
	}
	if refused["429 tenant_inflight_limit"] != slow-tenantCap {
		t.Errorf("A's refused slow requests: %v, want %d × 429 tenant_inflight_limit", refused, slow-tenantCap)
	}
	inflightA := scrape(t, p.ingestAdmin, `maumeter_ingest_inflight_requests{tenant="t-shanghai"}`)
	if inflightA != tenantCap {
		t.Errorf("gateway: %v requests of A in flight, want %d", inflightA, tenantCap)
	}
	t.Logf("attack: A holds %v slots with stalled bodies; its other slow requests: %v", inflightA, refused)

	// A's flood of normal batches, as fast as the answers come (Retry-After ignored), beside B.
	var flood sync.WaitGroup
	floodCodes := map[string]int{}
	var floodMu sync.Mutex
	floodStop := make(chan struct{})
	clientA := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}, Timeout: 30 * time.Second}
	for range 4 {
		flood.Go(func() {
			for {
				select {
				case <-floodStop:
					return
				default:
				}
				r := postOnce(clientA, keyA, batch("t-shanghai", "sh-super", 10))
				floodMu.Lock()
				floodCodes[fmt.Sprint(r.status, " ", r.code)]++
				floodMu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	attack := runB("under attack", phase)
	close(floodStop)
	flood.Wait()
	// A's slots were held throughout: its flood got nothing in.
	if still := scrape(t, p.ingestAdmin, `maumeter_ingest_inflight_requests{tenant="t-shanghai"}`); still != tenantCap {
		t.Errorf("after the attack phase: %v requests of A in flight, want still %d", still, tenantCap)
	}
	close(stop)
	conns.Wait()
	floodTotal := 0
	for code, n := range floodCodes {
		floodTotal += n
		if code != "429 tenant_inflight_limit" && code != "429 tenant_rate_limited" {
			t.Errorf("A's flood: %d answers %q, want only 429 tenant_inflight_limit or tenant_rate_limited", n, code)
		}
	}
	t.Logf("A's flood: %d requests in %s: %v", floodTotal, phase, floodCodes)
	if dialFailed.Load() > 0 {
		t.Errorf("%d of A's slow connections could not be opened", dialFailed.Load())
	}

	p99 := func(l []time.Duration) time.Duration { return l[len(l)*99/100] }
	if p99(attack) > 2*p99(solo) {
		t.Errorf("B's p99 under attack %s is more than twice its solo p99 %s", p99(attack), p99(solo))
	}
	t.Logf("B's p99: solo %s, under attack %s (%.2fx)", p99(solo).Round(time.Microsecond), p99(attack).Round(time.Microsecond),
		float64(p99(attack))/float64(p99(solo)))
}

// codeOf returns the code of an ingest error body ("" when it has none).
func codeOf(body string) string {
	var b struct {
		Code string `json:"code"`
	}
	json.Unmarshal([]byte(body), &b)
	return b.Code
}

// TestOperatorSurfaces: through the built binaries (a gateway and a counter, --admin-addr set):
// /metrics and pprof are served on the admin listeners and not on the public ones; /readyz
// tells anyone ready or not and an operator key its checks; a read key over its rate of reads
// (--read-rate 5/s, --read-burst 20, the defaults) gets 429 read_rate_limited with Retry-After,
// while the operator key still reads.
func TestOperatorSurfaces(t *testing.T) {
	p := startPipeline(t, "ops")
	waitHTTP(t, p.counter, p.countURL+"/readyz", 30*time.Second)
	waitHTTP(t, p.ingest, p.ingestURL+"/readyz", 30*time.Second)
	get := func(url, key string) (int, http.Header, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(data)
	}
	for _, c := range []struct{ public, admin, metric string }{
		{p.ingestURL, p.ingestAdmin, "maumeter_ingest_request_seconds_count"},
		{p.countURL, p.countAdmin, "maumeter_count_assigned_partitions"},
	} {
		for _, path := range []string{"/metrics", "/debug/pprof/"} {
			if code, _, _ := get(c.public+path, p.operator); code != http.StatusNotFound {
				t.Errorf("public %s%s = %d, want 404 (even with an operator key)", c.public, path, code)
			}
		}
		if code, _, body := get(c.admin+"/metrics", ""); code != http.StatusOK || !strings.Contains(body, c.metric) {
			t.Errorf("admin %s/metrics = %d, want 200 with %s", c.admin, code, c.metric)
		}
		if code, _, body := get(c.admin+"/debug/pprof/goroutine?debug=1", ""); code != http.StatusOK || !strings.Contains(body, "goroutine profile") {
			t.Errorf("admin %s/debug/pprof/goroutine = %d, want 200 with a goroutine profile", c.admin, code)
		}
	}

	for _, url := range []string{p.ingestURL, p.countURL} {
		for _, key := range []string{"", p.readKeys["t-newyork"], p.keys["t-newyork"]} {
			if code, _, body := get(url+"/readyz", key); code != http.StatusOK || strings.TrimSpace(body) != `{"status":"ready"}` {
				t.Errorf("%s/readyz with key %.4s… = %d %s, want 200 {\"status\":\"ready\"} and nothing more", url, key, code, body)
			}
		}
	}
	var ready struct {
		Status string            `json:"status"`
		Checks map[string]string `json:"checks"`
	}
	for url, check := range map[string]string{p.ingestURL: "caps", p.countURL: "counter"} {
		code, _, body := get(url+"/readyz", p.operator)
		if err := json.Unmarshal([]byte(body), &ready); err != nil || code != http.StatusOK || ready.Status != "ready" || ready.Checks[check] != "ok" {
			t.Errorf("%s/readyz with the operator key = %d %s, want 200 with check %s ok", url, code, body, check)
		}
	}

	// t-shanghai's read key probing t-newyork: 403 while its bucket lasts (the probe costs
	// tokens), then 429. The operator key has its own bucket.
	url := p.countURL + "/v1/tenants/t-newyork/mau"
	codes := map[int]int{}
	var limited http.Header
	var limitedBody string
	for i := range 30 {
		code, h, body := get(url, p.readKeys["t-shanghai"])
		codes[code]++
		if i < 20 && code != http.StatusForbidden {
			t.Errorf("read %d of t-shanghai's key: %d, want 403 within its burst of 20", i+1, code)
		}
		if code == http.StatusTooManyRequests && limited == nil {
			limited, limitedBody = h, body
		}
	}
	if codes[http.StatusTooManyRequests] == 0 || limited.Get("Retry-After") == "" || codeOf(limitedBody) != "read_rate_limited" {
		t.Errorf("30 quick reads of one read key: %v; first 429 Retry-After %q body %s; want 429 read_rate_limited with Retry-After after the burst",
			codes, limited.Get("Retry-After"), limitedBody)
	}
	if code, _, body := get(url, p.operator); code != http.StatusOK {
		t.Errorf("the operator key after the read key was limited: %d %s, want 200", code, body)
	}
	if n := scrape(t, p.countAdmin, `maumeter_read_rate_limited_total{kind="read"}`); n != float64(codes[http.StatusTooManyRequests]) {
		t.Errorf("maumeter_read_rate_limited_total{kind=\"read\"} = %v, want %d", n, codes[http.StatusTooManyRequests])
	}
	t.Logf("30 quick reads of one read key: %v", codes)
}
