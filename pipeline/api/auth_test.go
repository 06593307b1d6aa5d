package api

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/maumeter/maumeter/internal/promtest"
	"github.com/maumeter/maumeter/pipeline/ingest"
	"github.com/maumeter/maumeter/pipeline/rate"
	"github.com/maumeter/maumeter/pkg/tenant"
	"github.com/maumeter/maumeter/schemas"
)

// readAttempt is one way of calling a read endpoint and what it must answer.
type readAttempt struct {
	name   string
	auth   string // the whole Authorization header; "" sends none
	tenant string // the {tenant} of the path
	query  string
	status int
	reason string // the maumeter_read_auth_failures_total reason it counts under, if refused
}

// readAttempts is the table of credentials × tenants, the same for both read endpoints. stray
// are well-formed keys of another catalogue.
func readAttempts(k, stray testKeys) []readAttempt {
	bearer := func(key string) string { return "Bearer " + key }
	flip := func(key string) string { // same id, wrong secret
		return key[:len(key)-1] + map[bool]string{true: "A", false: "B"}[key[len(key)-1] != 'A']
	}
	return []readAttempt{
		{"no key", "", "acme", "", 401, "missing"},
		{"no key, unknown tenant", "", "nobody", "", 401, "missing"},
		{"no key, bad month", "", "acme", "?month=2026-13", 401, "missing"},
		{"empty bearer", "Bearer ", "acme", "", 401, "missing"},
		{"basic auth", "Basic YWNtZTpzZWNyZXQ=", "acme", "", 401, "missing"},
		{"key without scheme", k.acmeRead, "acme", "", 401, "missing"},
		{"malformed: garbage", bearer("let-me-in"), "acme", "", 401, "malformed"},
		{"malformed: truncated read key", bearer(k.acmeRead[:len(k.acmeRead)-1]), "acme", "", 401, "malformed"},
		{"malformed: the catalogue hash", bearer(tenant.HashKey(k.acmeRead)), "acme", "", 401, "malformed"},
		{"malformed: two keys", bearer(k.acmeRead + " " + k.operator), "acme", "", 401, "malformed"},
		{"unknown read key", bearer(stray.acmeRead), "acme", "", 401, "unknown_key"},
		{"unknown operator key", bearer(stray.operator), "acme", "", 401, "unknown_key"},
		{"read key presented as an operator key", bearer(tenant.OperatorKeyPrefix + strings.TrimPrefix(k.acmeRead, tenant.ReadKeyPrefix)), "globex", "", 401, "unknown_key"},
		{"read key, wrong secret", bearer(flip(k.acmeRead)), "acme", "", 401, "wrong_secret"},
		{"operator key, wrong secret", bearer(flip(k.operator)), "acme", "", 401, "wrong_secret"},
		{"acme's ingest key", bearer(k.acmeIngest), "acme", "", 401, "wrong_kind"},
		{"acme's ingest key, unknown tenant", bearer(k.acmeIngest), "nobody", "", 401, "wrong_kind"},
		{"globex's read key for acme", bearer(k.globexRead), "acme", "", 403, "other_tenant"},
		{"acme's read key for globex", bearer(k.acmeRead), "globex", "", 403, "other_tenant"},
		{"acme's read key for an unknown tenant", bearer(k.acmeRead), "nobody", "", 403, "other_tenant"},
		{"operator key", bearer(k.operator), "acme", "", 200, ""},
		{"operator key for globex", bearer(k.operator), "globex", "", 200, ""},
		{"operator key, lower-case scheme", "bearer " + k.operator, "globex", "", 200, ""},
		{"operator key, unknown tenant", bearer(k.operator), "nobody", "", 404, ""},
		{"operator key, bad month", bearer(k.operator), "acme", "?month=2026-13", 400, ""},
		{"acme's read key", bearer(k.acmeRead), "acme", "", 200, ""},
		{"acme's read key, bad month", bearer(k.acmeRead), "acme", "?month=2026-13", 400, ""},
		{"globex's read key", bearer(k.globexRead), "globex", "?month=2026-10", 200, ""},
	}
}

