package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
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
type Auth struct {
	keys     atomic.Pointer[tenant.ReadKeyring]
	failures *prometheus.CounterVec
	reloads  *prometheus.CounterVec
	log      *slog.Logger
}

// NewAuth returns the guard of the read endpoints with keys (Catalog.ReadKeyring; nil: no key,
// every read is refused) and registers its metrics with reg.
func NewAuth(keys *tenant.ReadKeyring, log *slog.Logger, reg prometheus.Registerer) (*Auth, error) {
	a := newAuth(keys, log)
	for _, c := range []prometheus.Collector{a.failures, a.reloads} {
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
	if !k.MayRead(tenantID) {
		a.failures.WithLabelValues("other_tenant").Inc()
		a.log.Info("read refused: key of another tenant", "key", k.ID, "key_tenant", k.Tenant(), "remote", r.RemoteAddr)
		w.Header().Set("WWW-Authenticate", realm+`, error="insufficient_scope"`)
		writeError(w, http.StatusForbidden, fmt.Sprintf("read key %s reads tenant %s only", k.ID, k.Tenant()))
		return false
	}
	return true
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
