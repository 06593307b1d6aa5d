// Package api assembles maumeter's HTTP surface (schemas/openapi.yaml): event ingest, exact MAU
// reads (with the month's quota, cost to date and projection) and invoice reads, and health, on
// the public listener (New); Prometheus metrics and pprof on the admin listener (Admin), which
// must never be reachable by tenants. Each role mounts the parts it serves.
// Ingest authenticates its own keys (pipeline/ingest); the reads take a tenant's read key or an
// operator key (Auth), each key limited to a rate of requests; /healthz and /readyz are open
// and say only whether the process is alive or ready, /readyz names its failing checks to an
// operator key only.
package api

import (
	"context"
	"encoding/json"
	"log/slog"
	"math"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/maumeter/maumeter/pipeline/chstore"
	"github.com/maumeter/maumeter/pipeline/rate"
	"github.com/maumeter/maumeter/pkg/calendar"
	"github.com/maumeter/maumeter/pkg/plan"
	"github.com/maumeter/maumeter/pkg/tenant"
)

// MAUReader answers the exact MAU of a tenant-month.
type MAUReader interface {
	MAU(ctx context.Context, tenant, month string) (uint64, error)
}

// UsageReader reads the exact per-app MAU of a tenant-month from the billing record
// (mau_devices) and the devices first seen in [from, to), in one query (chstore.Store).
type UsageReader interface {
	AppUsage(ctx context.Context, tm chstore.TenantMonth, from, to time.Time) (chstore.AppUsage, error)
}

// Check is one readiness check; a non-nil error makes /readyz fail with its message, unless
// the check only reports (ReportOnly): then /readyz lists its message under "reported" and
// stays ready.
type Check struct {
	Name       string
	Fn         func(ctx context.Context) error
	ReportOnly bool
}

// Config says what to mount.
type Config struct {
	Catalog *tenant.Catalog
	// Tenants, when set, gives the catalogue in force at each request instead of Catalog (the
	// counter reloads its catalogue).
	Tenants func() *tenant.Catalog
	Ingest  http.Handler // POST /v1/events; nil when this role does not ingest
	MAU     MAUReader    // GET /v1/tenants/{tenant}/mau; nil when not served
	// Plans and Usage add the plan, quota, amount to date and projection to the MAU read
	// (MAUBilling); without either, the read answers MAU and its cross-checks only.
	Plans    *plan.Catalog
	Usage    UsageReader
	Invoices InvoiceReader // GET /v1/tenants/{tenant}/invoices; nil when not served
	Auth     *Auth         // who may read, and who sees /readyz's details; nil: nobody (every read gets 401)
	Ready    []Check
	Now      func() time.Time
	Log      *slog.Logger
}

