// Package ingest is the HTTP door into the meter: POST /v1/events authenticates the tenant's
// ingest key, applies the tenant's rate limit, validates each event of a batch on its own (event
// contract v1, docs/ARCHITECTURE.md) and produces the accepted ones to Kafka. An event counts as
// accepted only once Kafka confirmed it; when Kafka cannot take the batch, nothing of it is
// acknowledged and the client gets 503 with Retry-After. It must never answer 200 for an event
// that Kafka did not confirm, nor produce anything for a request it refused as a whole.
package ingest

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/maumeter/maumeter/pkg/calendar"
	"github.com/maumeter/maumeter/pkg/event"
	"github.com/maumeter/maumeter/pkg/tenant"
)

// Producer takes validated events and returns nil only when Kafka confirmed all of them.
type Producer interface {
	Produce(ctx context.Context, events []event.Event) error
}

// CapState says which devices a POC tenant-month may no longer add. The counter publishes the
// counted devices (pipeline/caps); an implementation answers from memory and must not block: it
// is asked for every otherwise valid event of a tenant it may cap.
type CapState interface {
	// MayCap reports whether some month of the tenant can have a cap (a purchase of a
	// hard-capped plan); Capped is asked only for such tenants.
	MayCap(t *tenant.Tenant) bool
	// Capped reports whether the month (YYYY-MM, the tenant's billing calendar) of the event's
	// tenant has reached the POC cap of the event's day (a day is capped only while a POC plan
	// and no paid plan is in force: plan.Catalog.CapAt) and the event's device is not among
	// those already counted.
	// An implementation may count a device it answers false for as admitted (caps.State
	// reserves its place), so it must be asked only once the event passed every other check.
	Capped(e *event.Event, month string) bool
}

// Config of the ingest handler.
type Config struct {
	MaxEvents      int           // per request (default event.MaxBatchEvents)
	MaxBodyBytes   int64         // per request, after decompression (default event.MaxBatchBytes)
	Bounds         event.Bounds  // ts bounds (default event.DefaultBounds)
	ProduceTimeout time.Duration // longest wait for Kafka before 503 (default 10s)
	RetryAfter     time.Duration // sent with 503 (default 1s)
	// TenantLimit is the rate limit of every tenant without an ingest_limit in the catalogue,
	// in events per second and burst (0: no limit; a burst of 0 is 2 s of the rate). A batch
	// takes one token per event, all or none; over the limit the request gets 429.
	TenantLimit tenant.IngestLimit
	// MaxInFlight bounds the requests served at once (each holds up to MaxBodyBytes); more get
	// 429 at once (default 256).
	MaxInFlight int
	// TenantMaxInFlight bounds the requests of one tenant served at once, inside MaxInFlight,
	// so that one tenant (slow bodies, a flood) cannot take every slot of the gateway; the
	// catalogue's ingest_limit.max_inflight overrides it (default MaxInFlight/4, at least 1).
	TenantMaxInFlight int
}

// Validate fills defaults and checks the rest.
func (c *Config) Validate() error {
	if c.MaxEvents <= 0 {
		c.MaxEvents = event.MaxBatchEvents
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = event.MaxBatchBytes
	}
	if c.Bounds == (event.Bounds{}) {
		c.Bounds = event.DefaultBounds
	}
	if c.ProduceTimeout <= 0 {
		c.ProduceTimeout = 10 * time.Second
	}
	if c.RetryAfter <= 0 {
		c.RetryAfter = time.Second
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 256
	}
	if c.TenantMaxInFlight < 0 {
		return fmt.Errorf("ingest: tenant max in-flight %d: must not be negative", c.TenantMaxInFlight)
	}
	if c.TenantMaxInFlight == 0 {
		c.TenantMaxInFlight = max(1, c.MaxInFlight/4)
	}
	if c.TenantMaxInFlight > c.MaxInFlight {
		return fmt.Errorf("ingest: tenant max in-flight %d exceeds max in-flight %d", c.TenantMaxInFlight, c.MaxInFlight)
	}
	if c.TenantLimit.EventsPerSecond < 0 || c.TenantLimit.Burst < 0 {
		return fmt.Errorf("ingest: tenant limit %+v: must not be negative", c.TenantLimit)
	}
	if c.TenantLimit.Burst > 0 && c.TenantLimit.Burst < c.MaxEvents {
		return fmt.Errorf("ingest: tenant burst %d is below one full batch (%d events)", c.TenantLimit.Burst, c.MaxEvents)
	}
	return nil
}

