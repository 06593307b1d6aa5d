package ingest

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/segmentio/kafka-go"

	"github.com/maumeter/maumeter/pipeline/bus"
	"github.com/maumeter/maumeter/pkg/event"
	"github.com/maumeter/maumeter/pkg/tenant"
)

var now = time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC)

const catalogue = `tenants:
  - {id: acme, plan: pro, purchased: 2026-01-01, apps: [acme-super, acme-lite], testing_apps: [acme-qa], ingest_keys: [%s]}
  - {id: globex, plan: pro, purchased: 2026-01-01, apps: [globex-app], ingest_keys: [%s]}
  - {id: initech, plan: poc_pro, purchased: 2026-01-01, testing_apps: [initech-poc], ingest_keys: [%s], ingest_limit: {events_per_second: 1000, burst: 1000}}
`

// keys of the test catalogue: acme has a key for all its apps and one for acme-qa only, and a
// read key; the catalogue has an operator key. Read and operator keys never send events.
type testKeys struct {
	acme, acmeQA, globex, initech string
	acmeID                        string
	acmeRead, operator            string
}

// testCatalog returns the test catalogue with fresh keys, written as an operator would: the
// YAML lines `maumeter keys new` prints.
func testCatalog(t testing.TB) (*tenant.Catalog, testKeys) {
	t.Helper()
	skeleton, err := tenant.Parse("t.yaml", fmt.Appendf(nil, catalogue, "", "", ""))
	if err != nil {
		t.Fatal(err)
	}
	newKey := func(id string, apps ...string) (string, string) {
		tn, _ := skeleton.Tenant(id)
		key, entry, err := tenant.NewKey(rand.Reader, tn, apps, now)
		if err != nil {
			t.Fatal(err)
		}
		return key, strings.TrimPrefix(entry.YAML(), "- ")
	}
	var k testKeys
	var acmeY, acmeQAY, globexY, initechY string
	k.acme, acmeY = newKey("acme")
	k.acmeQA, acmeQAY = newKey("acme", "acme-qa")
	k.globex, globexY = newKey("globex")
	k.initech, initechY = newKey("initech")
	acme, _ := skeleton.Tenant("acme")
	readKey, readEntry, err := tenant.NewReadKey(rand.Reader, acme, now)
	if err != nil {
		t.Fatal(err)
	}
	opKey, opEntry, err := tenant.NewOperatorKey(rand.Reader, now)
	if err != nil {
		t.Fatal(err)
	}
	k.acmeRead, k.operator = readKey, opKey
	yaml := strings.Replace(fmt.Sprintf(catalogue, acmeY+", "+acmeQAY, globexY, initechY),
		"testing_apps: [acme-qa],", "testing_apps: [acme-qa], read_keys: ["+strings.TrimPrefix(readEntry.YAML(), "- ")+"],", 1) +
		"operator_keys:\n  " + opEntry.YAML() + "\n"
	c, err := tenant.Parse("t.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	if c.ReadKeyring().Len() != 2 {
		t.Fatalf("test catalogue has %d read and operator keys, want 2:\n%s", c.ReadKeyring().Len(), yaml)
	}
	k.acmeID = k.acme[len(tenant.KeyPrefix) : len(tenant.KeyPrefix)+16]
	return c, k
}

