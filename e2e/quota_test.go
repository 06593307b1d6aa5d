package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/maumeter/maumeter/pipeline/quota"
)

// TestQuotaWebhooks runs the counter with a quota webhook for t-auckland (100 devices included
// by its contract) and sends 150 of its devices: the receiver gets quota_80 and quota_100 once
// each, signed with the tenant's secret, after refusing each first attempt; a restarted counter
// (a new leader) sends neither again.
func TestQuotaWebhooks(t *testing.T) {
	p := startPipeline(t, "quota")
	const secret = "whsec-e2e"
	var mu sync.Mutex
	attempts := map[string]int{}
	var got []quota.Notice
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if !quota.Verify(secret, r.Header.Get("X-Maumeter-Signature"), body, time.Now(), 5*time.Minute) {
			t.Errorf("a webhook with a bad signature: %s", r.Header.Get("X-Maumeter-Signature"))
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var n quota.Notice
		if err := json.Unmarshal(body, &n); err != nil {
			t.Errorf("webhook body %s: %v", body, err)
		}
		mu.Lock()
		defer mu.Unlock()
		attempts[n.ID]++
		if attempts[n.ID] == 1 {
			w.WriteHeader(http.StatusServiceUnavailable) // the receiver is briefly down: retried
			return
		}
		got = append(got, n)
	}))
	defer rcv.Close()
	kinds := func() []string {
		mu.Lock()
		defer mu.Unlock()
		var out []string
		for _, n := range got {
			out = append(out, n.TenantID+" "+string(n.Kind))
		}
		slices.Sort(out)
		return out
	}

	// The counter learns the webhook from its catalogue and the secret from its environment.
	tenants := filepath.Join(t.TempDir(), "tenants.yaml")
	data, err := os.ReadFile(envValue(p.env, "MAUMETER_TENANTS"))
	if err != nil {
		t.Fatal(err)
	}
	cat := strings.Replace(string(data), "  - id: t-auckland\n", "  - id: t-auckland\n    quota_webhook: {url: "+rcv.URL+", secret_env: E2E_QUOTA_SECRET}\n", 1)
	if err := os.WriteFile(tenants, []byte(cat), 0o644); err != nil {
		t.Fatal(err)
	}
	p.counter.stop()
	p.counter.env = append(slices.Clone(p.counter.env), "E2E_QUOTA_SECRET="+secret, "MAUMETER_TENANTS="+tenants, "MAUMETER_QUOTA_INTERVAL=500ms")
	p.counter.start()
	waitHTTP(t, p.counter, p.countURL+"/healthz", 30*time.Second)

	now := clockNow()
	var batch []line
	for i := range 150 {
		batch = append(batch, line{tenant: "t-auckland", json: fmt.Sprintf(`{"tenant_id":"t-auckland","app_id":"nz-super","guid":"q%d","event":"search","ts":%q}`,
			i, now.Add(-time.Minute).UTC().Format(time.RFC3339Nano))})
	}
	if err := post(p.ingestURL+"/v1/events", p.keys["t-auckland"], batch); err != nil {
		t.Fatal(err)
	}
	want := []string{"t-auckland quota_100", "t-auckland quota_80"}
	deadline := time.Now().Add(2 * time.Minute)
	for !slices.Equal(kinds(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("webhooks %v, want %v:\n%s", kinds(), want, p.counter.tail())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// A new leader reads the topic first: nothing again.
	p.counter.stop()
	p.counter.start()
	waitHTTP(t, p.counter, p.countURL+"/healthz", 30*time.Second)
	time.Sleep(5 * time.Second) // ten looks, once the partitions are assigned
	if k := kinds(); !slices.Equal(k, want) {
		t.Errorf("after the counter restarted: webhooks %v, want %v", k, want)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, n := range got {
		if n.BillableMAU < n.Threshold || n.IncludedMAU != 100 || attempts[n.ID] != 2 {
			t.Errorf("notice %+v after %d attempts", n, attempts[n.ID])
		}
	}
	t.Logf("webhooks: %v", want)
}