// Handler serves POST /v1/events. It is safe for concurrent use.
type Handler struct {
	cfg      Config
	catalog  *tenant.Catalog
	keys     atomic.Pointer[tenant.Keyring]
	limits   limits
	slots    slots
	inflight chan struct{}
	caps     CapState
	producer Producer
	now      func() time.Time
	log      *slog.Logger

	accepted     *prometheus.CounterVec
	rejected     *prometheus.CounterVec
	requests     *prometheus.CounterVec
	authFailures *prometheus.CounterVec
	limited      *prometheus.CounterVec
	inflightG    *prometheus.GaugeVec
	reloads      *prometheus.CounterVec
	duration     prometheus.Histogram
	produceTime  prometheus.Histogram
}

// New returns the handler. It accepts the ingest keys of the catalogue (SetKeyring replaces
// them). caps may be nil: no POC cap is enforced at the gateway. now is the clock of the ts
// bounds and the rate limits.
func New(cfg Config, catalog *tenant.Catalog, producer Producer, caps CapState, now func() time.Time, log *slog.Logger, reg prometheus.Registerer) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	h := &Handler{
		cfg: cfg, catalog: catalog, producer: producer, caps: caps, now: now, log: log,
		limits:   newLimits(catalog, cfg.TenantLimit, cfg.MaxEvents, now()),
		slots:    newSlots(catalog, cfg.TenantMaxInFlight, cfg.MaxInFlight),
		inflight: make(chan struct{}, cfg.MaxInFlight),
		// Tenant labels come from authenticated keys, so from the catalogue, never from what
		// clients send.
		accepted:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "maumeter_ingest_events_accepted_total", Help: "Events acknowledged after Kafka confirmed them."}, []string{"tenant"}),
		rejected:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "maumeter_ingest_events_rejected_total", Help: "Events rejected, by reason."}, []string{"reason"}),
		requests:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "maumeter_ingest_requests_total", Help: "Ingest requests by HTTP status."}, []string{"code"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "maumeter_ingest_auth_failures_total", Help: "Requests refused with 401, by reason (missing, malformed, wrong_kind, unknown_key, wrong_secret)."}, []string{"reason"}),
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "maumeter_ingest_rate_limited_total",
			Help: "Requests refused with 429, by tenant and reason (tenant_rate_limited, tenant_inflight_limit, gateway_overloaded)."}, []string{"tenant", "reason"}),
		inflightG: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "maumeter_ingest_inflight_requests",
			Help: "Ingest requests being served, by tenant (each holds one of the tenant's and one of the gateway's slots)."}, []string{"tenant"}),
		reloads:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "maumeter_ingest_key_reloads_total", Help: "Reloads of the ingest keys from the catalogue file, by result."}, []string{"result"}),
		duration:    prometheus.NewHistogram(prometheus.HistogramOpts{Name: "maumeter_ingest_request_seconds", Help: "Time to answer POST /v1/events.", Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12)}),
		produceTime: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "maumeter_ingest_produce_seconds", Help: "Time Kafka took to confirm a batch (or to fail).", Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12)}),
	}
	h.keys.Store(catalog.Keyring())
	for _, c := range []prometheus.Collector{h.accepted, h.rejected, h.requests, h.authFailures, h.limited, h.inflightG, h.reloads, h.duration, h.produceTime} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("ingest metrics: %w", err)
		}
	}
	return h, nil
}

// Response is the body of a processed batch.
type Response struct {
	Accepted int               `json:"accepted"`
	Rejected []event.Rejection `json:"rejected"`
}

// ErrorBody is the body of a request that was refused as a whole.
type ErrorBody struct {
	Error string `json:"error"`
	Code  string `json:"code,omitempty"` // machine-readable, on 429: one of the Code* constants
}