// testBrokers is the real Kafka of `make test` (MAUMETER_KAFKA_BROKERS), or an in-process one
// when the test runs alone.
func testBrokers(t testing.TB) []string {
	t.Helper()
	if b := os.Getenv("MAUMETER_KAFKA_BROKERS"); b != "" {
		brokers, err := bus.SplitBrokers(b)
		if err != nil {
			t.Fatal(err)
		}
		return brokers
	}
	if os.Getenv("MAUMETER_REQUIRE_SERVICES") == "1" {
		t.Fatal("MAUMETER_KAFKA_BROKERS is required (run `make test`, which starts Kafka)")
	}
	k, err := bus.StartEmbedded(0, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	return k.Brokers()
}

// newTopic creates a fresh topic of 4 partitions.
func newTopic(t testing.TB, brokers []string) string {
	t.Helper()
	name := strings.Map(func(r rune) rune {
		if r < 128 && event.ValidID(string(r)) {
			return r
		}
		return '_'
	}, t.Name())
	topic := fmt.Sprintf("ingest-test.%.100s.%d", name, time.Now().UnixNano())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := bus.EnsureTopic(ctx, bus.Plain(brokers), bus.Topic{Name: topic, Partitions: 4, ReplicationFactor: 1}, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	return topic
}

// kafkaHandler is the handler producing to a fresh topic of brokers.
func kafkaHandler(t *testing.T, brokers []string, cfg Config) (*Handler, string, testKeys) {
	t.Helper()
	topic := newTopic(t, brokers)
	p := bus.NewProducer(bus.Plain(brokers), topic)
	t.Cleanup(func() { p.Close() })
	cat, keys := testCatalog(t)
	if cfg.ProduceTimeout == 0 {
		cfg.ProduceTimeout = 3 * time.Second
	}
	h, err := New(cfg, cat, p, nil, func() time.Time { return now }, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return h, topic, keys
}

// recorder is a Producer that keeps what it was given; fail makes it refuse.
type recorder struct {
	mu     sync.Mutex
	events []event.Event
	fail   error
	block  chan struct{} // when not nil, Produce waits for it
}

func (r *recorder) Produce(ctx context.Context, events []event.Event) error {
	if r.block != nil {
		select {
		case <-r.block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return r.fail
	}
	r.events = append(r.events, events...)
	return nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.events)
}

// recordingHandler is the handler on a recorder, with a settable clock.
func recordingHandler(t testing.TB, cfg Config, caps CapState) (*Handler, *recorder, testKeys, *clock) {
	t.Helper()
	cat, keys := testCatalog(t)
	rec := &recorder{}
	clk := &clock{t: now}
	h, err := New(cfg, cat, rec, caps, clk.now, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return h, rec, keys, clk
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func post(h http.Handler, key string, body []byte, header ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/v1/events", bytes.NewReader(body))
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func ev(tenant, app, guid string) string {
	return `{"tenant_id":"` + tenant + `","app_id":"` + app + `","guid":"` + guid + `","event":"search","ts":"2026-11-10T11:00:00Z"}`
}

func decodeResponse(t testing.TB, rec *httptest.ResponseRecorder) Response {
	t.Helper()
	var resp Response
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		t.Fatalf("response %d %q: %v", rec.Code, rec.Body, err)
	}
	return resp
}

// readTopic returns every event on the 4 partitions of topic.
func readTopic(t testing.TB, brokers []string, topic string) []event.Event {
	t.Helper()
	var out []event.Event
	for p := range 4 {
		conn, err := kafka.DialLeader(context.Background(), "tcp", brokers[0], topic, p)
		if err != nil {
			t.Fatal(err)
		}
		first, last, err := conn.ReadOffsets()
		conn.Close()
		if err != nil {
			t.Fatal(err)
		}
		if last == first {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: p, MaxWait: 100 * time.Millisecond})
		for range last - first {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			m, err := r.ReadMessage(ctx)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			if h := m.Headers; len(h) != 1 || h[0].Key != event.SchemaHeader || string(h[0].Value) != event.SchemaV1 {
				t.Errorf("message headers %v, want schema=%s", h, event.SchemaV1)
			}
			e, err := event.Decode(m.Value)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := string(m.Key), string(e.PartitionKey()); got != want {
				t.Errorf("key %q, want %q", got, want)
			}
			out = append(out, e)
		}
		r.Close()
	}
	return out
}

func TestIngestAcceptsAndRejectsEachEvent(t *testing.T) {
	brokers := testBrokers(t)
	h, topic, keys := kafkaHandler(t, brokers, Config{})
	body := strings.Join([]string{
		ev("acme", "acme-super", "d1"),
		ev("acme", "globex-app", "d2"), // another tenant's app
		ev("nobody", "x", "d3"),        // another tenant
		`{"tenant_id":"acme"`,          // broken line
		ev("acme", "acme-qa", "d4"),    // testing app: accepted, reported apart later
		ev("acme", "acme-lite", "d5"),
	}, "\n")
	rec := post(h, keys.acme, []byte(body))
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	resp := decodeResponse(t, rec)
	want := map[int]event.Reason{1: event.ReasonUnknownApp, 2: event.ReasonTenantMismatch, 3: event.ReasonBadJSON}
	if resp.Accepted != 3 || len(resp.Rejected) != len(want) {
		t.Fatalf("accepted %d rejected %v, want 3 and %v", resp.Accepted, resp.Rejected, want)
	}
	for _, rj := range resp.Rejected {
		if want[rj.Index] != rj.Reason {
			t.Errorf("index %d: reason %s, want %s", rj.Index, rj.Reason, want[rj.Index])
		}
	}
	got := map[string]bool{}
	for _, e := range readTopic(t, brokers, topic) {
		got[e.TenantID+"/"+e.GUID] = true
	}
	if len(got) != 3 || !got["acme/d1"] || !got["acme/d4"] || !got["acme/d5"] {
		t.Errorf("topic holds %v, want exactly acme/d1, acme/d4, acme/d5", got)
	}
}

func TestIngestRequestLimits(t *testing.T) {
	h, _, keys, _ := recordingHandler(t, Config{}, nil)
	f := func(name string, rec *httptest.ResponseRecorder, wantCode int, wantMsg string) {
		t.Helper()
		if rec.Code != wantCode || !strings.Contains(rec.Body.String(), wantMsg) {
			t.Errorf("%s: %d %s, want %d containing %q", name, rec.Code, strings.TrimSpace(rec.Body.String()), wantCode, wantMsg)
		}
	}
	k := keys.acme
	many := strings.Repeat(ev("acme", "acme-super", "d")+"\n", 1001)
	f("1001 events", post(h, k, []byte(many)), 413, "1000")
	f("2 MiB body", post(h, k, bytes.Repeat([]byte(" "), 2<<20)), 413, "1048576")
	f("broken array", post(h, k, []byte(`[{"a":1},`)), 400, "JSON array")
	f("empty", post(h, k, nil), 400, "empty")
	f("brotli", post(h, k, []byte(ev("acme", "acme-super", "d")), "Content-Encoding", "br"), 415, "gzip")

	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	io.WriteString(zw, "["+ev("acme", "acme-super", "g1")+","+ev("acme", "acme-super", "g2")+"]")
	zw.Close()
	f("gzip array", post(h, k, gz.Bytes(), "Content-Encoding", "gzip"), 200, `"accepted":2`)

	// A gzip bomb: small on the wire, over the limit once inflated.
	gz.Reset()
	zw = gzip.NewWriter(&gz)
	zw.Write(bytes.Repeat([]byte(" "), 4<<20))
	zw.Close()
	f("gzip bomb", post(h, k, gz.Bytes(), "Content-Encoding", "gzip"), 413, "limit")
	f("not gzip", post(h, k, []byte(ev("acme", "acme-super", "d")), "Content-Encoding", "gzip"), 400, "gzip")
}

func TestIngestRefusesTheWholeBatchWhenKafkaIsDown(t *testing.T) {
	k, err := bus.StartEmbedded(0, "") // its own broker: this test kills it
	if err != nil {
		t.Fatal(err)
	}
	h, _, keys := kafkaHandler(t, k.Brokers(), Config{})
	k.Close()
	rec := post(h, keys.acme, []byte(ev("acme", "acme-super", "d1")+"\n"+ev("acme", "acme-super", "d2")))
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("status %d Retry-After %q: %s, want 503 with Retry-After", rec.Code, rec.Header().Get("Retry-After"), rec.Body)
	}
	if strings.Contains(rec.Body.String(), "accepted") && !strings.Contains(rec.Body.String(), "nothing") {
		t.Errorf("503 body claims acceptance: %s", rec.Body)
	}
}

// TestTenantIsolation sends, with every kind of wrong credentials and for every kind of
// foreign tenant or app, an event that would otherwise be valid, then reads the topic: none of
// them may be there, while the legitimate events sent alongside are.
func TestTenantIsolation(t *testing.T) {
	brokers := testBrokers(t)
	h, topic, keys := kafkaHandler(t, brokers, Config{})
	flipped := []byte(keys.globex) // same id, wrong secret
	flipped[len(flipped)-1] = map[bool]byte{true: 'A', false: 'B'}[flipped[len(flipped)-1] != 'A']
	_, foreign := testCatalog(t) // valid-looking keys of another catalogue
	type attempt struct {
		name   string
		header string // the whole Authorization header; "" sends none
		event  string
		status int          // of the request
		reason event.Reason // of the event when status is 200
	}
	bearer := func(k string) string { return "Bearer " + k }
	attempts := []attempt{
		{"cross-tenant: acme's key, globex's event", bearer(keys.acme), ev("globex", "globex-app", "x-1"), 200, event.ReasonTenantMismatch},
		{"cross-tenant: globex's key, acme's event", bearer(keys.globex), ev("acme", "acme-super", "x-2"), 200, event.ReasonTenantMismatch},
		{"cross-tenant: acme's key, unknown tenant", bearer(keys.acme), ev("nobody", "acme-super", "x-3"), 200, event.ReasonTenantMismatch},
		{"cross-app: acme's key, globex's app under acme", bearer(keys.acme), ev("acme", "globex-app", "x-4"), 200, event.ReasonUnknownApp},
		{"cross-app: acme-qa key, acme-super", bearer(keys.acmeQA), ev("acme", "acme-super", "x-5"), 200, event.ReasonAppNotAllowed},
		{"cross-app: acme-qa key, acme-lite", bearer(keys.acmeQA), ev("acme", "acme-lite", "x-6"), 200, event.ReasonAppNotAllowed},
		{"cross-app: acme's key, unknown app", bearer(keys.acme), ev("acme", "acme-evil", "x-7"), 200, event.ReasonUnknownApp},
		{"no key", "", ev("acme", "acme-super", "x-8"), 401, ""},
		{"empty bearer", "Bearer ", ev("acme", "acme-super", "x-9"), 401, ""},
		{"basic auth", "Basic YWNtZTpzZWNyZXQ=", ev("acme", "acme-super", "x-10"), 401, ""},
		{"key without scheme", keys.acme, ev("acme", "acme-super", "x-11"), 401, ""},
		{"bad key: garbage", bearer("let-me-in"), ev("acme", "acme-super", "x-12"), 401, ""},
		{"bad key: wrong secret", bearer(string(flipped)), ev("globex", "globex-app", "x-13"), 401, ""},
		{"bad key: unknown id", bearer(foreign.acme), ev("acme", "acme-super", "x-14"), 401, ""},
		{"bad key: truncated", bearer(keys.acme[:len(keys.acme)-1]), ev("acme", "acme-super", "x-15"), 401, ""},
		{"bad key: the catalogue hash", bearer(tenant.HashKey(keys.acme)), ev("acme", "acme-super", "x-16"), 401, ""},
		{"bad key: two keys", bearer(keys.acme + " " + keys.globex), ev("acme", "acme-super", "x-17"), 401, ""},
		{"acme's read key", bearer(keys.acmeRead), ev("acme", "acme-super", "x-18"), 401, ""},
		{"an operator key", bearer(keys.operator), ev("acme", "acme-super", "x-19"), 401, ""},
		{"acme's read key with an ingest prefix", bearer(tenant.KeyPrefix + strings.TrimPrefix(keys.acmeRead, tenant.ReadKeyPrefix)), ev("acme", "acme-super", "x-20"), 401, ""},
	}
	for _, a := range attempts {
		req := httptest.NewRequest(http.MethodPost, "/v1/events", strings.NewReader(a.event))
		if a.header != "" {
			req.Header.Set("Authorization", a.header)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != a.status {
			t.Errorf("%s: status %d %s, want %d", a.name, rec.Code, rec.Body, a.status)
			continue
		}
		switch a.status {
		case http.StatusUnauthorized:
			if rec.Header().Get("WWW-Authenticate") == "" {
				t.Errorf("%s: 401 without WWW-Authenticate", a.name)
			}
		case http.StatusOK:
			resp := decodeResponse(t, rec)
			if resp.Accepted != 0 || len(resp.Rejected) != 1 || resp.Rejected[0].Reason != a.reason {
				t.Errorf("%s: %+v, want one rejection with %s", a.name, resp, a.reason)
			}
		}
	}
	// The read and operator keys were refused as keys of another kind, not as unknown ones.
	reg := prometheus.NewRegistry()
	reg.MustRegister(h.authFailures)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var wrongKind float64
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == "wrong_kind" {
					wrongKind = m.GetCounter().GetValue()
				}
			}
		}
	}
	if got := wrongKind; got != 2 {
		t.Errorf("maumeter_ingest_auth_failures_total{reason=\"wrong_kind\"} = %g, want 2 (the read key and the operator key)", got)
	}
	// The legitimate traffic around the attempts.
	for _, ok := range []struct{ key, event string }{
		{keys.acme, ev("acme", "acme-super", "ok-1")},
		{keys.acmeQA, ev("acme", "acme-qa", "ok-2")},
		{keys.globex, ev("globex", "globex-app", "ok-3")},
	} {
		if rec := post(h, ok.key, []byte(ok.event)); rec.Code != http.StatusOK || decodeResponse(t, rec).Accepted != 1 {
			t.Fatalf("legitimate %s: %d %s", ok.event, rec.Code, rec.Body)
		}
	}
	got := map[string]bool{}
	for _, e := range readTopic(t, brokers, topic) {
		got[e.TenantID+"/"+e.AppID+"/"+e.GUID] = true
	}
	want := map[string]bool{"acme/acme-super/ok-1": true, "acme/acme-qa/ok-2": true, "globex/globex-app/ok-3": true}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("the topic holds %v, want exactly %v", got, want)
	}
	t.Logf("%d attempts refused, topic %s holds only the %d legitimate events", len(attempts), topic, len(got))
}