// New returns the router.
func New(cfg Config) http.Handler {
	if cfg.Auth == nil {
		cfg.Auth = newAuth(nil, cfg.Log)
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	if cfg.Ingest != nil {
		mux.Handle("POST /v1/events", cfg.Ingest)
	}
	if cfg.MAU != nil {
		mux.HandleFunc("GET /v1/tenants/{tenant}/mau", cfg.mau)
	}
	if cfg.Invoices != nil {
		mux.HandleFunc("GET /v1/tenants/{tenant}/invoices", cfg.invoices)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", cfg.ready)
	return mux
}

// Admin returns the handler of the admin listener: GET /metrics (g in the Prometheus text
// format) and net/http/pprof under /debug/pprof/. It has no authentication: serve it on a
// loopback or monitoring-network address only (the metrics name tenants, the profiles show
// memory).
func Admin(g prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	return mux
}

// MAUDetailer is a MAUReader that also gives the cross-checks of its answer (the counter).
type MAUDetailer interface {
	MAUDetail(ctx context.Context, tenant, month string) (uint64, MAUDetail, error)
}

// MAUDetail is what a counter adds to a MAU read.
type MAUDetail struct {
	Source           string
	Closed           bool
	RollupVersion    uint32
	HLLEstimate      uint64
	HLLRelativeError float64
	ByApp            map[string]uint64 // estimates for an open month, exact from the rollup for a closed one
}

// MAUResponse is the body of GET /v1/tenants/{tenant}/mau.
type MAUResponse struct {
	TenantID         string            `json:"tenant_id"`
	Month            string            `json:"month"`
	TimeZone         string            `json:"time_zone"`
	MAU              uint64            `json:"mau"`
	Source           string            `json:"source"`
	AsOf             time.Time         `json:"as_of"`
	Closed           bool              `json:"closed"`
	RollupVersion    uint32            `json:"rollup_version,omitempty"`
	HLLEstimate      uint64            `json:"hll_estimate,omitempty"`
	HLLRelativeError float64           `json:"hll_relative_error,omitempty"`
	ByApp            map[string]uint64 `json:"by_app,omitempty"`
	// MAUBilling is present when the role has the plan catalogue and ClickHouse (every role
	// that serves this read does); its fields sit beside the others in the JSON.
	*MAUBilling
}

// MAUBilling prices the month to date as the rater would: the exact per-app MAU from
// mau_devices (never the by_app estimates), priced by plan.Catalog.Price.
type MAUBilling struct {
	Plan        string `json:"plan"`         // the purchase that prices the month (docs/BILLING.md); "" with flag no_active_plan
	IncludedMAU int64  `json:"included_mau"` // after the contract; the cap of a POC plan
	BillableMAU int64  `json:"billable_mau"` // exact; on a POC plan every app (the cap counts them all)
	TestingMAU  int64  `json:"testing_mau"`  // exact
	// QuotaUsed is billable_mau / included_mau, to 4 places; nil when nothing is included.
	QuotaUsed       *float64       `json:"quota_used,omitempty"`
	AmountToDateUSD string         `json:"amount_to_date_usd"` // exact decimal, cents
	Flags           []string       `json:"flags"`
	Projection      *MAUProjection `json:"projection,omitempty"` // the tenant's current, open month only, from its day 2
}

// MAUProjection is the month carried to its end (plan.Horizon.Project): the billable MAU and
// the bill it would come to, as a point and a range, from the devices first seen each day of
// the month so far and the previous month's MAU when known.
type MAUProjection struct {
	MonthEndMAU           int64    `json:"month_end_mau"` // billable, the point
	MonthEndMAULow        int64    `json:"month_end_mau_low"`
	MonthEndMAUHigh       int64    `json:"month_end_mau_high"`
	MonthEndAmountUSD     string   `json:"month_end_amount_usd"`
	MonthEndAmountLowUSD  string   `json:"month_end_amount_low_usd"`
	MonthEndAmountHighUSD string   `json:"month_end_amount_high_usd"`
	MonthEndQuotaUsed     *float64 `json:"month_end_quota_used,omitempty"`
	Flags                 []string `json:"flags"` // of the projected bill (the point): poc_cap_exceeded warns of the cap
	Method                string   `json:"method"`
	// The basis: the HistoryDays complete days [From, To) of the month in the tenant's zone
	// the curve is fitted on, the billable devices first seen in them, the previous month's
	// billable MAU when known, and the days left after as_of.
	HistoryDays     int       `json:"history_days"`
	HistoryFrom     time.Time `json:"history_from"`
	HistoryTo       time.Time `json:"history_to"`
	NewBillableMAU  int64     `json:"new_billable_mau"`
	PrevBillableMAU *int64    `json:"prev_billable_mau,omitempty"`
	DaysAhead       float64   `json:"days_ahead"` // to 4 places; the arithmetic is exact
}

func (cfg Config) mau(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("tenant")
	if !cfg.Auth.authorize(w, r, id) {
		return
	}
	t, ok := cfg.catalog().Tenant(id)
	if !ok {
		writeError(w, http.StatusNotFound, "tenant "+id+" is not in the catalogue")
		return
	}
	now := cfg.Now()
	month := calendar.MonthOf(now, t.Location())
	if q := r.URL.Query().Get("month"); q != "" {
		m, err := calendar.ParseMonth(q)
		if err != nil {
			writeError(w, http.StatusBadRequest, "month: "+err.Error())
			return
		}
		month = m
	}
	var n uint64
	var err error
	d := MAUDetail{Source: "clickhouse mau_devices (uniqExact)"}
	if dr, ok := cfg.MAU.(MAUDetailer); ok {
		n, d, err = dr.MAUDetail(r.Context(), id, month.String())
	} else {
		n, err = cfg.MAU.MAU(r.Context(), id, month.String())
	}
	if err != nil {
		cfg.Log.Warn("mau query", "tenant", id, "month", month, "err", err)
		writeError(w, http.StatusServiceUnavailable, "MAU store unavailable; retry later")
		return
	}
	resp := MAUResponse{
		TenantID: id, Month: month.String(), TimeZone: t.Location().String(), MAU: n,
		Source: d.Source, AsOf: now.UTC(), Closed: d.Closed, RollupVersion: d.RollupVersion,
		HLLEstimate: d.HLLEstimate, HLLRelativeError: d.HLLRelativeError, ByApp: d.ByApp,
	}
	if cfg.Plans != nil && cfg.Usage != nil {
		if resp.MAUBilling, err = cfg.billing(r.Context(), t, month, now, d.Closed); err != nil {
			cfg.Log.Warn("mau usage query", "tenant", id, "month", month, "err", err)
			writeError(w, http.StatusServiceUnavailable, "MAU store unavailable; retry later")
			return
		}
	}
	writeJSON(w, http.StatusOK, resp)
}

// billing prices month m of t to date and, when m is t's current month and open, projects it.
// One ClickHouse query.
func (cfg Config) billing(ctx context.Context, t *tenant.Tenant, m calendar.Month, now time.Time, closed bool) (*MAUBilling, error) {
	h, project := plan.NewHorizon(now, t.Location(), m)
	project = project && !closed
	var from, to time.Time // a zero window counts no new devices
	if project {
		from, to = h.From, h.To
	}
	u, err := cfg.Usage.AppUsage(ctx, chstore.TenantMonth{TenantID: t.ID, Month: m.String()}, from, to)
	if err != nil {
		return nil, err
	}
	usage := plan.Usage{Month: m, MAUByApp: u.MAUByApp}
	b := cfg.Plans.Price(t, usage)
	out := &MAUBilling{Plan: b.Plan, IncludedMAU: b.IncludedMAU, BillableMAU: b.MAU, TestingMAU: b.TestingMAU,
		QuotaUsed: ratio(b.MAU, b.IncludedMAU), AmountToDateUSD: b.Amount.StringFixed(2), Flags: b.Flags}
	if project {
		out.Projection = cfg.projection(t, h, usage, u)
	}
	return out, nil
}

// projection carries usage to the month's end per app (each app its own curve), then prices
// the point and both ends of the range like the month: Price alone sorts billable from
// testing apps, so the projected billable MAU counts only the apps the bill will.
func (cfg Config) projection(t *tenant.Tenant, h plan.Horizon, usage plan.Usage, u chstore.AppUsage) *MAUProjection {
	p := h.Project(usage, u.NewByDay, u.PrevByApp)
	end, low, high := cfg.Plans.Price(t, p.Point), cfg.Plans.Price(t, p.Low), cfg.Plans.Price(t, p.High)
	// The complete days' first sightings, priced like the month, sort billable apps too: from
	// the daily counts, or from the window [From, To) that AppUsage counted when it has none.
	complete := plan.Usage{Month: usage.Month, MAUByApp: u.NewByApp}
	if u.NewByDay != nil {
		complete.MAUByApp = map[string]uint64{}
		for app, days := range u.NewByDay {
			for _, n := range days[:min(len(days), h.HistoryDays)] {
				complete.MAUByApp[app] += n
			}
		}
	}
	ahead, _ := h.Ahead.Float64()
	out := &MAUProjection{
		MonthEndMAU: end.MAU, MonthEndMAULow: low.MAU, MonthEndMAUHigh: high.MAU,
		MonthEndAmountUSD: end.Amount.StringFixed(2), MonthEndAmountLowUSD: low.Amount.StringFixed(2),
		MonthEndAmountHighUSD: high.Amount.StringFixed(2), MonthEndQuotaUsed: ratio(end.MAU, end.IncludedMAU),
		Flags: end.Flags, Method: p.Method,
		HistoryDays: h.HistoryDays, HistoryFrom: h.From.UTC(), HistoryTo: h.To.UTC(),
		NewBillableMAU: cfg.Plans.Price(t, complete).MAU,
		DaysAhead:      math.Round(ahead*1e4) / 1e4,
	}
	if u.PrevByApp != nil {
		prev := cfg.Plans.Price(t, plan.Usage{Month: usage.Month.Prev(), MAUByApp: u.PrevByApp}).MAU
		out.PrevBillableMAU = &prev
	}
	return out
}

// ratio is n/of to 4 places; nil when of is not positive.
func ratio(n, of int64) *float64 {
	if of <= 0 {
		return nil
	}
	v := math.Round(float64(n)/float64(of)*1e4) / 1e4
	return &v
}

// InvoiceReader reads the rated statements of a tenant (month "" for every month).
type InvoiceReader interface {
	Statements(ctx context.Context, tenantID, month string) ([]rate.Statement, error)
}

// InvoicesResponse is the body of GET /v1/tenants/{tenant}/invoices.
type InvoicesResponse struct {
	TenantID   string           `json:"tenant_id"`
	Statements []rate.Statement `json:"statements"`
}

func (cfg Config) invoices(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("tenant")
	if !cfg.Auth.authorize(w, r, id) {
		return
	}
	if _, ok := cfg.catalog().Tenant(id); !ok {
		writeError(w, http.StatusNotFound, "tenant "+id+" is not in the catalogue")
		return
	}
	month := r.URL.Query().Get("month")
	if month != "" {
		if _, err := calendar.ParseMonth(month); err != nil {
			writeError(w, http.StatusBadRequest, "month: "+err.Error())
			return
		}
	}
	sts, err := cfg.Invoices.Statements(r.Context(), id, month)
	if err != nil {
		cfg.Log.Warn("invoices query", "tenant", id, "month", month, "err", err)
		writeError(w, http.StatusServiceUnavailable, "invoice store unavailable; retry later")
		return
	}
	if sts == nil {
		sts = []rate.Statement{}
	}
	writeJSON(w, http.StatusOK, InvoicesResponse{TenantID: id, Statements: sts})
}

func (cfg Config) catalog() *tenant.Catalog {
	if cfg.Tenants != nil {
		return cfg.Tenants()
	}
	return cfg.Catalog
}

// ReadyResponse is the body of /readyz. Checks and Failed are given to an operator key only:
// their messages can name internal addresses and errors.
type ReadyResponse struct {
	Status string            `json:"status"`           // "ready" or "not ready"
	Checks map[string]string `json:"checks,omitempty"` // every check: "ok" or its error
	Failed map[string]string `json:"failed,omitempty"` // the failing checks and their errors
	// Reported: what report-only checks found (they never fail readiness), e.g. parked events.
	Reported map[string]string `json:"reported,omitempty"`
}

func (cfg Config) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	checks, failed, reported := map[string]string{}, map[string]string{}, map[string]string{}
	for _, c := range cfg.Ready {
		checks[c.Name] = "ok"
		if err := c.Fn(ctx); err != nil {
			checks[c.Name] = err.Error()
			if c.ReportOnly {
				reported[c.Name] = err.Error()
			} else {
				failed[c.Name] = err.Error()
			}
		}
	}
	resp, status := ReadyResponse{Status: "ready"}, http.StatusOK
	if len(failed) > 0 {
		resp, status = ReadyResponse{Status: "not ready"}, http.StatusServiceUnavailable
	}
	if cfg.Auth.operator(r) {
		resp.Checks = checks
		if len(failed) > 0 {
			resp.Failed = failed
		}
		if len(reported) > 0 {
			resp.Reported = reported
		}
	}
	writeJSON(w, status, resp)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// Timeouts bound how long one client may hold a connection, so that slow or stalled clients
// (a phone on a bad network, or a deliberate slowloris) cannot tie the server up: the headers
// must arrive within ReadHeader, the whole request (body included) within Read, the answer must
// be written within Write, and an idle keep-alive connection is closed after Idle.
type Timeouts struct {
	ReadHeader time.Duration // default 5s
	Read       time.Duration // default 30s: 1 MiB at 35 KB/s
	Write      time.Duration // default Read + 15s: reading the body, then waiting for Kafka
	Idle       time.Duration // default 2m
}

// NewServer returns an http.Server for h with the timeouts t (zero fields take the defaults)
// and a 64 KiB header limit.
func NewServer(h http.Handler, t Timeouts) *http.Server {
	if t.ReadHeader <= 0 {
		t.ReadHeader = 5 * time.Second
	}
	if t.Read <= 0 {
		t.Read = 30 * time.Second
	}
	if t.Write <= 0 {
		t.Write = t.Read + 15*time.Second
	}
	if t.Idle <= 0 {
		t.Idle = 2 * time.Minute
	}
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: t.ReadHeader,
		ReadTimeout:       t.Read,
		WriteTimeout:      t.Write,
		IdleTimeout:       t.Idle,
		MaxHeaderBytes:    64 << 10,
	}
}
