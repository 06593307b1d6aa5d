package ingest

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/maumeter/maumeter/pipeline/bus"
	"github.com/maumeter/maumeter/pkg/event"
	"github.com/maumeter/maumeter/pkg/tenant"
)

var now = time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC)

const catalogue = "tenants:\n  - {id: acme, plan: pro, purchased: 2026-01-01, apps: [acme-super], testing_apps: [acme-qa]}\n  - {id: globex, plan: pro, purchased: 2026-01-01, apps: [globex-app]}\n"

// kafkaHandler is the handler on an in-process Kafka with a fresh topic.
func kafkaHandler(t *testing.T) (*Handler, *bus.Embedded, string) {
	t.Helper()
	k, err := bus.StartEmbedded(0, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	log := slog.New(slog.DiscardHandler)
	topic := "events-test"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := bus.EnsureTopic(ctx, k.Brokers(), bus.Topic{Name: topic, Partitions: 4, ReplicationFactor: 1}, log); err != nil {
		t.Fatal(err)
	}
	p := bus.NewProducer(k.Brokers(), topic)
	t.Cleanup(func() { p.Close() })
	cat, err := tenant.Parse("t.yaml", []byte(catalogue))
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(Config{ProduceTimeout: 3 * time.Second}, cat, p, func() time.Time { return now }, log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return h, k, topic
}

func post(h http.Handler, body []byte, header ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/v1/events", bytes.NewReader(body))
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

// readTopic returns every event on the topic.
func readTopic(t *testing.T, brokers []string, topic string) []event.Event {
	t.Helper()
	var out []event.Event
	for p := range 4 {
		conn, err := kafka.DialLeader(context.Background(), "tcp", brokers[0], topic, p)
		if err != nil {
			t.Fatal(err)
		}
		last, err := conn.ReadLastOffset()
		if err != nil {
			t.Fatal(err)
		}
		conn.Close()
		if last == 0 {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: p, MaxWait: 100 * time.Millisecond})
		for range last {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			m, err := r.ReadMessage(ctx)
			cancel()
			if err != nil {
				t.Fatal(err)
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
	h, k, topic := kafkaHandler(t)
	body := strings.Join([]string{
		ev("acme", "acme-super", "d1"),
		ev("acme", "globex-app", "d2"), // another tenant's app
		ev("nobody", "x", "d3"),        // unknown tenant
		`{"tenant_id":"acme"`,          // broken line
		ev("acme", "acme-qa", "d4"),    // testing app: accepted, reported apart later
		ev("globex", "globex-app", "d5"),
	}, "\n")
	rec := post(h, []byte(body))
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	var resp Response
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	want := map[int]event.Reason{1: event.ReasonUnknownApp, 2: event.ReasonUnknownTenant, 3: event.ReasonBadJSON}
	if resp.Accepted != 3 || len(resp.Rejected) != len(want) {
		t.Fatalf("accepted %d rejected %v, want 3 and %v", resp.Accepted, resp.Rejected, want)
	}
	for _, rj := range resp.Rejected {
		if want[rj.Index] != rj.Reason {
			t.Errorf("index %d: reason %s, want %s", rj.Index, rj.Reason, want[rj.Index])
		}
	}
	got := map[string]bool{}
	for _, e := range readTopic(t, k.Brokers(), topic) {
		got[e.TenantID+"/"+e.GUID] = true
	}
	if len(got) != 3 || !got["acme/d1"] || !got["acme/d4"] || !got["globex/d5"] {
		t.Errorf("topic holds %v, want exactly acme/d1, acme/d4, globex/d5", got)
	}
}

func TestIngestRequestLimits(t *testing.T) {
	h, _, _ := kafkaHandler(t)
	f := func(name string, rec *httptest.ResponseRecorder, wantCode int, wantMsg string) {
		t.Helper()
		if rec.Code != wantCode || !strings.Contains(rec.Body.String(), wantMsg) {
			t.Errorf("%s: %d %s, want %d containing %q", name, rec.Code, strings.TrimSpace(rec.Body.String()), wantCode, wantMsg)
		}
	}
	many := strings.Repeat(ev("acme", "acme-super", "d")+"\n", 1001)
	f("1001 events", post(h, []byte(many)), 413, "1000")
	f("2 MiB body", post(h, bytes.Repeat([]byte(" "), 2<<20)), 413, "1048576")
	f("broken array", post(h, []byte(`[{"a":1},`)), 400, "JSON array")
	f("empty", post(h, nil), 400, "empty")
	f("deflate", post(h, []byte(ev("acme", "acme-super", "d")), "Content-Encoding", "br"), 415, "gzip")

	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	io.WriteString(zw, "["+ev("acme", "acme-super", "g1")+","+ev("acme", "acme-super", "g2")+"]")
	zw.Close()
	f("gzip array", post(h, gz.Bytes(), "Content-Encoding", "gzip"), 200, `"accepted":2`)

	// A gzip bomb: small on the wire, over the limit once inflated.
	gz.Reset()
	zw = gzip.NewWriter(&gz)
	zw.Write(bytes.Repeat([]byte(" "), 4<<20))
	zw.Close()
	f("gzip bomb", post(h, gz.Bytes(), "Content-Encoding", "gzip"), 413, "limit")
}

func TestIngestRefusesTheWholeBatchWhenKafkaIsDown(t *testing.T) {
	h, k, _ := kafkaHandler(t)
	k.Close()
	rec := post(h, []byte(ev("acme", "acme-super", "d1")+"\n"+ev("acme", "acme-super", "d2")))
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("status %d Retry-After %q: %s, want 503 with Retry-After", rec.Code, rec.Header().Get("Retry-After"), rec.Body)
	}
	if strings.Contains(rec.Body.String(), "accepted") && !strings.Contains(rec.Body.String(), "nothing") {
		t.Errorf("503 body claims acceptance: %s", rec.Body)
	}
}
