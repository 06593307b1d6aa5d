package loadgen

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/maumeter/maumeter/pkg/population"
)

// TestReturning: with Config.Returning the generated month's first sightings thin out as a
// returning population's do (the shape the projection is backtested on), the truth counts
// what was sent, and the same seed sends the same traffic.
func TestReturning(t *testing.T) {
	from := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	run := func() (Stats, []int) {
		var mu sync.Mutex
		first := map[string]time.Time{}
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n := 0
			sc := bufio.NewScanner(r.Body)
			for sc.Scan() {
				var e wireEvent
				if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				ts, _ := time.Parse(time.RFC3339Nano, e.TS)
				mu.Lock()
				if f, ok := first[e.AppID+"/"+e.GUID]; !ok || ts.Before(f) {
					first[e.AppID+"/"+e.GUID] = ts
				}
				mu.Unlock()
				n++
			}
			_ = json.NewEncoder(w).Encode(map[string]any{"accepted": n, "rejected": []any{}})
		}))
		defer srv.Close()
		st, err := Run(context.Background(), Config{URL: srv.URL, Keys: map[string]string{"acme": "k"},
			Tenants:   []Tenant{{ID: "acme", Apps: []string{"a", "b"}, Location: time.UTC, Devices: 6000}},
			EventsPer: 2, From: from, To: from.Add(28 * 24 * time.Hour), Seed: 42, Returning: population.Typical}, srv.Client())
		if err != nil {
			t.Fatal(err)
		}
		byDay := make([]int, 28)
		for _, ts := range first {
			byDay[int(ts.Sub(from)/(24*time.Hour))]++
		}
		return st, byDay
	}
	st, byDay := run()
	if n := byDay; !(n[0] > 2*n[1] && n[1] > n[6] && n[6] > n[27]) {
		t.Errorf("first sightings per day %v, want them thinning out", n)
	}
	total := 0
	for _, n := range byDay {
		total += n
	}
	if st.Truth["acme"]["2026-03"] != total || total < 4000 || total > 6500 {
		t.Errorf("truth %v, %d devices received: want equal, about 3/4 of the 6,000 plus installs", st.Truth, total)
	}
	if st2, _ := run(); st2.Events != st.Events || st2.Truth["acme"]["2026-03"] != total {
		t.Errorf("same seed: %d events, then %d", st.Events, st2.Events)
	}
}
