package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/maumeter/maumeter/pkg/tenant"
)

// A plan catalogue with a plan the embedded one lacks, and a tenant catalogue that buys it.
const (
	customPlans = `validity:
  anniversary_included: true
  leap_day_anniversary: feb28
plans:
  - {id: starter, name: Starter, official: true, super_apps: 1, testing_super_apps: 1, mini_programs_created: 10,
     mini_programs_released: 5, included_mau: 1000, hard_cap: false, pay_as_you_go: true, unit_price_usd: "0.02"}
`
	customTenants = `tenants:
  - id: acme
    plan: starter
    purchased: 2026-01-01
    apps: [acme-super]
`
)

// TestCommandsTakePlans runs every command that reads the tenant catalogue on one that buys a
// plan only a custom plan catalogue holds: without --plans each refuses the tenant catalogue
// (the embedded plans lack "starter"); with --plans each gets past it to its own work.
func TestCommandsTakePlans(t *testing.T) {
	dir := t.TempDir()
	plans := filepath.Join(dir, "plans.yaml")
	tenants := filepath.Join(dir, "tenants.yaml")
	events := filepath.Join(dir, "events.ndjson")
	for path, data := range map[string]string{plans: customPlans, tenants: customTenants, events: "\n"} {
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Whatever the environment (the service scripts export brokers), close and import find none.
	t.Setenv("MAUMETER_KAFKA_BROKERS", "")
	t.Setenv("MAUMETER_PLANS", "")

	// An ingest endpoint that accepts every event of a batch, so loadgen has somewhere to send.
	var received atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		n := bytes.Count(bytes.TrimSpace(body), []byte("\n")) + 1
		received.Add(int64(n))
		_ = json.NewEncoder(w).Encode(map[string]any{"accepted": n, "rejected": []any{}})
	}))
	defer srv.Close()

	type runFunc = func(context.Context, func() time.Time, []string, io.Writer, io.Writer) error
	for _, tc := range []struct {
		name string
		run  runFunc
		args []string
		// check judges the outcome with --plans: the command went past the catalogue.
		check func(t *testing.T, err error, stdout string)
	}{
		{"close", runClose, []string{"--month", "2026-10"}, func(t *testing.T, err error, _ string) {
			if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "--kafka-brokers") {
				t.Errorf("close: %v, want the --kafka-brokers usage error that follows the catalogue", err)
			}
		}},
		{"import", runImport, []string{"--file", events}, func(t *testing.T, err error, _ string) {
			if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "--kafka-brokers") {
				t.Errorf("import: %v, want the --kafka-brokers usage error that follows the catalogue", err)
			}
		}},
		{"loadgen", runLoadgen, []string{"--url", srv.URL, "--devices", "3", "--days", "1", "--ingest-keys", "acme=mmk_x"}, func(t *testing.T, err error, stdout string) {
			if err != nil || received.Load() == 0 || !strings.HasPrefix(stdout, "sent ") {
				t.Errorf("loadgen: err %v, %d events received, stdout %q; want events sent for acme", err, received.Load(), stdout)
			}
		}},
		{"loadgen --returning", runLoadgen, []string{"--url", srv.URL, "--devices", "30", "--days", "3", "--returning", "typical", "--ingest-keys", "acme=mmk_x"}, func(t *testing.T, err error, stdout string) {
			if err != nil || !strings.HasPrefix(stdout, "sent ") {
				t.Errorf("loadgen --returning: err %v, stdout %q; want events sent for acme", err, stdout)
			}
		}},
		{"keys list", runKeys, []string{"list"}, func(t *testing.T, err error, stdout string) {
			if err != nil || !strings.HasPrefix(stdout, "KIND") {
				t.Errorf("keys list: err %v, stdout %q; want the (empty) key table", err, stdout)
			}
		}},
		{"keys new", runKeys, []string{"new", "--tenant", "acme"}, func(t *testing.T, err error, stdout string) {
			if err != nil || !strings.Contains(stdout, "\nmmk_") {
				t.Errorf("keys new: err %v, stdout %q; want an ingest key of acme", err, stdout)
			}
		}},
		{"keys check", runKeys, []string{"check", "--key", "mmk_0123456789abcdef_nothing"}, func(t *testing.T, err error, _ string) {
			var ec exitCode
			if !errors.As(err, &ec) || !strings.Contains(ec.msg, "not a key of") {
				t.Errorf("keys check: %v, want the catalogue read and the key not found in it", err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := func() time.Time { return time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC) }
			call := func(extra ...string) (string, string, error) {
				var stdout, stderr bytes.Buffer
				args := append(append([]string{}, tc.args...), append([]string{"--tenants", tenants}, extra...)...)
				err := tc.run(context.Background(), now, args, &stdout, &stderr)
				return stdout.String(), stderr.String(), err
			}
			_, _, err := call()
			if !errors.Is(err, tenant.ErrInvalid) || !strings.Contains(err.Error(), "starter") {
				t.Errorf("without --plans: %v, want the tenant catalogue refused for plan \"starter\"", err)
			}
			stdout, stderr, err := call("--plans", plans)
			if errors.Is(err, tenant.ErrInvalid) {
				t.Fatalf("with --plans %s: the tenant catalogue is still refused: %v\n%s", plans, err, stderr)
			}
			tc.check(t, err, stdout)
		})
	}
}