// TestKeyRotation keeps two keys of a tenant live, then removes the old one from the catalogue
// file: the gateway picks the change up without a restart.
func TestKeyRotation(t *testing.T) {
	h, rec, keys, _ := recordingHandler(t, Config{}, nil)
	dir := t.TempDir()
	path := dir + "/tenants.yaml"
	cat, _ := tenant.Parse("t.yaml", fmt.Appendf(nil, catalogue, "", "", ""))
	acme, _ := cat.Tenant("acme")
	newKey, entry, err := tenant.NewKey(rand.Reader, acme, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	write := func(acmeKeys string) {
		data := fmt.Appendf(nil, catalogue, acmeKeys, "", "")
		if err := os.WriteFile(path+".tmp", data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			t.Fatal(err)
		}
	}
	// The file starts with the old key only, as the handler's catalogue.
	oldEntry := ""
	for _, k := range h.catalog.Keys() {
		if k.Tenant() == "acme" && len(k.Apps) == 0 {
			oldEntry = strings.TrimPrefix(k.YAML(), "- ")
		}
	}
	write(oldEntry)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go h.WatchKeys(ctx, path, 10*time.Millisecond)
	status := func(key string) int {
		return post(h, key, []byte(ev("acme", "acme-super", "r"))).Code
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 5s", what)
			}
		}
	}
	if status(keys.acme) != 200 || status(newKey) != 401 {
		t.Fatalf("before rotation: old %d new %d, want 200 and 401", status(keys.acme), status(newKey))
	}
	write(oldEntry + ", " + strings.TrimPrefix(entry.YAML(), "- ")) // both live
	waitFor("new key accepted", func() bool { return status(newKey) == 200 })
	if status(keys.acme) != 200 {
		t.Fatal("old key refused while both are in the catalogue")
	}
	write("{id: 0123456789abcdef, sha256: nonsense}") // a broken file keeps the keys in force
	time.Sleep(100 * time.Millisecond)
	if status(keys.acme) != 200 || status(newKey) != 200 {
		t.Fatal("a broken catalogue file changed the keys in force")
	}
	write(strings.TrimPrefix(entry.YAML(), "- ")) // old key removed
	waitFor("old key refused", func() bool { return status(keys.acme) == 401 })
	if status(newKey) != 200 {
		t.Fatal("new key refused after the old one was removed")
	}
	if rec.count() == 0 {
		t.Fatal("nothing produced")
	}
}

