package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/maumeter/maumeter/pkg/tenant"
)

// Auth guards the read endpoints (a tenant's MAU and invoices) with the catalogue's read and
// operator keys. A tenant's read key reads that tenant only; an operator key reads every tenant;
// ingest keys, which ship inside phone apps, read nothing. Safe for concurrent use.
//
// What a caller learns is bounded by what it proved: without a valid key, 401 whatever the
// tenant (so unauthenticated callers cannot tell which tenants exist); with a tenant's read key,
// 403 for every other tenant, existing or not; only an operator key gets 404 for an unknown
// tenant.
//
// Each key may make a limited rate of reads (SetLimits): a token bucket of requests per key,
// one rate for read keys and one for operator keys; over it, 429 with Retry-After.
type Auth struct {
	keys     atomic.Pointer[tenant.ReadKeyring]
	failures *prometheus.CounterVec
	reloads  *prometheus.CounterVec
	limited  *prometheus.CounterVec
	log      *slog.Logger

	limits  [2]ReadLimit // read keys, operator keys
	now     func() time.Time
	mu      sync.Mutex
	buckets map[string]*bucket // by key id: bounded by the keys the catalogue ever held
}

// ReadLimit is a token bucket of read requests per key: PerSecond refill, Burst capacity.
type ReadLimit struct {
	PerSecond float64 // 0: no limit
	Burst     int     // 0: one second of PerSecond, at least 1
}

// CodeReadRateLimited is the code of a read refused with 429.
const CodeReadRateLimited = "read_rate_limited"

// SetLimits sets the rate limits of read keys and operator keys; call it before serving.
// now is the clock of the buckets (nil: time.Now).
func (a *Auth) SetLimits(read, operator ReadLimit, now func() time.Time) error {
	for _, l := range []ReadLimit{read, operator} {
		if l.PerSecond < 0 || l.Burst < 0 || math.IsNaN(l.PerSecond) || math.IsInf(l.PerSecond, 0) {
			return fmt.Errorf("read limit %+v: must be a finite number, not negative", l)
		}
	}
	if now == nil {
		now = time.Now
	}
	a.limits, a.now = [2]ReadLimit{read, operator}, now
	return nil
}

// NewAuth returns the guard of the read endpoints with keys (Catalog.ReadKeyring; nil: no key,
// every read is refused) and registers its metrics with reg.
func NewAuth(keys *tenant.ReadKeyring, log *slog.Logger, reg prometheus.Registerer) (*Auth, error) {
	a := newAuth(keys, log)
	for _, c := range []prometheus.Collector{a.failures, a.reloads, a.limited} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("read auth metrics: %w", err)
		}
	}
	return a, nil
}

func newAuth(keys *tenant.ReadKeyring, log *slog.Logger) *Auth {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Auth{
		buckets: map[string]*bucket{},
		now:     time.Now,
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "maumeter_read_rate_limited_total",
			Help: "Reads of MAU or invoices refused with 429, by key kind (read, operator): the key's rate limit."}, []string{"kind"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "maumeter_read_auth_failures_total",
			Help: "Reads of MAU or invoices refused: 401 by reason (missing, malformed, wrong_kind, unknown_key, wrong_secret), 403 as other_tenant."}, []string{"reason"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "maumeter_read_key_reloads_total",
			Help: "Reloads of the read and operator keys from the catalogue file, by result."}, []string{"result"}),
		log: log,
	}
	a.keys.Store(keys)
	return a
}

// SetKeyring replaces the read and operator keys; requests in flight keep the keys they were
// authenticated with. Safe to call at any time.
func (a *Auth) SetKeyring(k *tenant.ReadKeyring) { a.keys.Store(k) }

// WatchKeys reloads the read and operator keys from the tenant catalogue at path whenever its
// content changes, checking every interval, until ctx ends. Only the keys are taken: a key of a
// tenant added to the file authenticates, but its reads answer 404 until the process restarts
// with the new catalogue. A file that does not load is logged and the keys in force stay.
//
// opts are the catalogue's parse options (the plan ids the roles started with).
func (a *Auth) WatchKeys(ctx context.Context, path string, interval time.Duration, opts ...tenant.Option) {
	tenant.Watch(ctx, path, interval, func(c *tenant.Catalog, err error) {
		if err != nil {
			a.log.Error("reload read keys: catalogue unreadable or invalid, keeping the keys in force", "file", path, "err", err)
			a.reloads.WithLabelValues("error").Inc()
			return
		}
		a.SetKeyring(c.ReadKeyring())
		a.reloads.WithLabelValues("ok").Inc()
		a.log.Info("read keys reloaded", "file", path, "keys", c.ReadKeyring().Len())
	}, opts...)
}

