package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

// TestImport backfills an NDJSON file of historical events with bad lines through the same
// topic and counter: the bad lines are reported with their line numbers and reasons, the rest
// are counted exactly.
func TestImport(t *testing.T) {
	p := startPipeline(t, "import")
	rng := rand.New(rand.NewPCG(7, 7))
	tr := &traffic{truth: map[string]map[string]map[string]bool{}}
	var lines []string
	badAt := map[int]string{} // 1-based line number → reason
	now := clockNow()
	// Four months back: far outside the ingest window, so only import may carry these.
	from := time.Date(now.Year(), now.Month()-4, 1, 0, 0, 0, 0, time.UTC)
	to := from.AddDate(0, 2, 0)
	for tenant, tenantApps := range apps {
		loc, _ := time.LoadLocation(zones[tenant])
		for d := range 3000 {
			app := tenantApps[d%len(tenantApps)]
			guid := fmt.Sprintf("imp-%s-%d", tenant, d)
			for range 1 + rng.IntN(2) {
				ts := from.Add(time.Duration(rng.Int64N(int64(to.Sub(from)))))
				lines = append(lines, fmt.Sprintf(`{"tenant_id":%q,"app_id":%q,"guid":%q,"event":"search","ts":%q}`,
					tenant, app, guid, ts.In(loc).Format(time.RFC3339)))
				tr.add(tenant, app, guid, ts)
			}
		}
	}
	rng.Shuffle(len(lines), func(i, j int) { lines[i], lines[j] = lines[j], lines[i] })
	bad := []struct{ line, reason string }{
		{`{"tenant_id":"t-newyork","app_id":"ny-super","guid":"x","event":"launch","ts":"` + from.Format(time.RFC3339) + `"}`, "bad_event_type"},
		{`not json at all`, "bad_json"},
		{`{"tenant_id":"t-newyork","app_id":"nz-super","guid":"x","event":"search","ts":"` + from.Format(time.RFC3339) + `"}`, "unknown_app"},
		{`{"tenant_id":"t-newyork","app_id":"ny-super","guid":"x","event":"search","ts":"` + now.Add(time.Hour).Format(time.RFC3339) + `"}`, "ts_in_future"},
	}
	for i, b := range bad {
		at := (i + 1) * len(lines) / (len(bad) + 1)
		lines = append(lines[:at], append([]string{b.line}, lines[at:]...)...)
	}
	for i, l := range lines {
		for _, b := range bad {
			if l == b.line {
				badAt[i+1] = b.reason
			}
		}
	}
	file := filepath.Join(t.TempDir(), "backfill.ndjson")
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "import", "--file", file)
	cmd.Env = append(os.Environ(), p.env...)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 3 {
		t.Fatalf("import: %v (want exit status 3 for rejected lines)\n%s", err, out)
	}
	for n, reason := range badAt {
		if want := fmt.Sprintf("%s:%d: %s", file, n, reason); !strings.Contains(string(out), want) {
			t.Errorf("import output lacks %q:\n%s", want, out)
		}
	}
	if want := fmt.Sprintf("imported %d events, rejected %d lines", len(lines)-len(bad), len(bad)); !strings.Contains(string(out), want) {
		t.Errorf("import output lacks %q:\n%s", want, out)
	}
	p.waitCounted(t, 2*time.Minute)
	p.check(t, tr)

	// Every imported month whose close time has passed was closed once, after the whole
	// import: version 1 carries the exact truth.
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{clickhouseA}, Auth: clickhouse.Auth{Database: p.database}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for tenant, months := range tr.truth {
		loc, _ := time.LoadLocation(zones[tenant])
		for month, set := range months {
			m, _ := time.ParseInLocation("2006-01", month, loc)
			if now.Before(m.AddDate(0, 1, 0).Add(48 * time.Hour)) {
				continue
			}
			var versions, mau uint64
			err := conn.QueryRow(context.Background(), `SELECT count(), max(mau) FROM mau_rollups FINAL WHERE tenant_id = ? AND month = ?`,
				tenant, month).Scan(&versions, &mau)
			if err != nil {
				t.Fatal(err)
			}
			if versions != 1 || mau != uint64(len(set)) {
				t.Errorf("%s %s: %d rollup versions with MAU %d, want 1 with %d", tenant, month, versions, mau, len(set))
			}
			if want := fmt.Sprintf("%s %s: close, rollup version 1, MAU %d", tenant, month, len(set)); !strings.Contains(string(out), want) {
				t.Errorf("import output lacks %q", want)
			}
		}
	}
}