// TestRateLimit: a tenant over its token bucket gets 429 with Retry-After and nothing of the
// batch is produced; other tenants are not affected; the bucket refills with time.
func TestRateLimit(t *testing.T) {
	h, rec, keys, clk := recordingHandler(t, Config{TenantLimit: tenant.IngestLimit{EventsPerSecond: 1000, Burst: 2000}}, nil)
	batch := func(tenant, app string, n int) []byte {
		var b bytes.Buffer
		for i := range n {
			fmt.Fprintln(&b, ev(tenant, app, fmt.Sprintf("g%d", i)))
		}
		return b.Bytes()
	}
	f := func(name string, key string, body []byte, wantCode int, wantProduced int) {
		t.Helper()
		r := post(h, key, body)
		if r.Code != wantCode {
			t.Errorf("%s: %d %s, want %d", name, r.Code, r.Body, wantCode)
		}
		if wantCode == 429 && r.Header().Get("Retry-After") == "" {
			t.Errorf("%s: 429 without Retry-After", name)
		}
		if got := rec.count(); got != wantProduced {
			t.Errorf("%s: %d events produced in all, want %d", name, got, wantProduced)
		}
	}
	full := batch("acme", "acme-super", 1000)
	f("acme 1st batch", keys.acme, full, 200, 1000)
	f("acme 2nd batch (burst 2000)", keys.acme, full, 200, 2000)
	f("acme 3rd batch", keys.acme, full, 429, 2000)
	f("acme one event, empty bucket", keys.acme, batch("acme", "acme-super", 1), 429, 2000)
	f("globex is not limited by acme", keys.globex, batch("globex", "globex-app", 1000), 200, 3000)
	clk.advance(500 * time.Millisecond)
	f("acme after 0.5s: 500 tokens", keys.acme, full, 429, 3000)
	f("acme after 0.5s: 400 events", keys.acme, batch("acme", "acme-super", 400), 200, 3400)
	clk.advance(1500 * time.Millisecond)
	f("acme after 2s", keys.acme, full, 200, 4400)
	// A batch Kafka refused (503) gives its tokens back: the retry is not throttled.
	clk.advance(time.Second) // 1,600 tokens
	rec.fail = errors.New("kafka down")
	f("acme while Kafka is down", keys.acme, batch("acme", "acme-super", 1000), 503, 4400)
	rec.fail = nil
	f("acme's retry", keys.acme, batch("acme", "acme-super", 1000), 200, 5400)
	f("acme's next batch", keys.acme, batch("acme", "acme-super", 1000), 429, 5400)
	// initech's catalogue ingest_limit (1000/s, burst 1000) overrides the default.
	f("initech 1st batch", keys.initech, batch("initech", "initech-poc", 1000), 200, 6400)
	f("initech 2nd batch", keys.initech, batch("initech", "initech-poc", 1), 429, 6400)
}

