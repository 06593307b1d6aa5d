package e2e

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

// statement is what the billing process reads (maumeter rate --format json, the invoices API).
type statement struct {
	TenantID      string            `json:"tenant_id"`
	Month         string            `json:"month"`
	InvoiceID     string            `json:"invoice_id"`
	RollupVersion uint32            `json:"rollup_version"`
	Plan          string            `json:"plan"`
	MAU           uint64            `json:"mau"`
	TestingMAU    uint64            `json:"testing_mau"`
	MAUByApp      map[string]uint64 `json:"mau_by_app"`
	IncludedMAU   uint64            `json:"included_mau"`
	OverageMAU    uint64            `json:"overage_mau"`
	UnitPriceUSD  string            `json:"unit_price_usd"`
	AmountUSD     string            `json:"amount_usd"`
	Flags         []string          `json:"flags"`
	Entitlements  struct {
		ProductionApps int      `json:"production_apps"`
		TestingApps    int      `json:"testing_apps"`
		MiniPrograms   int      `json:"mini_programs"`
		Flags          []string `json:"flags"`
	} `json:"entitlements"`
	Adjustments []adjustment `json:"adjustments"`
	Bill        struct {
		Status      string       `json:"status"`
		RunSeq      uint32       `json:"run_seq"`
		MonthUSD    string       `json:"month_usd"`
		TotalUSD    string       `json:"total_usd"`
		Adjustments []adjustment `json:"adjustments"`
	} `json:"bill"`
	Evidence struct {
		MAUSQL    string `json:"mau_sql"`
		HLLAgrees bool   `json:"hll_agrees"`
		RatedAt   string `json:"rated_at"`
	} `json:"evidence"`
}

type adjustment struct {
	InvoiceID             string `json:"invoice_id"`
	RollupVersion         uint32 `json:"rollup_version"`
	BillingSeq            uint32 `json:"billing_seq"`
	PreviousInvoiceID     string `json:"previous_invoice_id"`
	PreviousRollupVersion uint32 `json:"previous_rollup_version"`
	BilledBeforeUSD       string `json:"billed_before_usd"`
	AmountUSD             string `json:"amount_usd"`
	Cents                 int64  `json:"cents"`
	Status                string `json:"status"`
	PostedOn              string `json:"posted_on"`
}

// devices are n devices [from, from+n) of one app of a tenant.
type devices struct {
	tenant, app string
	from, n     int
}

// importEvents writes an event for each device in month (their ts spread over its first days,
// in the tenant's zone) to an NDJSON file and imports it, which closes the month (or restates
// it) once consumed.
func importEvents(t *testing.T, p *pipeline, month time.Time, sets ...devices) {
	t.Helper()
	var b strings.Builder
	for _, set := range sets {
		loc, _ := time.LoadLocation(zones[set.tenant])
		start := time.Date(month.Year(), month.Month(), 1, 0, 0, 0, 0, loc)
		for d := set.from; d < set.from+set.n; d++ {
			ts := start.Add(time.Duration(d%(24*20)) * time.Hour)
			fmt.Fprintf(&b, `{"tenant_id":%q,"app_id":%q,"guid":"bill-%d","event":"open","mini_program_id":"mp-%d","ts":%q}`+"\n",
				set.tenant, set.app, d, d%7, ts.Format(time.RFC3339))
		}
	}
	file := filepath.Join(t.TempDir(), "events.ndjson")
	if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	t.Logf("import:\n%s", runOnce(t, ctx, p.env, "import", "--file", file))
}