// TestReadAuthorization sends every attempt of the table to both read endpoints and checks the
// status, the challenge, that a refusal carries no data, that a success carries the asked
// tenant's, and the refusal counters.
func TestReadAuthorization(t *testing.T) {
	h, keys, reg := testRouter(t)
	_, stray := testCatalog(t)
	wantFailures := map[string]float64{}
	for _, endpoint := range []string{"mau", "invoices"} {
		for _, a := range readAttempts(keys, stray) {
			url := "/v1/tenants/" + a.tenant + "/" + endpoint + a.query
			rec := get(h, url, a.auth)
			if rec.Code != a.status {
				t.Errorf("%s: GET %s = %d %s, want %d", a.name, url, rec.Code, rec.Body, a.status)
				continue
			}
			if a.reason != "" {
				wantFailures[a.reason]++
			}
			body := rec.Body.String()
			challenge := rec.Header().Get("WWW-Authenticate")
			switch a.status {
			case http.StatusUnauthorized, http.StatusForbidden:
				want := `Bearer realm="maumeter read"`
				if a.status == http.StatusForbidden {
					want += `, error="insufficient_scope"`
				} else if a.reason != "missing" {
					want += `, error="invalid_token"`
				}
				if challenge != want {
					t.Errorf("%s: WWW-Authenticate %q, want %q", a.name, challenge, want)
				}
				var e struct{ Error string }
				if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error == "" || strings.Contains(body, "mau\"") || strings.Contains(body, "statements") {
					t.Errorf("%s: body %s, want only an error", a.name, body)
				}
				if strings.Contains(body, "catalogue") || strings.Contains(body, "nobody") {
					t.Errorf("%s: body %s says something of the tenants", a.name, body)
				}
			case http.StatusOK:
				if challenge != "" {
					t.Errorf("%s: 200 with WWW-Authenticate %q", a.name, challenge)
				}
				var ok struct {
					TenantID string `json:"tenant_id"`
				}
				if err := json.Unmarshal(rec.Body.Bytes(), &ok); err != nil || ok.TenantID != a.tenant {
					t.Errorf("%s: body %s, want tenant %s's", a.name, body, a.tenant)
				}
			case http.StatusNotFound:
				if !strings.Contains(body, "not in the catalogue") {
					t.Errorf("%s: 404 %s, want the unknown tenant named", a.name, body)
				}
			}
		}
	}
	for reason, want := range wantFailures {
		if got := counterValue(t, reg, "maumeter_read_auth_failures_total", "reason", reason); got != want {
			t.Errorf("maumeter_read_auth_failures_total{reason=%q} = %g, want %g", reason, got, want)
		}
	}
	if len(wantFailures) != 6 {
		t.Errorf("the table provoked the reasons %v, want all six", wantFailures)
	}
}

// TestOpenOperations: /healthz and /readyz need no key (they carry no MAU and no bill); /metrics
// and pprof are not on the public listener but on the admin one, without a key.
func TestOpenOperations(t *testing.T) {
	h, _, reg := testRouter(t)
	for _, url := range []string{"/healthz", "/readyz"} {
		if rec := get(h, url, ""); rec.Code != http.StatusOK {
			t.Errorf("GET %s without a key = %d %s, want 200", url, rec.Code, rec.Body)
		}
	}
	for _, url := range []string{"/metrics", "/debug/pprof/", "/debug/pprof/heap"} {
		if rec := get(h, url, ""); rec.Code != http.StatusNotFound {
			t.Errorf("public GET %s = %d, want 404: it belongs to the admin listener", url, rec.Code)
		}
	}
	get(h, "/v1/tenants/acme/mau", "") // a 401, counted
	admin := Admin(reg)
	if rec := get(admin, "/metrics", ""); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "maumeter_read_auth_failures_total") {
		t.Errorf("admin GET /metrics = %d, want 200 with the registry's metrics:\n%.300s", rec.Code, rec.Body)
	}
	if rec := get(admin, "/debug/pprof/heap?debug=1", ""); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "heap profile") {
		t.Errorf("admin GET /debug/pprof/heap = %d, want 200 with a heap profile:\n%.300s", rec.Code, rec.Body)
	}
}

