package ingest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"log/slog"
	"net/http"
	"os"
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
func (h *Handler) WatchKeys(ctx context.Context, path string, interval time.Duration) {
	// The first check applies the file as it is then, which may be newer than what the handler
	// started with.
	var last [sha256.Size]byte
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		data, err := os.ReadFile(path)
		if err != nil {
			h.log.Warn("reload ingest keys: keeping the keys in force", "file", path, "err", err)
			continue
		}
		sum := sha256.Sum256(data)
		if bytes.Equal(sum[:], last[:]) {
			continue
		}
		last = sum
		c, err := tenant.Parse(path, data)
		if err != nil {
			h.log.Error("reload ingest keys: catalogue invalid, keeping the keys in force", "err", err)
			h.reloads.WithLabelValues("error").Inc()
			continue
		}
		h.SetKeyring(c.Keyring())
		h.reloads.WithLabelValues("ok").Inc()
		h.log.Info("ingest keys reloaded", "file", path, "keys", c.Keyring().Len())
	}
}

// authFailure names a refused credential in metrics and logs.
func (h *Handler) authFailure(w http.ResponseWriter, r *http.Request, reason string, err error) {
	h.authFailures.WithLabelValues(reason).Inc()
	h.log.Debug("ingest request refused: authentication", "reason", reason, "remote", r.RemoteAddr, slog.Any("err", err))
	w.Header().Set("WWW-Authenticate", `Bearer realm="maumeter ingest"`)
	h.fail(w, http.StatusUnauthorized, "a valid ingest key is required: Authorization: Bearer <key>")
}
