package api

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/maumeter/maumeter/pkg/tenant"
	"github.com/maumeter/maumeter/schemas"
)

type fixedMAU uint64

func (f fixedMAU) MAU(context.Context, string, string) (uint64, error) { return uint64(f), nil }

func testRouter(t *testing.T) http.Handler {
	t.Helper()
	cat, err := tenant.Parse("t.yaml", []byte("tenants:\n  - {id: acme, plan: pro, purchased: 2026-01-01, time_zone: Asia/Shanghai, apps: [a]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	ingest := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	return New(Config{
		Catalog: cat, Ingest: ingest, MAU: fixedMAU(42), Gatherer: prometheus.NewRegistry(),
		Now: func() time.Time { return time.Date(2026, 10, 31, 16, 30, 0, 0, time.UTC) },
	})
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
	h := testRouter(t)
	var documented []string
	for path, ops := range doc.Paths {
		for method := range ops {
			m := strings.ToUpper(method)
			documented = append(documented, m+" "+path)
			p := strings.ReplaceAll(path, "{tenant}", "acme")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(m, p, strings.NewReader("")))
			if rec.Code == http.StatusNotFound && !strings.Contains(rec.Body.String(), "catalogue") || rec.Code == http.StatusMethodNotAllowed {
				t.Errorf("%s %s is documented but not routed (%d)", m, path, rec.Code)
			}
		}
	}
	routed := []string{"POST /v1/events", "GET /v1/tenants/{tenant}/mau", "GET /metrics", "GET /healthz", "GET /readyz"}
	for _, r := range routed {
		if !slices.Contains(documented, r) {
			t.Errorf("%s is routed but not in schemas/openapi.yaml", r)
		}
	}
	for _, probe := range []string{"GET /v1/events", "DELETE /v1/tenants/acme/mau", "GET /v1/nothing"} {
		method, path, _ := strings.Cut(probe, " ")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
		if rec.Code != http.StatusNotFound && rec.Code != http.StatusMethodNotAllowed {
			t.Errorf("%s answered %d, want 404 or 405", probe, rec.Code)
		}
	}
}

func TestMAUDefaultsToTheTenantsCurrentMonth(t *testing.T) {
	h := testRouter(t)
	f := func(url string, wantCode int, wantBody string) {
		t.Helper()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", url, nil))
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