// TestReadyzDetailsForOperators: anyone learns ready or not (200/503) from /readyz; only an
// operator key gets each check and its error, which can name internal addresses.
func TestReadyzDetailsForOperators(t *testing.T) {
	cat, keys := testCatalog(t)
	var broken atomic.Bool
	h := New(Config{Catalog: cat, Auth: newAuth(cat.ReadKeyring(), nil), Now: fixedNow, Ready: []Check{
		{Name: "clickhouse", Fn: func(context.Context) error {
			if broken.Load() {
				return errors.New("dial tcp 10.1.2.3:9000: connection refused")
			}
			return nil
		}},
		{Name: "counter", Fn: func(context.Context) error { return nil }},
	}})
	f := func(auth string, wantCode int, wantBody string) {
		t.Helper()
		rec := get(h, "/readyz", auth)
		if body := strings.TrimSpace(rec.Body.String()); rec.Code != wantCode || body != wantBody {
			t.Errorf("GET /readyz with %q = %d %s, want %d %s", auth, rec.Code, body, wantCode, wantBody)
		}
	}
	f("", 200, `{"status":"ready"}`)
	f("Bearer "+keys.operator, 200, `{"status":"ready","checks":{"clickhouse":"ok","counter":"ok"}}`)
	broken.Store(true)
	for _, auth := range []string{"", "Bearer " + keys.acmeRead, "Bearer " + keys.acmeIngest, "Bearer mmo_0000000000000000_" + strings.Repeat("A", 43)} {
		f(auth, 503, `{"status":"not ready"}`)
	}
	f("Bearer "+keys.operator, 503, `{"status":"not ready","checks":{"clickhouse":"dial tcp 10.1.2.3:9000: connection refused","counter":"ok"},"failed":{"clickhouse":"dial tcp 10.1.2.3:9000: connection refused"}}`)
}

