package maumeter

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sync"
	"testing"
	"time"
)

// gateway is a fake POST /v1/events: it decodes each request as the real one does (gzip,
// NDJSON) and answers with what script returns for the n-th request (0-based).
type gateway struct {
	t      *testing.T
	mu     sync.Mutex
	reqs   [][]wireEvent
	at     []time.Time
	script func(n int, batch []wireEvent) (status int, header http.Header, body any)
}

func (g *gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/events" {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			g.t.Errorf("gzip: %v", err)
			return
		}
		body = zr
	}
	var batch []wireEvent
	sc := bufio.NewScanner(body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e wireEvent
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			g.t.Errorf("NDJSON line %q: %v", sc.Text(), err)
		}
		batch = append(batch, e)
	}
	g.mu.Lock()
	n := len(g.reqs)
	g.reqs = append(g.reqs, batch)
	g.at = append(g.at, time.Now())
	g.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer key" {
		w.WriteHeader(http.StatusUnauthorized)
		json.NewEncoder(w).Encode(errorBody{Error: "no key"})
		return
	}
	status, h, resp := http.StatusOK, http.Header(nil), any(ingestResponse{Accepted: len(batch), Rejected: []rejection{}})
	if g.script != nil {
		status, h, resp = g.script(n, batch)
	}
	for k, v := range h {
		w.Header()[k] = v
	}
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(resp)
}

func (g *gateway) requests() [][]wireEvent {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([][]wireEvent(nil), g.reqs...)
}

func newGateway(t *testing.T, script func(int, []wireEvent) (int, http.Header, any)) (*gateway, *httptest.Server) {
	g := &gateway{t: t, script: script}
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	return g, srv
}

// results collects OnResult calls.
type results struct {
	mu  sync.Mutex
	all []Result
}

func (r *results) add(x Result) { r.mu.Lock(); r.all = append(r.all, x); r.mu.Unlock() }
func (r *results) list() []Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Result(nil), r.all...)
}

func ev(i int) Event {
	types := []EventType{Search, PreDownload, Open}
	return Event{TenantID: "acme", AppID: "app", GUID: fmt.Sprintf("dev-%d", i%7), Type: types[i%3], MiniProgramID: "mp",
		Time: time.Unix(1_800_000_000, 0).Add(time.Duration(i) * time.Millisecond)}
}

func newClient(t *testing.T, url string, mod func(*Config)) (*Client, *results) {
	t.Helper()
	res := &results{}
	cfg := Config{Endpoint: url, IngestKey: "key", Linger: 20 * time.Millisecond, MinBackoff: time.Millisecond,
		MaxBackoff: 5 * time.Millisecond, OnResult: res.add}
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c, res
}