// Codes of a 429: which limit refused the request. None of them consumed anything of the
// request's body or of another tenant's capacity.
const (
	CodeTenantRateLimited   = "tenant_rate_limited"   // the tenant's token bucket of events is empty or too low for the batch
	CodeTenantInflightLimit = "tenant_inflight_limit" // the tenant already has its maximum of requests in flight on this gateway
	CodeGatewayOverloaded   = "gateway_overloaded"    // the gateway has its maximum of requests in flight (every tenant together)
)

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	defer func() { h.duration.Observe(time.Since(start).Seconds()) }()
	if r.Method != http.MethodPost {
		h.fail(w, http.StatusMethodNotAllowed, "use POST")
		return
	}
	// Authenticate before reading anything else: an unknown caller costs a hash, not a body.
	plain, ok := bearer(r)
	if !ok {
		h.authFailure(w, r, "missing", nil)
		return
	}
	key, err := h.keys.Load().Authenticate(plain)
	switch {
	case errors.Is(err, tenant.ErrKeyMalformed):
		h.authFailure(w, r, "malformed", err)
		return
	case errors.Is(err, tenant.ErrKeyKind): // a read or operator key: they never send events
		h.authFailure(w, r, "wrong_kind", err)
		return
	case errors.Is(err, tenant.ErrKeyUnknown):
		h.authFailure(w, r, "unknown_key", err)
		return
	case err != nil:
		h.authFailure(w, r, "wrong_secret", err)
		return
	}
	// Everything that can refuse the request from its headers does so before it takes a slot:
	// a declared body that is too large, the tenant's rate, then the tenant's own slots, and
	// only then one of the gateway's, so that a tenant over its share never holds (or waits
	// for) a slot another tenant could use.
	if r.ContentLength > h.cfg.MaxBodyBytes {
		shed(w)
		h.fail(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body of %d bytes exceeds the limit of %d bytes", r.ContentLength, h.cfg.MaxBodyBytes))
		return
	}
	tid := key.Tenant()
	limit := h.limits[tid]
	if ok, wait := limit.take(0, h.now()); !ok { // an empty bucket refuses before the body is read
		h.tooMany(w, tid, CodeTenantRateLimited, wait, fmt.Sprintf("rate limit of tenant %s (%g events/s) exceeded; retry later", tid, limit.rate))
		return
	}
	ts := h.slots.of(tid)
	if !ts.acquire() {
		h.tooMany(w, tid, CodeTenantInflightLimit, time.Second, fmt.Sprintf("tenant %s has %d requests in flight on this gateway, its maximum; retry later", tid, ts.max))
		return
	}
	defer ts.release()
	select {
	case h.inflight <- struct{}{}:
		defer func() { <-h.inflight }()
	default:
		h.tooMany(w, tid, CodeGatewayOverloaded, time.Second, fmt.Sprintf("gateway overloaded (%d requests in flight); retry later", h.cfg.MaxInFlight))
		return
	}
	gauge := h.inflightG.WithLabelValues(tid)
	gauge.Inc()
	defer gauge.Dec()
	body, status, err := h.readBody(r)
	if err != nil {
		h.fail(w, status, err.Error())
		return
	}
	raws, err := event.SplitBatch(body, h.cfg.MaxEvents)
	switch {
	case errors.Is(err, event.ErrBatchTooLarge):
		h.fail(w, http.StatusRequestEntityTooLarge, err.Error())
		return
	case err != nil:
		h.fail(w, http.StatusBadRequest, err.Error())
		return
	}
	if ok, wait := limit.take(len(raws), h.now()); !ok {
		h.tooMany(w, tid, CodeTenantRateLimited, wait, fmt.Sprintf("rate limit of tenant %s (%g events/s) exceeded by this batch of %d events; nothing was accepted, retry later", key.Tenant(), limit.rate, len(raws)))
		return
	}
	good, rejected := h.validate(key, raws, h.now())
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.ProduceTimeout)
	defer cancel()
	pstart := time.Now()
	err = h.producer.Produce(ctx, good)
	h.produceTime.Observe(time.Since(pstart).Seconds())
	if err != nil {
		limit.give(len(raws))
		h.log.Warn("produce failed; batch refused", "tenant", key.Tenant(), "events", len(good), "err", err)
		w.Header().Set("Retry-After", retryAfter(h.cfg.RetryAfter))
		h.fail(w, http.StatusServiceUnavailable, "event store unavailable, nothing of this batch was accepted; retry later")
		return
	}
	h.accepted.WithLabelValues(key.Tenant()).Add(float64(len(good)))
	for _, rj := range rejected {
		h.rejected.WithLabelValues(string(rj.Reason)).Inc()
	}
	if rejected == nil {
		rejected = []event.Rejection{}
	}
	h.requests.WithLabelValues("200").Inc()
	writeJSON(w, http.StatusOK, Response{Accepted: len(good), Rejected: rejected})
}