// TestReadRateLimit: each read or operator key has its own token bucket of requests; over it,
// 429 read_rate_limited with Retry-After, counted by kind; another key is not affected, and
// the bucket refills with time. The limit is checked before the tenant, so probing other
// tenants costs tokens too.
func TestReadRateLimit(t *testing.T) {
	cat, keys := testCatalog(t)
	reg := prometheus.NewRegistry()
	auth, err := NewAuth(cat.ReadKeyring(), nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	clk := fixedNow()
	if err := auth.SetLimits(ReadLimit{PerSecond: 1, Burst: 2}, ReadLimit{PerSecond: 10, Burst: 3}, func() time.Time { return clk }); err != nil {
		t.Fatal(err)
	}
	h := New(Config{Catalog: cat, MAU: fixedMAU(7), Invoices: fixedInvoices{}, Auth: auth, Now: fixedNow})
	f := func(name, url, key string, wantCode int) {
		t.Helper()
		rec := get(h, url, "Bearer "+key)
		if rec.Code != wantCode {
			t.Errorf("%s: GET %s = %d %s, want %d", name, url, rec.Code, rec.Body, wantCode)
		}
		if wantCode == 429 && (rec.Header().Get("Retry-After") != "1" || !strings.Contains(rec.Body.String(), `"code":"read_rate_limited"`)) {
			t.Errorf("%s: 429 with Retry-After %q and body %s, want 1 and code read_rate_limited", name, rec.Header().Get("Retry-After"), rec.Body)
		}
	}
	f("acme 1st", "/v1/tenants/acme/mau", keys.acmeRead, 200)
	f("acme 2nd (invoices share the bucket)", "/v1/tenants/acme/invoices", keys.acmeRead, 200)
	f("acme 3rd", "/v1/tenants/acme/mau", keys.acmeRead, 429)
	f("acme probing globex", "/v1/tenants/globex/mau", keys.acmeRead, 429)
	f("globex's own key", "/v1/tenants/globex/mau", keys.globexRead, 200)
	for i := range 3 {
		f(fmt.Sprint("operator ", i+1), "/v1/tenants/acme/mau", keys.operator, 200)
	}
	f("operator 4th", "/v1/tenants/acme/mau", keys.operator, 429)
	clk = clk.Add(time.Second)
	f("acme a second later", "/v1/tenants/acme/mau", keys.acmeRead, 200)
	f("acme again", "/v1/tenants/acme/mau", keys.acmeRead, 429)
	f("operator a second later (10/s)", "/v1/tenants/globex/mau", keys.operator, 200)
	for kind, want := range map[string]float64{"read": 3, "operator": 1} {
		if got, _, _ := promtest.Value(reg, "maumeter_read_rate_limited_total", "kind", kind); got != want {
			t.Errorf("maumeter_read_rate_limited_total{kind=%s} = %g, want %g", kind, got, want)
		}
	}
	if err := auth.SetLimits(ReadLimit{PerSecond: -1}, ReadLimit{}, nil); err == nil {
		t.Error("a negative read rate was accepted")
	}
}

// Without an Auth the router refuses every read rather than serving it.
func TestNoAuthRefusesReads(t *testing.T) {
	cat, keys := testCatalog(t)
	h := New(Config{Catalog: cat, MAU: fixedMAU(1), Invoices: fixedInvoices{}, Now: fixedNow})
	for _, url := range []string{"/v1/tenants/acme/mau", "/v1/tenants/acme/invoices"} {
		if rec := get(h, url, "Bearer "+keys.operator); rec.Code != http.StatusUnauthorized {
			t.Errorf("GET %s with no Auth configured = %d, want 401", url, rec.Code)
		}
	}
}

// TestReadKeysNeverIngest drives the real ingest handler behind the router: read and operator
// keys are refused with 401 on POST /v1/events, the ingest key of the same tenant is taken.
func TestReadKeysNeverIngest(t *testing.T) {
	cat, keys := testCatalog(t)
	now := time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC)
	producer := &failingProducer{}
	h, err := ingest.New(ingest.Config{}, cat, producer, nil, func() time.Time { return now }, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	router := New(Config{Catalog: cat, Ingest: h})
	ev := `{"tenant_id":"acme","app_id":"a","guid":"g","event":"search","ts":"2026-11-10T11:00:00Z"}` + "\n"
	f := func(name, key string, want int) {
		t.Helper()
		req := httptest.NewRequest(http.MethodPost, "/v1/events", strings.NewReader(ev))
		req.Header.Set("Authorization", "Bearer "+key)
		rec := httptest.NewRecorder()
		router.ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("%s: POST /v1/events = %d %s, want %d", name, rec.Code, rec.Body, want)
		}
	}
	f("acme's read key", keys.acmeRead, 401)
	f("globex's read key", keys.globexRead, 401)
	f("operator key", keys.operator, 401)
	f("acme's ingest key", keys.acmeIngest, 200)
}

// fixedNow is the clock of the tests whose catalogue's fixed purchase days must not meet the
// wall clock.
func fixedNow() time.Time { return time.Date(2026, 10, 31, 16, 30, 0, 0, time.UTC) }