const realm = `Bearer realm="maumeter read"`

// authorize answers 401 or 403 and returns false unless the request carries a read key of
// tenantID or an operator key. It runs before anything else of the request is looked at.
func (a *Auth) authorize(w http.ResponseWriter, r *http.Request, tenantID string) bool {
	plain, ok := bearer(r)
	if !ok {
		a.unauthorized(w, r, "missing", nil, realm, "a read key is required: Authorization: Bearer <read or operator key>")
		return false
	}
	k, err := a.keys.Load().Authenticate(plain)
	if err != nil {
		reason, msg := "wrong_secret", "the key is not a valid read or operator key"
		switch {
		case errors.Is(err, tenant.ErrKeyMalformed):
			reason = "malformed"
		case errors.Is(err, tenant.ErrKeyKind):
			reason, msg = "wrong_kind", "an ingest key cannot read: use a read key (maumeter keys new --read)"
		case errors.Is(err, tenant.ErrKeyUnknown):
			reason = "unknown_key"
		}
		a.unauthorized(w, r, reason, err, realm+`, error="invalid_token"`, msg)
		return false
	}
	// The limit comes before the tenant check: probing other tenants costs tokens too.
	if ok, wait := a.take(k); !ok {
		kind := "read"
		if k.Kind() == tenant.KindOperator {
			kind = "operator"
		}
		a.limited.WithLabelValues(kind).Inc()
		a.log.Debug("read refused: rate limit", "key", k.ID, "kind", kind, "remote", r.RemoteAddr)
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(wait.Seconds())))))
		writeJSON(w, http.StatusTooManyRequests, map[string]string{"error": fmt.Sprintf("key %s exceeded its rate of reads; retry later", k.ID), "code": CodeReadRateLimited})
		return false
	}
	if !k.MayRead(tenantID) {
		a.failures.WithLabelValues("other_tenant").Inc()
		a.log.Info("read refused: key of another tenant", "key", k.ID, "key_tenant", k.Tenant(), "remote", r.RemoteAddr)
		w.Header().Set("WWW-Authenticate", realm+`, error="insufficient_scope"`)
		writeError(w, http.StatusForbidden, fmt.Sprintf("read key %s reads tenant %s only", k.ID, k.Tenant()))
		return false
	}
	return true
}

// operator reports whether the request carries a valid operator key. It counts no failure: it
// only decides how much /readyz says.
func (a *Auth) operator(r *http.Request) bool {
	plain, ok := bearer(r)
	if !ok {
		return false
	}
	k, err := a.keys.Load().Authenticate(plain)
	return err == nil && k.Kind() == tenant.KindOperator
}

// take takes one token of k's bucket, or says how long until there is one.
func (a *Auth) take(k *tenant.ReadKey) (bool, time.Duration) {
	l := a.limits[0]
	if k.Kind() == tenant.KindOperator {
		l = a.limits[1]
	}
	if l.PerSecond <= 0 {
		return true, 0
	}
	now := a.now()
	a.mu.Lock()
	b, ok := a.buckets[k.ID]
	if !ok {
		burst := float64(l.Burst)
		if burst <= 0 {
			burst = math.Max(1, l.PerSecond)
		}
		b = &bucket{rate: l.PerSecond, burst: burst, tokens: burst, last: now}
		a.buckets[k.ID] = b
	}
	a.mu.Unlock()
	return b.take(now)
}

// bucket is a token bucket of requests. Safe for concurrent use.
type bucket struct {
	rate, burst float64

	mu     sync.Mutex
	tokens float64
	last   time.Time
}

func (b *bucket) take(now time.Time) (bool, time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if dt := now.Sub(b.last); dt > 0 {
		b.tokens = math.Min(b.burst, b.tokens+dt.Seconds()*b.rate)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / b.rate * float64(time.Second))
}

func (a *Auth) unauthorized(w http.ResponseWriter, r *http.Request, reason string, err error, challenge, msg string) {
	a.failures.WithLabelValues(reason).Inc()
	a.log.Debug("read refused: authentication", "reason", reason, "remote", r.RemoteAddr, slog.Any("err", err))
	w.Header().Set("WWW-Authenticate", challenge)
	writeError(w, http.StatusUnauthorized, msg)
}

// bearer returns the credentials of an "Authorization: Bearer <key>" header (the scheme is
// case-insensitive, RFC 9110).
func bearer(r *http.Request) (string, bool) {
	scheme, key, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	key = strings.TrimSpace(key)
	return key, key != ""
}
