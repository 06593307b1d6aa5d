package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
)

// TestReadyReportOnly: a failing check makes /readyz 503 and names it under failed; a
// report-only check is listed under reported and leaves it 200. Both lists go to an operator
// key only; anyone else gets the same status without them.
func TestReadyReportOnly(t *testing.T) {
	bad := func(context.Context) error { return errors.New("no progress for 2m0s") }
	parked := func(context.Context) error { return errors.New("7 parked events wait") }
	ok := func(context.Context) error { return nil }
	f := func(name string, checks []Check, code int, failed, reported map[string]string) {
		t.Helper()
		cat, keys := testCatalog(t)
		h := New(Config{Catalog: cat, Auth: newAuth(cat.ReadKeyring(), nil), Ready: checks, Now: fixedNow})
		if anon := get(h, "/readyz", ""); anon.Code != code || strings.Contains(anon.Body.String(), "parked") {
			t.Errorf("%s: without a key: %d %s, want %d and no details", name, anon.Code, anon.Body, code)
		}
		rec := get(h, "/readyz", "Bearer "+keys.operator)
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