// TestOverloadGives429: with every in-flight slot taken by requests waiting for Kafka, a new
// request is refused at once with 429 rather than queued.
func TestOverloadGives429(t *testing.T) {
	h, rec, keys, _ := recordingHandler(t, Config{MaxInFlight: 2, TenantMaxInFlight: 2}, nil)
	rec.block = make(chan struct{})
	var wg sync.WaitGroup
	codes := make(chan int, 2)
	for i := range 2 {
		wg.Go(func() { codes <- post(h, keys.acme, []byte(ev("acme", "acme-super", fmt.Sprint(i)))).Code })
	}
	for len(h.inflight) < 2 {
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	r := post(h, keys.globex, []byte(ev("globex", "globex-app", "late")))
	if r.Code != http.StatusTooManyRequests || r.Header().Get("Retry-After") == "" || time.Since(start) > time.Second ||
		!strings.Contains(r.Body.String(), `"code":"gateway_overloaded"`) {
		t.Errorf("third request: %d %s after %s, want 429 gateway_overloaded with Retry-After at once", r.Code, r.Body, time.Since(start))
	}
	close(rec.block)
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 200 {
			t.Errorf("blocked request answered %d, want 200", c)
		}
	}
	if r := post(h, keys.globex, []byte(ev("globex", "globex-app", "later"))); r.Code != 200 {
		t.Errorf("after the load: %d", r.Code)
	}
}