// statementOf asks the rater's API, with key (the tenant's read key or an operator key), for
// a tenant's statement of month until one with at least version exists.
func statementOf(t *testing.T, url, key, tenant, month string, version uint32) statement {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		var body struct {
			Statements []statement `json:"statements"`
		}
		code, err := getJSON(fmt.Sprintf("%s/v1/tenants/%s/invoices?month=%s", url, tenant, month), key, &body)
		if err == nil && code == http.StatusOK && len(body.Statements) == 1 && body.Statements[0].RollupVersion >= version {
			return body.Statements[0]
		}
		last = fmt.Sprintf("%d: %d statements %+v, %v", code, len(body.Statements), body.Statements, err)
		if code == http.StatusUnauthorized || code == http.StatusForbidden {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("no statement v%d for %s %s within 60s: %s", version, tenant, month, last)
	return statement{}
}

// TestBilling runs the whole billing path on the real services with the built binary as
// separate processes: events → counter → close → mau.rollups.v1 → rater → invoices. A late
// device restates the month and yields an adjustment linked to both versions; a second rater
// that reads the whole rollups topic again changes nothing; the audit export has exactly the
// invoice's MAU devices, and the invoice's SQL reproduces it; the billing run posts the bills once.
func TestBilling(t *testing.T) {
	p := startPipeline(t, "billing")
	rateAddr := freeAddr(t)
	rater := startProc(t, "rate", p.env, "rate", "--http-addr", rateAddr)
	waitHTTP(t, rater, "http://"+rateAddr+"/healthz", 30*time.Second)

	now := clockNow()
	month := time.Date(now.Year(), now.Month()-2, 1, 0, 0, 0, 0, time.UTC)
	m := month.Format("2006-01")
	// t-auckland: pro with a contract of 100 included MAU at 0.015; t-shanghai: 40 production
	// devices and 10 on its testing app.
	importEvents(t, p, month, devices{"t-auckland", "nz-super", 0, 150}, devices{"t-shanghai", "sh-super", 0, 40},
		devices{"t-shanghai", "sh-qa", 1000, 10})

	url := "http://" + rateAddr
	// The billing process reads with the operator key, t-shanghai's staff with its read key.
	nz := statementOf(t, url, p.operator, "t-auckland", m, 1)
	if nz.MAU != 150 || nz.IncludedMAU != 100 || nz.OverageMAU != 50 || nz.UnitPriceUSD != "0.015" || nz.AmountUSD != "0.75" ||
		nz.Plan != "pro" || len(nz.Adjustments) != 0 || !nz.Evidence.HLLAgrees {
		t.Fatalf("t-auckland %s v1 = %+v", m, nz)
	}
	sh := statementOf(t, url, p.readKeys["t-shanghai"], "t-shanghai", m, 1)
	checkReadAuth(t, p, url, "invoices")
	checkReadAuth(t, p, url, "mau") // the rater answers MAU reads from ClickHouse
	// The entitlement report: one production app, one testing app, mini programs mp-0 … mp-6.
	if e := sh.Entitlements; e.ProductionApps != 1 || e.TestingApps != 1 || e.MiniPrograms != 7 || len(e.Flags) != 0 {
		t.Errorf("t-shanghai %s entitlements = %+v", m, e)
	}
	if sh.MAU != 40 || sh.TestingMAU != 10 || sh.AmountUSD != "0.00" || sh.MAUByApp["sh-qa"] != 10 {
		t.Fatalf("t-shanghai %s = %+v", m, sh)
	}

	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{clickhouseA}, Auth: clickhouse.Auth{Database: p.database}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	checkReproduces(t, conn, p, nz)
	checkReproduces(t, conn, p, sh)

	// A late device of that month: import restates it, the rater invoices version 2 with the
	// difference from what was billed: 53 × 0.015 = 0.795 → 0.80, 0.75 billed, so the
	// adjustment is 0.05, pending; the month's draft bill charges 0.80.
	importEvents(t, p, month, devices{"t-auckland", "nz-super", 150, 3})
	nz2 := statementOf(t, url, p.readKeys["t-auckland"], "t-auckland", m, 2)
	if nz2.MAU != 153 || nz2.AmountUSD != "0.80" || len(nz2.Adjustments) != 1 || nz2.Adjustments[0].Cents != 5 ||
		nz2.Adjustments[0].PreviousInvoiceID != nz.InvoiceID || nz2.Adjustments[0].PreviousRollupVersion != 1 ||
		nz2.Adjustments[0].InvoiceID != nz2.InvoiceID || nz2.InvoiceID == nz.InvoiceID || nz2.Adjustments[0].BillingSeq != 2 ||
		nz2.Adjustments[0].BilledBeforeUSD != "0.75" || nz2.Adjustments[0].Status != "pending" ||
		nz2.Bill.Status != "draft" || nz2.Bill.MonthUSD != "0.80" || nz2.Bill.TotalUSD != "0.80" {
		t.Fatalf("t-auckland %s v2 = %+v", m, nz2)
	}
	checkReproduces(t, conn, p, nz2)

	// A second rater run (a new consumer group reads every rollup again) changes nothing.
	var rowsBefore uint64
	if err := conn.QueryRow(context.Background(), "SELECT count() FROM invoices").Scan(&rowsBefore); err != nil {
		t.Fatal(err)
	}
	if rowsBefore != 3 {
		t.Fatalf("%d invoice rows, want 3 (t-auckland v1 and v2, t-shanghai v1)", rowsBefore)
	}
	rater.stop()
	rateAddr2, rateAdmin2 := freeAddr(t), freeAddr(t)
	again := startProc(t, "rate-again", p.env, "rate", "--http-addr", rateAddr2, "--admin-addr", rateAdmin2, "--rate-group", "e2e-rate-again")
	waitHTTP(t, again, "http://"+rateAddr2+"/healthz", 30*time.Second)
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(metrics(t, "http://"+rateAdmin2), "maumeter_rater_already_rated_total 3") {
		if time.Now().After(deadline) {
			t.Fatalf("the second rater did not see the 3 rollups within 60s:\n%s", again.tail())
		}
		time.Sleep(250 * time.Millisecond)
	}
	var rowsAfter uint64
	if err := conn.QueryRow(context.Background(), "SELECT count() FROM invoices").Scan(&rowsAfter); err != nil {
		t.Fatal(err)
	}
	if rowsAfter != rowsBefore {
		t.Errorf("the second rater run wrote: %d invoice rows, was %d", rowsAfter, rowsBefore)
	}
	if same := statementOf(t, "http://"+rateAddr2, p.operator, "t-auckland", m, 2); same.Evidence.RatedAt != nz2.Evidence.RatedAt || same.AmountUSD != nz2.AmountUSD {
		t.Errorf("after a second rater run: %+v, was %+v", same, nz2)
	}

	// The CLI prints the same statements.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out := runOnce(t, ctx, p.env, "rate", "--month", m, "--format", "json")
	var cli []statement
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.HasPrefix(l, "{") {
			continue
		}
		var st statement
		if err := json.Unmarshal([]byte(l), &st); err != nil {
			t.Fatalf("rate --format json line %q: %v", l, err)
		}
		cli = append(cli, st)
	}
	if len(cli) != 2 || cli[0].TenantID != "t-auckland" || cli[0].InvoiceID != nz2.InvoiceID || cli[1].InvoiceID != sh.InvoiceID {
		t.Errorf("rate --month %s --format json = %+v", m, cli)
	}

	// The billing run posts the month's bills, and posting again records nothing new.
	var runs []uint32
	for range 2 {
		out := runOnce(t, ctx, p.env, "rate", "--month", m, "--post", "--format", "json")
		var posted []statement
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			var st statement
			if strings.HasPrefix(l, "{") && json.Unmarshal([]byte(l), &st) == nil && st.TenantID != "" {
				posted = append(posted, st)
			}
		}
		if len(posted) != 2 || posted[0].Bill.Status != "posted" || posted[0].Bill.TotalUSD != "0.80" ||
			posted[0].Adjustments[0].Status != "posted" || posted[0].Adjustments[0].PostedOn != m || posted[1].Bill.Status != "posted" {
			t.Fatalf("rate --month %s --post = %+v\n%s", m, posted, out)
		}
		runs = append(runs, posted[0].Bill.RunSeq)
	}
	if runs[0] != 1 || runs[1] != 1 {
		t.Errorf("two postings of %s: runs %v, want one run (1)", m, runs)
	}
}

