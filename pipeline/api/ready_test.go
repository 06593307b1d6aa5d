package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestReadyReportOnly: a failing check makes /readyz 503 and names it under failed; a
// report-only check is listed under reported and leaves it 200.
func TestReadyReportOnly(t *testing.T) {
	bad := func(context.Context) error { return errors.New("no progress for 2m0s") }
	parked := func(context.Context) error { return errors.New("7 parked events wait") }
	ok := func(context.Context) error { return nil }
	f := func(name string, checks []Check, code int, failed, reported map[string]string) {
		t.Helper()
		h := New(Config{Gatherer: prometheus.NewRegistry(), Ready: checks, Now: fixedNow})
		rec := get(h, "/readyz", "")
		var body struct {
			Status   string            `json:"status"`
			Failed   map[string]string `json:"failed"`
			Reported map[string]string `json:"reported"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatalf("%s: %v: %s", name, err, rec.Body)
		}
		if rec.Code != code || len(body.Failed) != len(failed) || len(body.Reported) != len(reported) {
			t.Fatalf("%s: %d %s, want %d failed %v reported %v", name, rec.Code, rec.Body, code, failed, reported)
		}
		for k, v := range failed {
			if body.Failed[k] != v {
				t.Errorf("%s: failed[%s] = %q, want %q", name, k, body.Failed[k], v)
			}
		}
		for k, v := range reported {
			if body.Reported[k] != v {
				t.Errorf("%s: reported[%s] = %q, want %q", name, k, body.Reported[k], v)
			}
		}
	}
	f("all well", []Check{{Name: "counter", Fn: ok}, {Name: "parked", Fn: ok, ReportOnly: true}}, http.StatusOK, nil, nil)
	f("parked only", []Check{{Name: "counter", Fn: ok}, {Name: "parked", Fn: parked, ReportOnly: true}}, http.StatusOK,
		nil, map[string]string{"parked": "7 parked events wait"})
	f("stalled and parked", []Check{{Name: "counter", Fn: bad}, {Name: "parked", Fn: parked, ReportOnly: true}}, http.StatusServiceUnavailable,
		map[string]string{"counter": "no progress for 2m0s"}, map[string]string{"parked": "7 parked events wait"})
}
