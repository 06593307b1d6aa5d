package api

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/maumeter/maumeter/pipeline/ingest"
	"github.com/maumeter/maumeter/pipeline/rate"
	"github.com/maumeter/maumeter/pkg/event"
	"github.com/maumeter/maumeter/pkg/tenant"
	"github.com/maumeter/maumeter/schemas"
)

type fixedMAU uint64

// fixedInvoices answers one statement for acme 2026-10 and none otherwise.
type fixedInvoices struct{}

func (fixedInvoices) Statements(_ context.Context, tenantID, month string) ([]rate.Statement, error) {
	if month == "" || month == "2026-10" {
		return []rate.Statement{{TenantID: tenantID, Month: "2026-10", AmountUSD: "185.18"}}, nil
	}
	return nil, nil
}

func (f fixedMAU) MAU(context.Context, string, string) (uint64, error) { return uint64(f), nil }

// testKeys are the keys of the test catalogue: made as `maumeter keys new` makes them, their
// lines written into the catalogue as an operator would.
type testKeys struct {
	acmeIngest, acmeRead, globexRead, operator string
}

const testTenants = `tenants:
  - {id: acme, plan: pro, purchased: 2026-01-01, time_zone: Asia/Shanghai, apps: [a], ingest_keys: [%s], read_keys: [%s]}
  - {id: globex, plan: pro, purchased: 2026-01-01, apps: [g], read_keys: [%s]}
operator_keys: [%s]
`

// testCatalog returns the test catalogue and its keys.
func testCatalog(t *testing.T) (*tenant.Catalog, testKeys) {
	t.Helper()
	base, err := tenant.Parse("t.yaml", fmt.Appendf(nil, testTenants, "", "", "", ""))
	if err != nil {
		t.Fatal(err)
	}
	acme, _ := base.Tenant("acme")
	globex, _ := base.Tenant("globex")
	line := func(key string, entry interface{ YAML() string }, err error) (string, string) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return key, strings.TrimPrefix(entry.YAML(), "- ")
	}
	var k testKeys
	var ingestY, acmeY, globexY, opY string
	k.acmeIngest, ingestY = line(tenant.NewKey(rand.Reader, acme, nil, time.Time{}))
	k.acmeRead, acmeY = line(tenant.NewReadKey(rand.Reader, acme, time.Time{}))
	k.globexRead, globexY = line(tenant.NewReadKey(rand.Reader, globex, time.Time{}))
	k.operator, opY = line(tenant.NewOperatorKey(rand.Reader, time.Time{}))
	cat, err := tenant.Parse("t.yaml", fmt.Appendf(nil, testTenants, ingestY, acmeY, globexY, opY))
	if err != nil {
		t.Fatal(err)
	}
	return cat, k
}

func testRouter(t *testing.T) (http.Handler, testKeys, *prometheus.Registry) {
	t.Helper()
	cat, keys := testCatalog(t)
	reg := prometheus.NewRegistry()
	auth, err := NewAuth(cat.ReadKeyring(), slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatal(err)
	}
	ingest := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	return New(Config{
		Catalog: cat, Ingest: ingest, MAU: fixedMAU(42), Invoices: fixedInvoices{}, Auth: auth,
		Now: func() time.Time { return time.Date(2026, 10, 31, 16, 30, 0, 0, time.UTC) },
	}), keys, reg
}