// caps is a CapState of fixed full months and their counted devices.
type caps map[string]map[event.DeviceKey]bool // tenant/month → counted devices

func (c caps) MayCap(t *tenant.Tenant) bool { return t.ID == "initech" } // the POC tenant

func (c caps) Capped(e *event.Event, month string) bool {
	counted, full := c[e.TenantID+"/"+month]
	return full && !counted[e.Key()]
}

// TestPOCCap: when the counter says a POC tenant-month is full, only its counted devices get in.
func TestPOCCap(t *testing.T) {
	state := caps{"initech/2026-11": {event.KeyOf("initech", "initech-poc", "counted"): true}}
	h, rec, keys, _ := recordingHandler(t, Config{}, state)
	body := strings.Join([]string{
		ev("initech", "initech-poc", "counted"),
		ev("initech", "initech-poc", "new"),
		strings.Replace(ev("initech", "initech-poc", "october"), "2026-11-10T11", "2026-10-20T11", 1),
	}, "\n")
	resp := decodeResponse(t, post(h, keys.initech, []byte(body)))
	if resp.Accepted != 2 || len(resp.Rejected) != 1 || resp.Rejected[0].Index != 1 || resp.Rejected[0].Reason != event.ReasonPOCCapReached {
		t.Fatalf("%+v, want index 1 rejected with poc_cap_reached", resp)
	}
	// A full month of a tenant that is not on a POC plan means nothing.
	state["acme/2026-11"] = map[event.DeviceKey]bool{}
	if resp := decodeResponse(t, post(h, keys.acme, []byte(ev("acme", "acme-super", "new")))); resp.Accepted != 1 {
		t.Fatalf("pro tenant: %+v", resp)
	}
	if rec.count() != 3 {
		t.Fatalf("%d events produced, want 3", rec.count())
	}
}