// TestReadKeysReload edits the catalogue file: a new read key works without a restart, a
// removed one stops working, and a broken file keeps the keys in force.
func TestReadKeysReload(t *testing.T) {
	cat, keys := testCatalog(t)
	acme, _ := cat.Tenant("acme")
	newKey, newEntry, err := tenant.NewReadKey(rand.Reader, acme, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "tenants.yaml")
	// The file is replaced atomically (a temporary file renamed over it), as the watcher asks.
	replace := func(data []byte) {
		t.Helper()
		if err := os.WriteFile(path+".tmp", data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			t.Fatal(err)
		}
	}
	write := func(readKeys string) {
		t.Helper()
		replace(fmt.Appendf(nil, testTenants, "", readKeys, "", ""))
	}
	reg := prometheus.NewRegistry()
	auth, err := NewAuth(cat.ReadKeyring(), slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatal(err)
	}
	h := New(Config{Catalog: cat, MAU: fixedMAU(7), Auth: auth, Now: fixedNow})
	status := func(key string) int { return get(h, "/v1/tenants/acme/mau", "Bearer "+key).Code }
	if status(keys.acmeRead) != 200 || status(newKey) != 401 {
		t.Fatalf("before any reload: old key %d, new key %d; want 200, 401", status(keys.acmeRead), status(newKey))
	}
	write(strings.TrimPrefix(newEntry.YAML(), "- ")) // the new key replaces the old one
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { auth.WatchKeys(ctx, path, 5*time.Millisecond); close(done) }()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 5 s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitFor("new key taken", func() bool { return status(newKey) == 200 })
	if got := status(keys.acmeRead); got != 401 {
		t.Errorf("removed key: %d, want 401", got)
	}
	if got := status(keys.operator); got != 401 {
		t.Errorf("operator key removed from the file: %d, want 401", got)
	}
	replace([]byte("tenants: [}"))
	waitFor("broken file noticed", func() bool {
		return counterValue(t, reg, "maumeter_read_key_reloads_total", "result", "error") == 1
	})
	if got := status(newKey); got != 200 {
		t.Errorf("after a broken file: new key %d, want 200 (the keys in force stay)", got)
	}
	cancel()
	<-done
}

