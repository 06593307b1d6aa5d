// Package ingest is the HTTP door into the meter: POST /v1/events validates each event of a
// batch on its own (event contract v1, docs/ARCHITECTURE.md) and produces the accepted ones to
// Kafka. An event counts as accepted only once Kafka confirmed it; when Kafka cannot take the
// batch, nothing of it is acknowledged and the client gets 503 with Retry-After.
package ingest

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/maumeter/maumeter/pkg/event"
	"github.com/maumeter/maumeter/pkg/tenant"
)

// Producer takes validated events and returns nil only when Kafka confirmed all of them.
type Producer interface {
	Produce(ctx context.Context, events []event.Event) error
}

// Config of the ingest handler.
type Config struct {
	MaxEvents      int           // per request (default event.MaxBatchEvents)
	MaxBodyBytes   int64         // per request, after decompression (default event.MaxBatchBytes)
	Bounds         event.Bounds  // ts bounds (default event.DefaultBounds)
	ProduceTimeout time.Duration // longest wait for Kafka before 503 (default 10s)
	RetryAfter     time.Duration // sent with 503 (default 1s)
}

// Validate fills defaults.
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
	return nil
}

// Handler serves POST /v1/events. It is safe for concurrent use.
type Handler struct {
	cfg      Config
	catalog  *tenant.Catalog
	producer Producer
	now      func() time.Time
	log      *slog.Logger

	accepted *prometheus.CounterVec
	rejected *prometheus.CounterVec
	requests *prometheus.CounterVec
}

// New returns the handler. now is the clock the ts bounds are checked against.
func New(cfg Config, catalog *tenant.Catalog, producer Producer, now func() time.Time, log *slog.Logger, reg prometheus.Registerer) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	h := &Handler{
		cfg: cfg, catalog: catalog, producer: producer, now: now, log: log,
		// Tenant labels are bounded by the catalogue, never by what clients send.
		accepted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "maumeter_ingest_events_accepted_total", Help: "Events acknowledged after Kafka confirmed them."}, []string{"tenant"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "maumeter_ingest_events_rejected_total", Help: "Events rejected, by reason."}, []string{"reason"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "maumeter_ingest_requests_total", Help: "Ingest requests by HTTP status."}, []string{"code"}),
	}
	for _, c := range []prometheus.Collector{h.accepted, h.rejected, h.requests} {
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
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
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
	good, rejected := h.Validate(raws, h.now())
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.ProduceTimeout)
	defer cancel()
	if err := h.producer.Produce(ctx, good); err != nil {
		h.log.Warn("produce failed; batch refused", "events", len(good), "err", err)
		w.Header().Set("Retry-After", strconv.Itoa(int(h.cfg.RetryAfter.Seconds()+0.5)))
		h.fail(w, http.StatusServiceUnavailable, "event store unavailable, nothing of this batch was accepted; retry later")
		return
	}
	for i := range good {
		h.accepted.WithLabelValues(good[i].TenantID).Inc()
	}
	for _, rj := range rejected {
		h.rejected.WithLabelValues(string(rj.Reason)).Inc()
	}
	if rejected == nil {
		rejected = []event.Rejection{}
	}
	h.requests.WithLabelValues("200").Inc()
	writeJSON(w, http.StatusOK, Response{Accepted: len(good), Rejected: rejected})
}

// Validate parses raw events and checks them against the contract and the catalogue.
func (h *Handler) Validate(raws [][]byte, now time.Time) ([]event.Event, []event.Rejection) {
	good := make([]event.Event, 0, len(raws))
	var rejected []event.Rejection
	for i, raw := range raws {
		e, rj := event.Parse(raw, now, h.cfg.Bounds)
		if rj == nil {
			rj = CheckCatalog(h.catalog, &e)
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

func (h *Handler) readBody(r *http.Request) ([]byte, int, error) {
	if r.Method != http.MethodPost {
		return nil, http.StatusMethodNotAllowed, errors.New("use POST")
	}
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