// TestTenantInflightLimit: a tenant whose requests stall in their bodies holds at most its own
// slots; its next request gets 429 tenant_inflight_limit at once, and another tenant is served
// from the gateway's remaining slots. The slots are taken before the body is read, so a
// stalled body holds one; a slot comes back when its request ends.
func TestTenantInflightLimit(t *testing.T) {
	h, _, keys, _ := recordingHandler(t, Config{MaxInFlight: 3, TenantMaxInFlight: 2}, nil)
	var wg sync.WaitGroup
	var writers []*io.PipeWriter
	codes := make(chan int, 2)
	for range 2 {
		pr, pw := io.Pipe()
		writers = append(writers, pw)
		req := httptest.NewRequest(http.MethodPost, "/v1/events", pr)
		req.Header.Set("Authorization", "Bearer "+keys.acme)
		wg.Go(func() {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			codes <- rec.Code
		})
	}
	for len(h.inflight) < 2 {
		time.Sleep(time.Millisecond)
	}
	f := func(name, key, body string, wantCode int, wantErrCode string) {
		t.Helper()
		r := post(h, key, []byte(body))
		var eb ErrorBody
		_ = json.Unmarshal(r.Body.Bytes(), &eb)
		if r.Code != wantCode || eb.Code != wantErrCode || (wantCode == 429) != (r.Header().Get("Retry-After") != "") {
			t.Errorf("%s: %d %s (Retry-After %q), want %d %q", name, r.Code, r.Body, r.Header().Get("Retry-After"), wantCode, wantErrCode)
		}
	}
	f("acme over its 2 slots", keys.acme, ev("acme", "acme-super", "x"), 429, CodeTenantInflightLimit)
	f("acme's other key: same tenant", keys.acmeQA, ev("acme", "acme-qa", "x"), 429, CodeTenantInflightLimit)
	f("globex, one gateway slot left", keys.globex, ev("globex", "globex-app", "x"), 200, "")
	// A declared body over the limit is refused before any slot is looked at.
	big := httptest.NewRequest(http.MethodPost, "/v1/events", strings.NewReader("[]"))
	big.Header.Set("Authorization", "Bearer "+keys.acme)
	big.ContentLength = event.MaxBatchBytes + 1
	if rec := httptest.NewRecorder(); func() bool { h.ServeHTTP(rec, big); return rec.Code != http.StatusRequestEntityTooLarge }() {
		t.Errorf("acme with a declared body over the limit: want 413 before the slots")
	}
	// The stalled bodies end: their slots come back.
	for i, pw := range writers {
		fmt.Fprint(pw, ev("acme", "acme-super", fmt.Sprint("stalled", i)))
		pw.Close()
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 200 {
			t.Errorf("stalled request answered %d once its body came, want 200", c)
		}
	}
	f("acme after its requests ended", keys.acme, ev("acme", "acme-super", "y"), 200, "")
	if got := metricValue(t, h.limited.WithLabelValues("acme", CodeTenantInflightLimit)); got != 2 {
		t.Errorf("maumeter_ingest_rate_limited_total{acme,tenant_inflight_limit} = %g, want 2", got)
	}
	if got := metricValue(t, h.inflightG.WithLabelValues("acme")); got != 0 {
		t.Errorf("maumeter_ingest_inflight_requests{acme} = %g after the requests ended, want 0", got)
	}
}