// TestOpenAPIDocumentsReads checks the security of every operation (read keys or operator keys
// on the reads, nothing on metrics and health), then drives the router through the table and
// checks that every status it gave is documented and every documented one was given.
func TestOpenAPIDocumentsReads(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]struct {
			Security  *[]map[string][]string `yaml:"security"`
			Responses map[string]struct {
				Ref     string         `yaml:"$ref"`
				Headers map[string]any `yaml:"headers"`
			} `yaml:"responses"`
		} `yaml:"paths"`
		Components struct {
			Responses map[string]struct {
				Headers map[string]any `yaml:"headers"`
			} `yaml:"responses"`
			SecuritySchemes map[string]struct {
				Type        string `yaml:"type"`
				Scheme      string `yaml:"scheme"`
				Description string `yaml:"description"`
			} `yaml:"securitySchemes"`
		} `yaml:"components"`
	}
	if err := yaml.Unmarshal(schemas.OpenAPI, &doc); err != nil {
		t.Fatal(err)
	}
	for name, prefix := range map[string]string{"readKey": tenant.ReadKeyPrefix, "operatorKey": tenant.OperatorKeyPrefix} {
		s := doc.Components.SecuritySchemes[name]
		if s.Type != "http" || s.Scheme != "bearer" || !strings.Contains(s.Description, prefix) {
			t.Errorf("securitySchemes.%s = %+v, want http bearer describing %s keys", name, s, prefix)
		}
	}
	for _, path := range []string{"/metrics", "/healthz", "/readyz"} {
		if sec := doc.Paths[path]["get"].Security; sec == nil || len(*sec) != 0 {
			t.Errorf("GET %s: security %v, want [] (open)", path, sec)
		}
	}
	cat, keys := testCatalog(t)
	_, stray := testCatalog(t)
	newRouter := func(mau MAUReader, inv InvoiceReader) http.Handler {
		return New(Config{Catalog: cat, MAU: mau, Invoices: inv, Auth: newAuth(cat.ReadKeyring(), nil),
			Now: fixedNow})
	}
	h, down := newRouter(fixedMAU(42), fixedInvoices{}), newRouter(failingReader{}, failingReader{})
	for _, path := range []string{"/v1/tenants/{tenant}/mau", "/v1/tenants/{tenant}/invoices"} {
		op := doc.Paths[path]["get"]
		var schemes []string
		if op.Security != nil {
			for _, req := range *op.Security {
				for name := range req {
					schemes = append(schemes, name)
				}
				if len(req) != 1 {
					t.Errorf("GET %s: security requirement %v, want one scheme each (either key)", path, req)
				}
			}
		}
		slices.Sort(schemes)
		if !slices.Equal(schemes, []string{"operatorKey", "readKey"}) {
			t.Errorf("GET %s: security %v, want readKey or operatorKey", path, schemes)
		}
		for _, code := range []string{"401", "403"} {
			resp := op.Responses[code]
			headers := resp.Headers
			if name, ok := strings.CutPrefix(resp.Ref, "#/components/responses/"); ok {
				headers = doc.Components.Responses[name].Headers
			}
			if _, ok := headers["WWW-Authenticate"]; !ok {
				t.Errorf("GET %s: response %s does not document WWW-Authenticate", path, code)
			}
		}
		seen := map[int]bool{}
		endpoint := path[strings.LastIndex(path, "/")+1:]
		check := func(name string, rec *httptest.ResponseRecorder) {
			seen[rec.Code] = true
			if _, ok := op.Responses[strconv.Itoa(rec.Code)]; !ok {
				t.Errorf("%s: GET %s answered %d, which schemas/openapi.yaml does not document", name, path, rec.Code)
			}
		}
		for _, a := range readAttempts(keys, stray) {
			check(a.name, get(h, "/v1/tenants/"+a.tenant+"/"+endpoint+a.query, a.auth))
		}
		check("store down", get(down, "/v1/tenants/acme/"+endpoint, "Bearer "+keys.operator))
		slow := newAuth(cat.ReadKeyring(), nil)
		if err := slow.SetLimits(ReadLimit{PerSecond: 0.001, Burst: 1}, ReadLimit{}, fixedNow); err != nil {
			t.Fatal(err)
		}
		limited := New(Config{Catalog: cat, MAU: fixedMAU(42), Invoices: fixedInvoices{}, Auth: slow, Now: fixedNow})
		for i := range 2 {
			rec := get(limited, "/v1/tenants/acme/"+endpoint, "Bearer "+keys.acmeRead)
			check(fmt.Sprint("read key over its rate, read ", i+1), rec)
			if i == 1 && (rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "") {
				t.Errorf("GET %s, a read key's 2nd read at 1 per 1000 s: %d (Retry-After %q), want 429 with Retry-After", path, rec.Code, rec.Header().Get("Retry-After"))
			}
		}
		if name, ok := strings.CutPrefix(op.Responses["429"].Ref, "#/components/responses/"); !ok || doc.Components.Responses[name].Headers["Retry-After"] == nil {
			t.Errorf("GET %s: response 429 does not document Retry-After", path)
		}
		for code := range op.Responses {
			if c, _ := strconv.Atoi(code); !seen[c] {
				t.Errorf("schemas/openapi.yaml documents %s for GET %s; the table did not provoke it", code, path)
			}
		}
	}
}

// failingReader is a MAU and invoice store that is down.
type failingReader struct{}

func (failingReader) MAU(context.Context, string, string) (uint64, error) {
	return 0, errors.New("clickhouse down")
}

func (failingReader) Statements(context.Context, string, string) ([]rate.Statement, error) {
	return nil, errors.New("clickhouse down")
}

// counterValue reads one labelled counter from reg (0 when absent).
func counterValue(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	v, _, err := promtest.Value(reg, name, label, value)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