// checkReproduces runs an invoice's own mau_sql and `maumeter audit`: both must give its MAU.
func checkReproduces(t *testing.T, conn clickhouse.Conn, p *pipeline, st statement) {
	t.Helper()
	var n uint64
	if err := conn.QueryRow(context.Background(), st.Evidence.MAUSQL).Scan(&n); err != nil || n != st.MAU {
		t.Errorf("%s %s: mau_sql %q = %d (%v), invoice MAU %d", st.TenantID, st.Month, st.Evidence.MAUSQL, n, err, st.MAU)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	file := filepath.Join(t.TempDir(), "audit.csv")
	runOnce(t, ctx, p.env, "audit", "--tenant", st.TenantID, "--month", st.Month, "--out", file)
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs)-1 != int(st.MAU) {
		t.Errorf("%s %s: audit CSV has %d devices, invoice MAU %d", st.TenantID, st.Month, len(recs)-1, st.MAU)
	}
	guids := map[string]bool{}
	for _, r := range recs[1:] {
		if st.MAUByApp[r[1]] == 0 || r[1] == "sh-qa" || guids[r[1]+"/"+r[0]] {
			t.Errorf("%s %s: audit row %v is not a distinct billed device", st.TenantID, st.Month, r)
		}
		guids[r[1]+"/"+r[0]] = true
	}
}

// metrics reads a process's /metrics (url: its admin listener).
func metrics(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