// TestTenantInflightOverride: the catalogue's ingest_limit.max_inflight overrides the default,
// capped at the gateway's total; an ingest_limit giving only max_inflight keeps the default
// rate, one giving events_per_second: 0 lifts it.
func TestTenantInflightOverride(t *testing.T) {
	c, err := tenant.Parse("t.yaml", []byte(`tenants:
  - {id: a, plan: pro, purchased: 2026-01-01, apps: [a1], ingest_limit: {max_inflight: 7}}
  - {id: b, plan: pro, purchased: 2026-01-01, apps: [b1], ingest_limit: {max_inflight: 500}}
  - {id: c, plan: pro, purchased: 2026-01-01, apps: [c1], ingest_limit: {events_per_second: 0}}
  - {id: d, plan: pro, purchased: 2026-01-01, apps: [d1]}
`))
	if err != nil {
		t.Fatal(err)
	}
	s := newSlots(c, 16, 64)
	for id, want := range map[string]int64{"a": 7, "b": 64, "c": 16, "d": 16, "unknown": 16} {
		if got := s.of(id).max; got != want {
			t.Errorf("slots of %s: %d, want %d", id, got, want)
		}
	}
	l := newLimits(c, tenant.IngestLimit{EventsPerSecond: 100}, 1000, now)
	for id, limited := range map[string]bool{"a": true, "b": true, "c": false, "d": true} {
		if got := l[id] != nil; got != limited {
			t.Errorf("tenant %s rate limited: %v, want %v", id, got, limited)
		}
	}
}

// metricValue reads a counter or gauge.
func metricValue(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetCounter().GetValue() + d.GetGauge().GetValue()
}

// TestRefusalClosesStalledConnection: a request refused before its body is read (here a
// tenant over its in-flight slots, and an unknown key) gets its answer at once and its
// connection closed, although its body never comes: the gateway does not wait for the rest of
// the body (net/http would, until the read timeout, which this server does not even have).
func TestRefusalClosesStalledConnection(t *testing.T) {
	h, rec, keys, _ := recordingHandler(t, Config{MaxInFlight: 4, TenantMaxInFlight: 1}, nil)
	rec.block = make(chan struct{})
	srv := httptest.NewServer(h)
	defer srv.Close()
	defer close(rec.block)
	go post(h, keys.acme, []byte(ev("acme", "acme-super", "holder"))) // holds acme's one slot
	for len(h.inflight) < 1 {
		time.Sleep(time.Millisecond)
	}
	for name, key := range map[string]string{"acme over its slot": keys.acme, "unknown key": "mmk_0000000000000000_" + strings.Repeat("A", 43)} {
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 1000\r\n\r\n[{", key)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		start := time.Now()
		data, err := io.ReadAll(conn) // until the server closes the connection
		conn.Close()
		status, _, _ := strings.Cut(string(data), "\r\n")
		if err != nil || !strings.Contains(status, " 429 ") && !strings.Contains(status, " 401 ") {
			t.Errorf("%s: %q, %v after %s; want a 429 or 401 and the connection closed", name, status, err, time.Since(start))
		}
	}
}
