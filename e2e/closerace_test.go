package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/segmentio/kafka-go"
	"github.com/shopspring/decimal"

	"github.com/maumeter/maumeter/pipeline/bus"
	"github.com/maumeter/maumeter/pipeline/chstore"
)

// TestCloseRace: the month of a tenant is closed and restated by everything that may close it
// at once, for 30 rounds, each round backfilling new late devices: the counter's automatic
// closer (a 1 ms grace, checking every 250 ms), an `import` of the round's file (which closes
// the months it touched) and two `maumeter close --month` runs, all separate processes, with a
// rater running. Then: versions 1..N strictly increasing, one writer and one content per
// version in ClickHouse, on the rollups topic and in the invoices; the final rollup equals
// uniqExact and the truth; the month's invoices add up to the final amount. Last, duplicate and
// late copies of the billed devices and OPTIMIZE … FINAL change no invoice's mau_sql, and
// `maumeter audit` still passes.
func TestCloseRace(t *testing.T) {
	p := startPipeline(t, "race")
	env := p.env
	p.counter.stop()
	countAddr := freeAddr(t)
	p.countURL = "http://" + countAddr
	p.counter = startProc(t, "count", env, "count", "--http-addr", countAddr, "--close-grace", "1ms", "--close-interval", "250ms")
	waitHTTP(t, p.counter, p.countURL+"/healthz", 30*time.Second)
	rateAddr := freeAddr(t)
	rater := startProc(t, "rate", env, "rate", "--http-addr", rateAddr)
	waitHTTP(t, rater, "http://"+rateAddr+"/healthz", 30*time.Second)

	const tenant, app = "t-auckland", "nz-super"
	loc, _ := time.LoadLocation(zones[tenant])
	now := clockNow().In(loc)
	start := time.Date(now.Year(), now.Month()-1, 1, 0, 0, 0, 0, loc) // last month, over in the tenant's zone
	month := start.Format("2006-01")
	span := start.AddDate(0, 1, 0).Sub(start)
	truth := map[string]bool{}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	for round := range 30 {
		var lines []string
		for i := range 3 + round%4 {
			guid := fmt.Sprintf("race-%d-%d", round, i)
			ts := start.Add(span * time.Duration(round*7+i) / 300)
			lines = append(lines, fmt.Sprintf(`{"tenant_id":%q,"app_id":%q,"guid":%q,"event":"open","mini_program_id":"mp-1","ts":%q}`,
				tenant, app, guid, ts.Format(time.RFC3339)))
			truth[guid] = true
		}
		if round > 0 { // a device of an earlier round again: no new MAU
			lines = append(lines, strings.Replace(lines[0], fmt.Sprintf("race-%d-", round), fmt.Sprintf("race-%d-", round-1), 1))
		}
		file := filepath.Join(dir, fmt.Sprintf("round%d.ndjson", round))
		if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for _, args := range [][]string{
			{"import", "--file", file, "--close-grace", "1ms"},
			{"close", "--month", month, "--tenant", tenant, "--close-grace", "1ms", "--timeout", "2m"},
			{"close", "--month", month, "--tenant", tenant, "--close-grace", "1ms", "--timeout", "2m"},
		} {
			wg.Go(func() {
				cmd := exec.CommandContext(ctx, binary, args...)
				cmd.Env = append(os.Environ(), env...)
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Errorf("round %d: maumeter %s: %v\n%s", round, strings.Join(args, " "), err, out)
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
	}
	p.waitCounted(t, 2*time.Minute)
	runOnce(t, ctx, env, "close", "--month", month, "--tenant", tenant, "--close-grace", "1ms")

	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{clickhouseA}, Auth: clickhouse.Auth{Database: p.database}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// ClickHouse, raw rows: one row and one writer per version, versions 1..N, MAU never down.
	rows, err := conn.Query(ctx, `SELECT version, count(), groupUniqArray(writer), any(mau) FROM mau_rollups
		WHERE tenant_id = ? AND month = ? GROUP BY version ORDER BY version`, tenant, month)
	if err != nil {
		t.Fatal(err)
	}
	writers, mau := map[uint32]string{}, map[uint32]uint64{}
	var last uint32
	for rows.Next() {
		var v uint32
		var n, m uint64
		var ws []string
		if err := rows.Scan(&v, &n, &ws, &m); err != nil {
			t.Fatal(err)
		}
		if v != last+1 || n != 1 || len(ws) != 1 || m < mau[last] {
			t.Errorf("version %d after %d: %d rows, writers %v, MAU %d after %d", v, last, n, ws, m, mau[last])
		}
		writers[v], mau[v], last = ws[0], m, v
	}
	rows.Close()
	var exact uint64
	if err := conn.QueryRow(ctx, `SELECT uniqExact(device_key) FROM mau_devices WHERE tenant_id = ? AND month = ?`, tenant, month).Scan(&exact); err != nil {
		t.Fatal(err)
	}
	if last < 30 || mau[last] != exact || exact != uint64(len(truth)) {
		t.Fatalf("%d versions, the last with MAU %d; uniqExact %d; truth %d", last, mau[last], exact, len(truth))
	}
	t.Logf("30 rounds: %d versions, final MAU %d", last, mau[last])

	// The rollups topic: every message of a version is the stored one.
	topic := envValue(env, "MAUMETER_ROLLUPS_TOPIC")
	end, err := bus.EndOffsets(ctx, bus.Plain([]string{brokers}), topic)
	if err != nil {
		t.Fatal(err)
	}
	onTopic := map[uint32]bool{}
	for part, n := range end {
		rd := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{brokers}, Topic: topic, Partition: part, MaxWait: 100 * time.Millisecond})
		for range n {
			m, err := rd.ReadMessage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var ro chstore.Rollup
			if err := json.Unmarshal(m.Value, &ro); err != nil {
				t.Fatal(err)
			}
			if ro.TenantID == tenant && ro.Month == month {
				onTopic[ro.Version] = true
				if ro.Writer != writers[ro.Version] || ro.MAU != mau[ro.Version] {
					t.Errorf("topic: v%d by %s MAU %d; stored: by %s MAU %d", ro.Version, ro.Writer, ro.MAU, writers[ro.Version], mau[ro.Version])
				}
			}
		}
		rd.Close()
	}
	if len(onTopic) != int(last) {
		t.Errorf("the topic carries %d of %d versions", len(onTopic), last)
	}

	// The invoices: one per version, each of its version's MAU, adding up to the final amount.
	var invs []invoiceRow
	for deadline := time.Now().Add(time.Minute); ; {
		invs = invoiceRows(t, conn, tenant, month)
		if len(invs) == int(last) || time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if len(invs) != int(last) {
		t.Fatalf("%d invoices for %d versions", len(invs), last)
	}
	billed := decimal.Zero
	for _, inv := range invs {
		if inv.totalMAU != mau[inv.version] || inv.rows != 1 {
			t.Errorf("invoice v%d: %d rows, total MAU %d; its rollup %d", inv.version, inv.rows, inv.totalMAU, mau[inv.version])
		}
		billed = billed.Add(inv.charge)
	}
	if final := invs[len(invs)-1]; !billed.Equal(final.amount) {
		t.Errorf("the month's invoices charge %s in total; the final version's amount is %s", billed, final.amount)
	}
	if billed.IsZero() {
		t.Error("the month charges nothing: the test's tenant must pay overage for the sum to mean anything")
	}

	// Merges cannot change the evidence: copies of every billed device, at the same offset (a
	// retried insert) and far beyond the watermark (a zombie, a rebuild racing a close), then a
	// forced merge. The counter is stopped first, so that no restatement follows the copies.
	p.counter.stop()
	for _, q := range []string{
		`INSERT INTO mau_devices (tenant_id, month, app_id, device_key, guid, first_seen_at, first_event, mini_program_id, kafka_partition, kafka_offset)
			SELECT tenant_id, month, app_id, device_key, guid, first_seen_at, first_event, mini_program_id, kafka_partition, kafka_offset FROM mau_devices`,
		`INSERT INTO mau_devices (tenant_id, month, app_id, device_key, guid, first_seen_at, first_event, mini_program_id, kafka_partition, kafka_offset)
			SELECT tenant_id, month, app_id, device_key, guid, first_seen_at + 1, first_event, mini_program_id, kafka_partition, kafka_offset + 1000000000 FROM mau_devices`,
		`OPTIMIZE TABLE mau_devices FINAL`,
	} {
		if err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	var folded uint64
	if err := conn.QueryRow(ctx, `SELECT count() FROM mau_devices WHERE tenant_id = ? AND month = ?`, tenant, month).Scan(&folded); err != nil || folded != exact {
		t.Errorf("after the copies and OPTIMIZE FINAL: %d rows (%v), want %d", folded, err, exact)
	}
	for _, inv := range invs {
		var n uint64
		if err := conn.QueryRow(ctx, inv.mauSQL).Scan(&n); err != nil || n != inv.mau {
			t.Errorf("invoice v%d: mau_sql counts %d (%v), invoice MAU %d:\n%s", inv.version, n, err, inv.mau, inv.mauSQL)
		}
	}
	for _, v := range []string{"1", fmt.Sprint(last / 2), "0"} {
		runOnce(t, ctx, env, "audit", "--tenant", tenant, "--month", month, "--version", v, "--out", filepath.Join(dir, "audit"+v+".csv"))
	}
}

type invoiceRow struct {
	version       uint32
	rows          uint64
	mau, totalMAU uint64
	amount        decimal.Decimal
	charge        decimal.Decimal // what the invoice adds to the month's bills (billing order)
	mauSQL        string
}

func invoiceRows(t *testing.T, conn clickhouse.Conn, tenant, month string) []invoiceRow {
	t.Helper()
	rows, err := conn.Query(context.Background(), `SELECT rollup_version, count(), any(mau), any(total_mau), any(amount_usd),
		any(charge_usd), any(mau_sql) FROM invoices WHERE tenant_id = ? AND month = ? GROUP BY rollup_version ORDER BY rollup_version`, tenant, month)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []invoiceRow
	for rows.Next() {
		var r invoiceRow
		if err := rows.Scan(&r.version, &r.rows, &r.mau, &r.totalMAU, &r.amount, &r.charge, &r.mauSQL); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func envValue(env []string, name string) string {
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, name+"="); ok {
			return v
		}
	}
	return ""
}