// get sends GET url with the Authorization header auth ("" sends none).
func get(h http.Handler, url, auth string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, url, nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// TestOpenAPIMatchesRouter checks that every operation of schemas/openapi.yaml is routed and
// that the router serves nothing the document does not describe.
func TestOpenAPIMatchesRouter(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(schemas.OpenAPI, &doc); err != nil {
		t.Fatal(err)
	}
	public, keys, reg := testRouter(t)
	admin := Admin(reg)
	var documented []string
	for path, ops := range doc.Paths {
		for method := range ops {
			m := strings.ToUpper(method)
			documented = append(documented, m+" "+path)
			p := strings.ReplaceAll(path, "{tenant}", "acme")
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(m, p, strings.NewReader(""))
			req.Header.Set("Authorization", "Bearer "+keys.operator)
			h := public
			if path == "/metrics" { // the admin listener's (documented as such)
				h = admin
			}
			h.ServeHTTP(rec, req)
			if rec.Code == http.StatusNotFound || rec.Code == http.StatusMethodNotAllowed {
				t.Errorf("%s %s is documented but not routed (%d)", m, path, rec.Code)
			}
		}
	}
	routed := []string{"POST /v1/events", "GET /v1/tenants/{tenant}/mau", "GET /v1/tenants/{tenant}/invoices", "GET /metrics", "GET /healthz", "GET /readyz"}
	for _, r := range routed {
		if !slices.Contains(documented, r) {
			t.Errorf("%s is routed but not in schemas/openapi.yaml", r)
		}
	}
	for _, probe := range []string{"GET /v1/events", "DELETE /v1/tenants/acme/mau", "GET /v1/nothing", "GET /metrics", "GET /debug/pprof/"} {
		method, path, _ := strings.Cut(probe, " ")
		rec := httptest.NewRecorder()
		public.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
		if rec.Code != http.StatusNotFound && rec.Code != http.StatusMethodNotAllowed {
			t.Errorf("%s answered %d, want 404 or 405", probe, rec.Code)
		}
	}
}

func TestMAUDefaultsToTheTenantsCurrentMonth(t *testing.T) {
	h, keys, _ := testRouter(t)
	f := func(url string, wantCode int, wantBody string) {
		t.Helper()
		rec := get(h, url, "Bearer "+keys.operator)
		if rec.Code != wantCode || !strings.Contains(rec.Body.String(), wantBody) {
			t.Errorf("GET %s = %d %s, want %d containing %s", url, rec.Code, rec.Body, wantCode, wantBody)
		}
	}
	// 16:30Z on Oct 31 is Nov 1 in Shanghai.
	f("/v1/tenants/acme/mau", 200, `"month":"2026-11"`)
	f("/v1/tenants/acme/mau?month=2026-10", 200, `"mau":42`)
	f("/v1/tenants/acme/mau?month=2026-13", 400, "month")
	f("/v1/tenants/nobody/mau", 404, "not in the catalogue")
}

func TestInvoices(t *testing.T) {
	h, keys, _ := testRouter(t)
	f := func(url string, wantCode int, wantBody string) {
		t.Helper()
		rec := get(h, url, "Bearer "+keys.operator)
		if rec.Code != wantCode || !strings.Contains(rec.Body.String(), wantBody) {
			t.Errorf("GET %s = %d %s, want %d containing %s", url, rec.Code, rec.Body, wantCode, wantBody)
		}
	}
	f("/v1/tenants/acme/invoices", 200, `"amount_usd":"185.18"`)
	f("/v1/tenants/acme/invoices?month=2026-09", 200, `"statements":[]`)
	f("/v1/tenants/acme/invoices?month=2026-9", 400, "month")
	f("/v1/tenants/nobody/invoices", 404, "not in the catalogue")
}

// failingProducer refuses every batch while fail is set.
type failingProducer struct{ fail bool }

func (p *failingProducer) Produce(_ context.Context, events []event.Event) error {
	if p.fail && len(events) > 0 {
		return errors.New("kafka down")
	}
	return nil
}

// TestOpenAPIDocumentsIngest drives the real ingest handler behind the router into each of its
// answers and checks that the document describes every status it gave, its security scheme
// and every rejection reason.
func TestOpenAPIDocumentsIngest(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]struct {
			Security  []map[string][]string `yaml:"security"`
			Responses map[string]any        `yaml:"responses"`
		} `yaml:"paths"`
		Components struct {
			SecuritySchemes map[string]struct {
				Type   string `yaml:"type"`
				Scheme string `yaml:"scheme"`
			} `yaml:"securitySchemes"`
			Schemas struct {
				Rejection struct {
					Properties struct {
						Reason struct {
							Enum []string `yaml:"enum"`
						} `yaml:"reason"`
					} `yaml:"properties"`
				} `yaml:"Rejection"`
			} `yaml:"schemas"`
		} `yaml:"components"`
	}
	if err := yaml.Unmarshal(schemas.OpenAPI, &doc); err != nil {
		t.Fatal(err)
	}
	op := doc.Paths["/v1/events"]["post"]
	if len(op.Security) != 1 || op.Security[0]["ingestKey"] == nil {
		t.Errorf("POST /v1/events security %v, want ingestKey", op.Security)
	}
	if s := doc.Components.SecuritySchemes["ingestKey"]; s.Type != "http" || s.Scheme != "bearer" {
		t.Errorf("ingestKey scheme %+v, want http bearer", s)
	}
	var want []string
	for _, r := range event.Reasons {
		want = append(want, string(r))
	}
	if got := doc.Components.Schemas.Rejection.Properties.Reason.Enum; !slices.Equal(got, want) {
		t.Errorf("Rejection.reason enum %v, want %v", got, want)
	}

	const skeleton = "tenants:\n  - {id: acme, plan: pro, purchased: 2026-01-01, apps: [a], ingest_limit: {events_per_second: 1, burst: 1000}, ingest_keys: [%s]}\n"
	base, err := tenant.Parse("t.yaml", fmt.Appendf(nil, skeleton, ""))
	if err != nil {
		t.Fatal(err)
	}
	acme, _ := base.Tenant("acme")
	key, entry, err := tenant.NewKey(rand.Reader, acme, nil, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	cat, err := tenant.Parse("t.yaml", fmt.Appendf(nil, skeleton, strings.TrimPrefix(entry.YAML(), "- ")))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC)
	producer := &failingProducer{}
	h, err := ingest.New(ingest.Config{}, cat, producer, nil, func() time.Time { return now }, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	router := New(Config{Catalog: cat, Ingest: h})
	ev := `{"tenant_id":"acme","app_id":"a","guid":"g","event":"search","ts":"2026-11-10T11:00:00Z"}` + "\n"
	seen := map[int]bool{}
	f := func(name, auth, encoding, body string, wantCode int) {
		t.Helper()
		req := httptest.NewRequest(http.MethodPost, "/v1/events", strings.NewReader(body))
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		if encoding != "" {
			req.Header.Set("Content-Encoding", encoding)
		}
		rec := httptest.NewRecorder()
		router.ServeHTTP(rec, req)
		if rec.Code != wantCode {
			t.Errorf("%s: %d %s, want %d", name, rec.Code, rec.Body, wantCode)
		}
		seen[rec.Code] = true
		if _, ok := op.Responses[fmt.Sprint(rec.Code)]; !ok {
			t.Errorf("%s: POST /v1/events answered %d, which schemas/openapi.yaml does not document", name, rec.Code)
		}
	}
	f("no key", "", "", ev, 401)
	wrong := key[:len(key)-1] + map[bool]string{true: "x", false: "y"}[key[len(key)-1] != 'x']
	f("wrong key", wrong, "", ev, 401)
	f("accepted", key, "", ev, 200)
	f("rejected event", key, "", `{"tenant_id":"other"}`, 200)
	f("broken array", key, "", "[", 400)
	f("too many events", key, "", strings.Repeat(ev, 1001), 413)
	f("brotli", key, "br", ev, 415)
	producer.fail = true
	f("kafka down", key, "", ev, 503)
	producer.fail = false
	f("over the rate limit", key, "", strings.Repeat(ev, 1000), 429)
	for code := range op.Responses {
		if c, _ := strconv.Atoi(code); !seen[c] {
			t.Errorf("schemas/openapi.yaml documents %s for POST /v1/events; the test did not provoke it", code)
		}
	}
}