// validate parses raw events and checks each against the contract, the key's tenant and apps,
// the catalogue and the POC caps.
func (h *Handler) validate(key *tenant.IngestKey, raws [][]byte, now time.Time) ([]event.Event, []event.Rejection) {
	good := make([]event.Event, 0, len(raws))
	var rejected []event.Rejection
	t, _ := h.catalog.Tenant(key.Tenant())
	capped := h.caps != nil && t != nil && h.caps.MayCap(t)
	for i, raw := range raws {
		e, rj := event.Parse(raw, now, h.cfg.Bounds)
		switch {
		case rj != nil:
		case e.TenantID != key.Tenant():
			// Whether the other tenant exists is none of this caller's business.
			rj = &event.Rejection{Reason: event.ReasonTenantMismatch, Field: "tenant_id", Message: fmt.Sprintf("this ingest key belongs to tenant %q", key.Tenant())}
		default:
			if rj = CheckCatalog(h.catalog, &e); rj == nil && !key.Allows(e.AppID) {
				rj = &event.Rejection{Reason: event.ReasonAppNotAllowed, Field: "app_id", Message: fmt.Sprintf("ingest key %s may not send events for app %q", key.ID, e.AppID)}
			}
			if rj == nil && capped && h.caps.Capped(&e, calendar.MonthOf(e.TS, t.Location()).String()) {
				rj = &event.Rejection{Reason: event.ReasonPOCCapReached, Field: "guid", Message: "the POC plan's MAU cap of this month is reached; only devices already counted are accepted"}
			}
		}
		if rj != nil {
			rj.Index = i
			rejected = append(rejected, *rj)
			continue
		}
		good = append(good, e)
	}
	return good, rejected
}

// CheckCatalog rejects an event whose tenant or app is not in the catalogue.
func CheckCatalog(c *tenant.Catalog, e *event.Event) *event.Rejection {
	t, ok := c.Tenant(e.TenantID)
	if !ok {
		return &event.Rejection{Reason: event.ReasonUnknownTenant, Field: "tenant_id", Message: fmt.Sprintf("tenant %q is not in the catalogue", e.TenantID)}
	}
	if known, _ := t.App(e.AppID); !known {
		return &event.Rejection{Reason: event.ReasonUnknownApp, Field: "app_id", Message: fmt.Sprintf("app %q is not an app of tenant %q", e.AppID, e.TenantID)}
	}
	return nil
}

// retryAfter formats a Retry-After header: whole seconds, at least 1.
func retryAfter(d time.Duration) string {
	return strconv.Itoa(max(1, int(math.Ceil(d.Seconds()))))
}

// shed closes the connection of a request refused without reading its body, once the answer
// is written. Otherwise net/http first reads what is left of a body of up to 256 KiB (to keep
// the connection), before it even sends the answer: a stalled or trickling client would wait
// for its refusal, and hold a goroutine and a file descriptor, until --http-read-timeout, and
// a flood of them could exhaust the gateway's descriptors for every tenant.
func shed(w http.ResponseWriter) {
	w.Header().Set("Connection", "close")
	_ = http.NewResponseController(w).SetReadDeadline(time.Now()) // not supported by test recorders
}

// tooMany answers 429 with Retry-After and the code of the limit that refused the request,
// and closes the connection (shed).
func (h *Handler) tooMany(w http.ResponseWriter, tenantID, code string, wait time.Duration, msg string) {
	shed(w)
	h.limited.WithLabelValues(tenantID, code).Inc()
	w.Header().Set("Retry-After", retryAfter(wait))
	h.requests.WithLabelValues(strconv.Itoa(http.StatusTooManyRequests)).Inc()
	writeJSON(w, http.StatusTooManyRequests, ErrorBody{Error: msg, Code: code})
}

func (h *Handler) readBody(r *http.Request) ([]byte, int, error) {
	if r.ContentLength > h.cfg.MaxBodyBytes {
		return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("body of %d bytes exceeds the limit of %d bytes", r.ContentLength, h.cfg.MaxBodyBytes)
	}
	var src io.Reader = r.Body
	switch enc := r.Header.Get("Content-Encoding"); enc {
	case "", "identity":
	case "gzip":
		zr, err := gzip.NewReader(io.LimitReader(r.Body, h.cfg.MaxBodyBytes+1))
		if err != nil {
			return nil, http.StatusBadRequest, fmt.Errorf("gzip body: %w", err)
		}
		defer zr.Close()
		src = zr
	default:
		return nil, http.StatusUnsupportedMediaType, fmt.Errorf("content encoding %q: only gzip is supported", enc)
	}
	body, err := io.ReadAll(io.LimitReader(src, h.cfg.MaxBodyBytes+1))
	if err != nil {
		return nil, http.StatusBadRequest, fmt.Errorf("read body: %w", err)
	}
	if int64(len(body)) > h.cfg.MaxBodyBytes {
		return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("body exceeds the limit of %d bytes", h.cfg.MaxBodyBytes)
	}
	return body, 0, nil
}

func (h *Handler) fail(w http.ResponseWriter, status int, msg string) {
	h.requests.WithLabelValues(strconv.Itoa(status)).Inc()
	writeJSON(w, status, ErrorBody{Error: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
