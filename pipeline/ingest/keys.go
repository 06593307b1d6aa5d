package ingest

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/maumeter/maumeter/pkg/tenant"
)

// bearer returns the credentials of an "Authorization: Bearer <key>" header.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, key, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	key = strings.TrimSpace(key)
	return key, key != ""
}

// SetKeyring replaces the ingest keys the handler accepts; requests in flight keep the keys they
// were authenticated with. Safe to call at any time.
func (h *Handler) SetKeyring(k *tenant.Keyring) { h.keys.Store(k) }

// WatchKeys reloads the ingest keys from the tenant catalogue at path whenever its content
// changes, checking every interval, until ctx ends. Only the keys are taken from the new file:
// tenants, apps and limits take effect at restart, when the counter sees them too (a counter
// drops events of tenants it does not know). A file that does not load is logged and the keys
// in force stay. Adding a key, moving SDKs to it and removing the old one is thus a rotation
// without a restart.
//
// opts are the catalogue's parse options (the plan ids the roles started with).
func (h *Handler) WatchKeys(ctx context.Context, path string, interval time.Duration, opts ...tenant.Option) {
	tenant.Watch(ctx, path, interval, func(c *tenant.Catalog, err error) {
		if err != nil {
			h.log.Error("reload ingest keys: catalogue unreadable or invalid, keeping the keys in force", "file", path, "err", err)
			h.reloads.WithLabelValues("error").Inc()
			return
		}
		h.SetKeyring(c.Keyring())
		h.reloads.WithLabelValues("ok").Inc()
		h.log.Info("ingest keys reloaded", "file", path, "keys", c.Keyring().Len())
	}, opts...)
}

// authFailure names a refused credential in metrics and logs.
func (h *Handler) authFailure(w http.ResponseWriter, r *http.Request, reason string, err error) {
	h.authFailures.WithLabelValues(reason).Inc()
	h.log.Debug("ingest request refused: authentication", "reason", reason, "remote", r.RemoteAddr, slog.Any("err", err))
	w.Header().Set("WWW-Authenticate", `Bearer realm="maumeter ingest"`)
	shed(w)
	h.fail(w, http.StatusUnauthorized, "a valid ingest key is required: Authorization: Bearer <key>")
}
