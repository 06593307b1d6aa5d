package ingest

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/maumeter/maumeter/pkg/event"
)

// FuzzHandler sends arbitrary bodies with each of the test catalogue's keys (or a bad one) and
// checks the gateway's invariants: a known status and a JSON answer; 401 exactly for a bad key;
// 429 only for the rate-limited tenant;
// nothing produced unless 200; on 200 every event is either accepted or rejected once, by
// index, and what was produced belongs to the key's tenant and apps and survives the wire.
func FuzzHandler(f *testing.F) {
	h, rec, keys, _ := recordingHandler(f, Config{MaxEvents: 50, MaxBodyBytes: 32 << 10}, nil)
	type credential struct {
		key    string
		tenant string
		apps   map[string]bool // nil: all of the tenant's
	}
	creds := []credential{
		{keys.acme, "acme", nil},
		{keys.acmeQA, "acme", map[string]bool{"acme-qa": true}},
		{keys.globex, "globex", nil},
		{keys.initech, "initech", nil},
		{"mmk_0000000000000000_" + strings.Repeat("A", 43), "", nil},
	}
	for _, s := range []string{
		ev("acme", "acme-super", "d1") + "\n" + ev("globex", "globex-app", "d2"),
		"[" + ev("acme", "acme-qa", "d1") + "," + ev("acme", "acme-lite", "d2") + "]",
		ev("initech", "initech-poc", "p") + "\n\n" + `{"tenant_id":"initech"`,
		`[1,"x",null]`, "", "\n", "[", `{"tenant_id":"acme","tenant_id":"globex","app_id":"globex-app","guid":"g","event":"search","ts":"2026-11-10T11:00:00Z"}`,
	} {
		for c := range creds {
			f.Add([]byte(s), uint8(c), c%2 == 0)
		}
	}
	f.Fuzz(func(t *testing.T, body []byte, credIdx uint8, gzipped bool) {
		cred := creds[int(credIdx)%len(creds)]
		rec.mu.Lock()
		rec.events = nil
		rec.mu.Unlock()
		wire := body
		var header []string
		if gzipped {
			wire = gz(body)
			header = []string{"Content-Encoding", "gzip"}
		}
		r := post(h, cred.key, wire, header...)
		produced := rec.events
		var answer map[string]any
		if err := json.Unmarshal(r.Body.Bytes(), &answer); err != nil {
			t.Fatalf("answer %d %q is not JSON: %v", r.Code, r.Body, err)
		}
		if (r.Code == http.StatusUnauthorized) != (cred.tenant == "") {
			t.Fatalf("key of %q: status %d", cred.tenant, r.Code)
		}
		switch r.Code {
		case http.StatusOK:
		case http.StatusTooManyRequests:
			if cred.tenant != "initech" { // the only tenant with a limit: 1000 events/s on a stopped clock
				t.Fatalf("429 for %s: %s", cred.tenant, r.Body)
			}
			fallthrough
		case http.StatusUnauthorized, http.StatusBadRequest, http.StatusRequestEntityTooLarge:
			if len(produced) > 0 {
				t.Fatalf("status %d but %d events produced", r.Code, len(produced))
			}
			return
		default:
			t.Fatalf("status %d %s", r.Code, r.Body)
		}
		raws, err := event.SplitBatch(body, 50)
		if err != nil {
			t.Fatalf("200 for a body SplitBatch refuses: %v", err)
		}
		resp := decodeResponse(t, r)
		if resp.Accepted+len(resp.Rejected) != len(raws) || resp.Accepted != len(produced) {
			t.Fatalf("%d events: accepted %d, rejected %d, produced %d", len(raws), resp.Accepted, len(resp.Rejected), len(produced))
		}
		last := -1
		for _, rj := range resp.Rejected {
			if rj.Index <= last || rj.Index >= len(raws) || rj.Reason == "" || rj.Message == "" {
				t.Fatalf("rejections %+v", resp.Rejected)
			}
			last = rj.Index
		}
		for _, e := range produced {
			if e.TenantID != cred.tenant || cred.apps != nil && !cred.apps[e.AppID] {
				t.Fatalf("key of %s %v produced an event of %s/%s", cred.tenant, cred.apps, e.TenantID, e.AppID)
			}
			tn, _ := h.catalog.Tenant(e.TenantID)
			if known, _ := tn.App(e.AppID); !known {
				t.Fatalf("produced an event of unknown app %s/%s", e.TenantID, e.AppID)
			}
			b, err := e.AppendBinary(nil)
			if err != nil {
				t.Fatal(err)
			}
			if d, err := event.Decode(b); err != nil || d.Key() != e.Key() || !d.TS.Equal(e.TS) {
				t.Fatalf("produced %+v does not survive the wire: %+v %v", e, d, err)
			}
		}
	})
}