var uuidV7 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestBatchesOnTheWire(t *testing.T) {
	g, srv := newGateway(t, nil)
	c, res := newClient(t, srv.URL, func(c *Config) { c.BatchEvents, c.Linger = 100, time.Hour })
	for i := 0; i < 250; i++ {
		if err := c.Track(ev(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	reqs := g.requests()
	if len(reqs) != 3 || len(reqs[0]) != 100 || len(reqs[1]) != 100 || len(reqs[2]) != 50 {
		t.Fatalf("batches %v, want 100, 100, 50", lens(reqs))
	}
	ids := map[string]bool{}
	for i, e := range append(append(reqs[0], reqs[1]...), reqs[2]...) {
		want := ev(i).wire()
		want.EventID = e.EventID
		if e != want {
			t.Fatalf("event %d on the wire %+v, want %+v", i, e, want)
		}
		if !uuidV7.MatchString(e.EventID) || ids[e.EventID] {
			t.Fatalf("event %d id %q: not a fresh UUIDv7", i, e.EventID)
		}
		ids[e.EventID] = true
	}
	if got := res.list(); len(got) != 250 || got[249].Status != Sent || got[0].Event.ID != reqs[0][0].EventID {
		t.Fatalf("%d results, last %+v", len(got), got[len(got)-1])
	}
}

func TestBatchBytesBound(t *testing.T) {
	g, srv := newGateway(t, nil)
	c, _ := newClient(t, srv.URL, func(c *Config) { c.BatchBytes = 4096 })
	big := ev(0)
	big.GUID = string(make([]byte, 0)) + fmt.Sprintf("%01000d", 1) // 1,000-byte GUID
	for i := 0; i < 20; i++ {
		if err := c.Track(big); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, r := range g.requests() {
		b, _ := json.Marshal(r)
		if len(r) > 1 && len(b) > 4096 {
			t.Errorf("a batch of %d events is %d bytes, over 4096", len(r), len(b))
		}
		total += len(r)
	}
	if total != 20 {
		t.Fatalf("%d events sent, want 20", total)
	}
}

func lens(reqs [][]wireEvent) []int {
	var out []int
	for _, r := range reqs {
		out = append(out, len(r))
	}
	return out
}

func TestRetriesKeepIDsAndHonourRetryAfter(t *testing.T) {
	g, srv := newGateway(t, func(n int, b []wireEvent) (int, http.Header, any) {
		switch n {
		case 0:
			return http.StatusTooManyRequests, http.Header{"Retry-After": {"1"}}, errorBody{Error: "slow down", Code: "tenant_rate_limited"}
		case 1:
			return http.StatusServiceUnavailable, http.Header{"Retry-After": {"1"}}, errorBody{Error: "kafka unavailable"}
		case 2:
			return http.StatusBadGateway, nil, errorBody{Error: "proxy"}
		}
		return http.StatusOK, nil, ingestResponse{Accepted: len(b), Rejected: []rejection{}}
	})
	c, res := newClient(t, srv.URL, nil)
	for i := 0; i < 10; i++ {
		c.Track(ev(i))
	}
	if err := c.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	reqs := g.requests()
	if len(reqs) != 4 {
		t.Fatalf("%d requests, want 4 (429, 503, 502, 200)", len(reqs))
	}
	for i := 1; i < 4; i++ {
		for j := range reqs[0] {
			if reqs[i][j].EventID != reqs[0][j].EventID {
				t.Fatalf("retry %d changed event %d's id", i, j)
			}
		}
	}
	// Retry-After: 1 is a lower bound on when the next attempt may come.
	for i := 0; i < 2; i++ {
		if gap := g.at[i+1].Sub(g.at[i]); gap < time.Second {
			t.Errorf("attempt %d came %s after a Retry-After of 1 s", i+2, gap)
		}
	}
	if got := res.list(); len(got) != 10 || got[9].Status != Sent {
		t.Fatalf("results %+v", got)
	}
}

func TestRejectionsAndPOCCap(t *testing.T) {
	_, srv := newGateway(t, func(n int, b []wireEvent) (int, http.Header, any) {
		return http.StatusOK, nil, ingestResponse{Accepted: len(b) - 2, Rejected: []rejection{
			{Index: 1, Reason: "ts_too_old", Field: "ts", Message: "older than 35 days"},
			{Index: 3, Reason: "poc_cap_reached", Message: "cap of 1,000 devices reached"},
		}}
	})
	c, res := newClient(t, srv.URL, nil)
	for i := 0; i < 5; i++ {
		c.Track(ev(i))
	}
	if err := c.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := res.list()
	if len(got) != 5 {
		t.Fatalf("%d results", len(got))
	}
	if r := got[1]; r.Status != Rejected || r.Reason != "ts_too_old" || r.Field != "ts" || !errors.Is(r.Err, ErrRejected) || errors.Is(r.Err, ErrPOCCapReached) {
		t.Errorf("event 1: %+v", r)
	}
	if r := got[3]; r.Status != Rejected || !errors.Is(r.Err, ErrPOCCapReached) {
		t.Errorf("event 3: %+v", r)
	}
	for _, i := range []int{0, 2, 4} {
		if got[i].Status != Sent || got[i].Err != nil {
			t.Errorf("event %d: %+v", i, got[i])
		}
	}
}

func TestRefusedRequestsAreNotRetried(t *testing.T) {
	g, srv := newGateway(t, nil)
	c, res := newClient(t, srv.URL, func(c *Config) { c.IngestKey = "wrong" })
	c.Track(ev(0))
	if err := c.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(g.requests()); n != 1 {
		t.Fatalf("%d requests for a 401, want 1", n)
	}
	if got := res.list(); len(got) != 1 || got[0].Status != Failed || got[0].Err == nil {
		t.Fatalf("results %+v", got)
	}
}

func TestInvalidAndFullAndClosed(t *testing.T) {
	_, srv := newGateway(t, func(int, []wireEvent) (int, http.Header, any) {
		return http.StatusServiceUnavailable, http.Header{"Retry-After": {"60"}}, errorBody{Error: "down"}
	})
	c, _ := newClient(t, srv.URL, func(c *Config) { c.QueueCapacity = 3 })
	bad := ev(1)
	bad.MiniProgramID = ""
	if err := c.Track(bad); !errors.Is(err, ErrInvalidEvent) {
		t.Errorf("pre_download without a mini program: %v", err)
	}
	for i := 0; i < 3; i++ {
		if err := c.Track(ev(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Track(ev(3)); !errors.Is(err, ErrQueueFull) {
		t.Errorf("4th event in a queue of 3: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	var pe *PendingError
	if err := c.Close(ctx); !errors.As(err, &pe) || pe.Pending != 3 {
		t.Errorf("Close with the gateway down: %v", err)
	}
	if err := c.Track(ev(0)); !errors.Is(err, ErrClosed) {
		t.Errorf("Track after Close: %v", err)
	}
}

func TestPersistentQueueSurvivesARestart(t *testing.T) {
	file := filepath.Join(t.TempDir(), "queue")
	// Offline: nothing listens.
	down := httptest.NewServer(http.NotFoundHandler())
	downURL := down.URL
	down.Close()
	c, res := newClient(t, downURL, func(c *Config) { c.QueueFile = file })
	var ids []string
	for i := 0; i < 1500; i++ {
		e := ev(i)
		e.ID = NewEventID()
		ids = append(ids, e.ID)
		if err := c.Track(e); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	var pe *PendingError
	if err := c.Close(ctx); !errors.As(err, &pe) || pe.Pending != 1500 {
		t.Fatalf("Close offline: %v", err)
	}
	if n := len(res.list()); n != 0 {
		t.Fatalf("%d results while offline", n)
	}
	// A torn last line, as a crash mid-write leaves it, is not an event.
	f, _ := os.OpenFile(file, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`E {"event_id":"torn`)
	f.Close()
	// The app restarts; the gateway is back.
	g, srv := newGateway(t, nil)
	c2, res2 := newClient(t, srv.URL, func(c *Config) { c.QueueFile = file })
	if n := c2.Pending(); n != 1500 {
		t.Fatalf("the restarted client found %d events, want 1500", n)
	}
	if err := c2.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	var sent []string
	for _, r := range g.requests() {
		for _, e := range r {
			sent = append(sent, e.EventID)
		}
	}
	if fmt.Sprint(sent) != fmt.Sprint(ids) || len(res2.list()) != 1500 {
		t.Fatalf("sent %d events (%d results), want the 1500 tracked, once each, in order", len(sent), len(res2.list()))
	}
	// A third client finds nothing left.
	c3, _ := newClient(t, srv.URL, func(c *Config) { c.QueueFile = file })
	if n := c3.Pending(); n != 0 {
		t.Fatalf("%d events left after they were sent", n)
	}
	c3.Close(context.Background())
}

func TestCloseLeavesNoGoroutine(t *testing.T) {
	_, srv := newGateway(t, func(int, []wireEvent) (int, http.Header, any) {
		return http.StatusServiceUnavailable, http.Header{"Retry-After": {"30"}}, errorBody{Error: "down"}
	})
	before := runtime.NumGoroutine()
	for i := 0; i < 5; i++ {
		c, _ := newClient(t, srv.URL, nil)
		c.Track(ev(i))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		c.Close(ctx)
		cancel()
	}
	srv.CloseClientConnections()
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines after 5 Close calls, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

func TestBackoffIsFullJitterWithinBounds(t *testing.T) {
	c := &Client{cfg: Config{MinBackoff: 100 * time.Millisecond, MaxBackoff: 2 * time.Second}}
	c.rand = newTestRand()
	for attempt := 0; attempt < 40; attempt++ {
		ceil := min(2*time.Second, 100*time.Millisecond<<min(attempt, 30))
		var hi time.Duration
		for i := 0; i < 200; i++ {
			d := c.backoff(attempt)
			if d < time.Millisecond || d > ceil {
				t.Fatalf("attempt %d: %s outside [1ms, %s]", attempt, d, ceil)
			}
			hi = max(hi, d)
		}
		if hi < ceil/2 {
			t.Errorf("attempt %d: 200 draws all below %s: not jittered over [0, %s]", attempt, hi, ceil)
		}
	}
}

func TestRetryAfterHeader(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{{"", 0}, {"3", 3 * time.Second}, {"-1", 0}, {"soon", 0}, {"0", 0}} {
		if got := retryAfter(tc.in); got != tc.want {
			t.Errorf("Retry-After %q = %s, want %s", tc.in, got, tc.want)
		}
	}
	if got := retryAfter(time.Now().Add(time.Hour).UTC().Format(http.TimeFormat)); got < 59*time.Minute {
		t.Errorf("an HTTP date an hour ahead = %s", got)
	}
}
