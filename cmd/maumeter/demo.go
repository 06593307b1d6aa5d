package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/maumeter/maumeter/pipeline/api"
	"github.com/maumeter/maumeter/pipeline/bus"
	"github.com/maumeter/maumeter/pipeline/chstore"
	"github.com/maumeter/maumeter/pipeline/count"
	"github.com/maumeter/maumeter/pipeline/loadgen"
	"github.com/maumeter/maumeter/pipeline/rate"
	"github.com/maumeter/maumeter/pkg/calendar"
	"github.com/maumeter/maumeter/pkg/plan"
)

//go:embed demo_tenants.yaml
var demoTenants []byte

// demoWrittenFor is the month demo_tenants.yaml's purchase days were written for.
var demoWrittenFor = calendar.Month{Year: 2026, Month: time.December}

var purchasedDay = regexp.MustCompile(`(\bpurchased: *)(\d{4}-\d{2}-\d{2})\b`) // block or flow style

// demoCatalogue is the demo's tenant catalogue with every purchase day moved by the months
// between demoWrittenFor and now's month (UTC): the plans are as old at every run of the demo,
// and never expired.
func demoCatalogue(now time.Time) ([]byte, error) {
	y, m, _ := now.UTC().Date()
	months := (y-demoWrittenFor.Year)*12 + int(m-demoWrittenFor.Month)
	var errs []error
	out := purchasedDay.ReplaceAllFunc(demoTenants, func(field []byte) []byte {
		sub := purchasedDay.FindSubmatch(field)
		d, err := time.Parse(time.DateOnly, string(sub[2]))
		if err != nil || d.Day() > 28 {
			errs = append(errs, fmt.Errorf("demo_tenants.yaml: %q: want a date with a day at most 28", sub[2]))
			return field
		}
		return fmt.Appendf(nil, "%s%s", sub[1], d.AddDate(0, months, 0).Format(time.DateOnly))
	})
	return out, errors.Join(errs...)
}

// demoDevices is how many devices each demo tenant gets at --scale 1: enough to cross the Pro
// quota and show an overage, and to run into the POC cap (the gateway then refuses new devices).
var demoDevices = map[string]int{"acme": 250_000, "globex": 80_000, "initech": 260}

// runDemo runs serve in this process on an in-process Kafka and the ClickHouse at
// --clickhouse-addr, sends generated traffic over HTTP, waits until the counter has consumed
// all of it, and prints MAU and the bill per tenant-month beside the truth the generator kept:
// the devices of the events the gateway accepted (a full POC month refuses new devices).
func runDemo(ctx context.Context, now func() time.Time, args []string, stdout, stderr io.Writer) error {
	o := &options{now: now, migrate: true}
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	o.commonFlags(fs)
	o.clickhouseFlags(fs)
	o.kafkaFlags(fs)
	o.countFlags(fs)
	o.ingestFlags(fs)
	o.keysFlags(fs)
	o.capsFlags(fs)
	o.plansFlags(fs)
	scale := fs.Float64("scale", 1, "multiply the demo's device counts")
	eventsPer := fs.Float64("events-per-device", 2.5, "mean events per device")
	fs.StringVar(&o.httpAddr, "http-addr", "127.0.0.1:0", "HTTP listen address")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	o.logLevel = "warn"
	// The demo closes the ended months itself once everything is counted (below), as an
	// operator would with `maumeter close`; the automatic closer must not close them while the
	// traffic still flows.
	if _, set := os.LookupEnv(envName("close-interval")); !set && !flagSet(fs, "close-interval") {
		o.closeInterval = 24 * time.Hour
	}
	// The demo's one SDK sends as fast as it can: it shows the pipeline, not the rate limiter.
	if _, set := os.LookupEnv(envName("tenant-rate")); !set && !flagSet(fs, "tenant-rate") {
		o.tenantRate = 0
	}
	if o.tenants == "tenants.yaml" {
		if _, err := os.Stat(o.tenants); err != nil { // no catalogue here: use the demo's own
			f, err := os.CreateTemp("", "maumeter-demo-tenants-*.yaml")
			if err != nil {
				return err
			}
			defer os.Remove(f.Name())
			data, err := demoCatalogue(o.now())
			if err != nil {
				return err
			}
			if _, err := f.Write(data); err != nil {
				return err
			}
			f.Close()
			o.tenants = f.Name()
		}
	}
	fmt.Fprintf(stdout, "maumeter demo: in-process Kafka, ClickHouse at %s (database %s)\n", o.chAddr, o.chDatabase)
	s, err := build(ctx, o, roleParts{ingest: true, count: true, rate: true, embeddedKafka: true}, stderr)
	if err != nil {
		return err
	}
	defer s.close()
	plans := s.plans // the tenant catalogue was checked against it
	// The demo is its own SDK and its own reader: one fresh ingest key and one read key per
	// tenant, known to this process only.
	var keys, readKeys map[string]string
	if s.keys, s.readKeys, keys, readKeys, err = demoKeys(s.catalog, o.now().UTC()); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ready := make(chan string, 1)
	roles := make(chan error, 1)
	go func() { roles <- runRoles(ctx, o, s, ready) }()
	var addr string
	select {
	case addr = <-ready:
	case err := <-roles:
		return err
	}

	var tenants []loadgen.Tenant
	for _, t := range s.catalog.Tenants {
		n, ok := demoDevices[t.ID]
		if !ok {
			n = 10_000
		}
		tenants = append(tenants, loadgen.Tenant{ID: t.ID, Apps: appsOf(t), Location: t.Location(), Devices: max(1, int(float64(n)**scale))})
	}
	// 30 days back: the traffic always spans the end of the last month (the gateway takes
	// events up to 35 days old), which the demo closes and rates.
	to := o.now()
	from := to.Add(-30 * 24 * time.Hour)
	fmt.Fprintf(stdout, "sending generated traffic for %d tenants from %s to %s over HTTP...\n", len(tenants), from.Format(time.DateOnly), to.Format(time.DateOnly))
	st, err := loadgen.Run(ctx, loadgen.Config{
		URL: "http://" + addr + "/v1/events", Keys: keys, Tenants: tenants, EventsPer: *eventsPer,
		From: from, To: to, Batch: 1000, Concurrency: 4, Seed: 42,
	}, &http.Client{Timeout: 30 * time.Second})
	if err != nil {
		return fmt.Errorf("loadgen: %w", err)
	}
	fmt.Fprintf(stdout, "ingested %d events in %s (%.0f events/s), %d refused with poc_cap_reached; waiting for the counter...\n",
		st.Accepted, st.Elapsed.Round(time.Millisecond), float64(st.Accepted)/st.Elapsed.Seconds(), st.Rejected)
	start := time.Now()
	for {
		lag, err := bus.Lag(ctx, s.kafka, o.group, o.topic)
		if err == nil && lag == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-roles:
			return fmt.Errorf("pipeline stopped: %w", err)
		case <-time.After(200 * time.Millisecond):
		}
	}
	fmt.Fprintf(stdout, "counted in %s more\n", time.Since(start).Round(time.Millisecond))

	rows, err := s.store.AllMAU(ctx)
	if err != nil {
		return err
	}
	// Each tenant reads its own MAU through the API with its read key, as its billing staff
	// would; the answer must be ClickHouse's. Without a key, or with another tenant's, no answer.
	client := &http.Client{Timeout: 10 * time.Second}
	for i, r := range rows {
		got, code, err := readMAU(ctx, client, addr, r.TenantID, r.Month, readKeys[r.TenantID])
		if err != nil || code != http.StatusOK || got.MAU != r.MAU {
			return fmt.Errorf("GET /v1/tenants/%s/mau?month=%s with its read key: %d, MAU %d (%v); ClickHouse has %d", r.TenantID, r.Month, code, got.MAU, err, r.MAU)
		}
		other := rows[(i+1)%len(rows)].TenantID
		if _, code, err := readMAU(ctx, client, addr, r.TenantID, r.Month, ""); err != nil || code != http.StatusUnauthorized {
			return fmt.Errorf("GET /v1/tenants/%s/mau without a key: %d (%v), want 401", r.TenantID, code, err)
		}
		if _, code, err := readMAU(ctx, client, addr, r.TenantID, r.Month, readKeys[other]); other != r.TenantID && (err != nil || code != http.StatusForbidden) {
			return fmt.Errorf("GET /v1/tenants/%s/mau with %s's read key: %d (%v), want 403", r.TenantID, other, code, err)
		}
	}
	fmt.Fprintf(stdout, "read back %d tenant-months through GET /v1/tenants/{tenant}/mau, each with its tenant's read key (none without a key or with another tenant's)\n", len(rows))
	// The gateway refused initech's surplus devices on its own reservations, within the one
	// request that carried them; the counter's cap state (the counted devices) follows and is
	// what other gateways, or this one after a restart, go by.
	start = time.Now()
	for _, r := range rows {
		t, _ := s.catalog.Tenant(r.TenantID)
		month, err := calendar.ParseMonth(r.Month)
		if err != nil {
			return err
		}
		limit, poc := plans.HardCap(t, month)
		if !poc {
			continue
		}
		for s.caps.Counted(r.TenantID, r.Month) < int64(r.MAU) {
			if time.Since(start) > 30*time.Second {
				return fmt.Errorf("the counter's cap state of %s %s did not reach the gateway within 30 s", r.TenantID, r.Month)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
		full := ""
		if n := s.caps.Counted(r.TenantID, r.Month); n >= limit {
			full = ", full: new devices are refused"
		}
		fmt.Fprintf(stdout, "cap state at the gateway %s after counting: %s %s %d of %d devices%s\n", time.Since(start).Round(time.Millisecond),
			r.TenantID, r.Month, s.caps.Counted(r.TenantID, r.Month), limit, full)
	}
	// Close every tenant-month that has ended in its tenant's zone, as `maumeter close` would,
	// and let the rater of this process invoice it from the rollups topic.
	closer, err := count.NewCloser(o.closeConfig(), s.kafka, o.topic, o.group, s.catalog, s.store, o.now, s.log, prometheus.NewRegistry())
	if err != nil {
		return err
	}
	var closed, open []chstore.MonthlyMAU
	mismatch, overCap := 0, 0
	var capNotes []string
	for _, r := range rows {
		t, _ := s.catalog.Tenant(r.TenantID)
		month, err := calendar.ParseMonth(r.Month)
		if err != nil {
			return err
		}
		if st.Truth[r.TenantID][r.Month] != int(r.MAU) {
			mismatch++
			fmt.Fprintf(stdout, "MISMATCH %s %s: MAU %d, truth %d\n", r.TenantID, r.Month, r.MAU, st.Truth[r.TenantID][r.Month])
		}
		if limit, poc := plans.HardCap(t, month); poc {
			// One gateway reserves a place for every device it lets in: it never admits more
			// than the cap, whenever the counter's cap state reaches it.
			if int64(r.MAU) > limit {
				overCap++
			}
			if n := st.Capped[r.TenantID][r.Month]; n > 0 {
				capNotes = append(capNotes, fmt.Sprintf("%s %s: %s cap of %d devices reached; %d more devices were refused with poc_cap_reached (not counted, not billed)",
					r.TenantID, r.Month, t.Plan, limit, n))
			}
		}
		if to.Before(month.End(t.Location())) {
			open = append(open, r)
			continue
		}
		if _, err := closer.Close(ctx, chstore.TenantMonth{TenantID: r.TenantID, Month: r.Month}); err != nil {
			return err
		}
		closed = append(closed, r)
	}
	if len(closed) > 0 {
		var sts []rate.Statement
		for _, r := range closed {
			stmt, err := waitStatement(ctx, s.store, r.TenantID, r.Month, roles)
			if err != nil {
				return err
			}
			// The evidence: the invoice's own SQL over mau_devices gives its MAU back.
			n, err := s.store.QueryCount(ctx, stmt.Evidence.MAUSQL)
			if err != nil {
				return err
			}
			if n != stmt.MAU || stmt.TotalMAU != r.MAU {
				mismatch++
				fmt.Fprintf(stdout, "MISMATCH %s %s: invoice MAU %d, its SQL %d; invoice total %d, counted %d\n",
					r.TenantID, r.Month, stmt.MAU, n, stmt.TotalMAU, r.MAU)
			}
			sts = append(sts, stmt)
		}
		fmt.Fprintf(stdout, "\nclosed the %d tenant-months that have ended (as `maumeter close` would); the rater invoiced them", len(closed))
		fmt.Fprintf(stdout, "\n(after their due time, the end of day 3 of the next month: the demo's traffic is historical):\n\n")
		if err := rate.Write(stdout, "table", sts); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "\neach invoice's mau_sql, run on mau_devices, returns its MAU (`maumeter audit` lists those devices).")
	}

	fmt.Fprintf(stdout, "\nmonth to date (open months: exact in real time, priced as they stand, invoiced once closed):\n\n")
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "tenant\tplan\ttime zone\tmonth\tMAU\taccepted (truth)\ttesting\tbillable\tincluded\toverage\tUSD/MAU\tbill to date USD\tprojected MAU\tprojected USD\tflags\t")
	for _, r := range open {
		t, _ := s.catalog.Tenant(r.TenantID)
		month, _ := calendar.ParseMonth(r.Month)
		facts, err := s.store.Facts(ctx, chstore.TenantMonth{TenantID: r.TenantID, Month: r.Month}, nil)
		if err != nil {
			return err
		}
		b := plans.Price(t, plan.Usage{Month: month, MAUByApp: facts.ByApp})
		// The tenant's own read of its month: priced the same, and carried to the month's end.
		got, code, err := readMAU(ctx, client, addr, r.TenantID, r.Month, readKeys[r.TenantID])
		if err != nil || code != http.StatusOK || got.MAUBilling == nil || got.AmountToDateUSD != b.Amount.StringFixed(2) || got.BillableMAU != b.MAU {
			mismatch++
			fmt.Fprintf(stdout, "MISMATCH %s %s: the MAU read prices %+v (%d, %v); pkg/plan prices %s for %d billable\n",
				r.TenantID, r.Month, got.MAUBilling, code, err, b.Amount.StringFixed(2), b.MAU)
		}
		projMAU, projUSD, flags := "-", "-", orDash(strings.Join(b.Flags, ","))
		if got.MAUBilling != nil && got.Projection != nil {
			pr := got.Projection
			projMAU = fmt.Sprintf("%d (%d–%d)", pr.MonthEndMAU, pr.MonthEndMAULow, pr.MonthEndMAUHigh)
			projUSD = fmt.Sprintf("%s (%s–%s)", pr.MonthEndAmountUSD, pr.MonthEndAmountLowUSD, pr.MonthEndAmountHighUSD)
			if len(got.Projection.Flags) > 0 { // e.g. a POC month whose rate would pass its cap (refused at the door)
				flags += " (projected: " + strings.Join(got.Projection.Flags, ",") + ")"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t\n", r.TenantID, b.Plan, t.TimeZone, r.Month,
			r.MAU, st.Truth[r.TenantID][r.Month], b.TestingMAU, b.MAU, b.IncludedMAU, b.OverageMAU, b.UnitPrice.String(),
			b.Amount.StringFixed(2), projMAU, projUSD, flags)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(capNotes) > 0 || st.Rejected > 0 {
		fmt.Fprintf(stdout, "\nPOC caps: %d events refused at the gateway.\n", st.Rejected)
		for _, n := range capNotes {
			fmt.Fprintln(stdout, "  "+n)
		}
	}
	cancel()
	<-roles
	if mismatch > 0 {
		return fmt.Errorf("%d tenant-months differ from the generator's truth", mismatch)
	}
	if overCap > 0 {
		return fmt.Errorf("%d POC tenant-months counted more devices than their cap", overCap)
	}
	fmt.Fprintln(stdout, "\nevery tenant-month equals the truth the generator kept (the devices of the events the gateway")
	fmt.Fprintln(stdout, "accepted), and no POC month exceeds its cap. Prices come from pkg/plan on the plan catalogue")
	fmt.Fprintln(stdout, "(the embedded one unless --plans); testing apps are reported, not billed.")
	return nil
}

// readMAU asks the API at addr for a tenant-month's MAU with a read key ("" sends none).
func readMAU(ctx context.Context, client *http.Client, addr, tenantID, month, key string) (api.MAUResponse, int, error) {
	var body api.MAUResponse
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/v1/tenants/%s/mau?month=%s", addr, tenantID, month), nil)
	if err != nil {
		return body, 0, err
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := client.Do(req)
	if err != nil {
		return body, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			return body, resp.StatusCode, err
		}
	}
	return body, resp.StatusCode, nil
}

// writeJSONLines prints one JSON object per line.
func writeJSONLines[T any](w io.Writer, rows []T) error {
	enc := json.NewEncoder(w)
	for i := range rows {
		if err := enc.Encode(&rows[i]); err != nil {
			return err
		}
	}
	return nil
}

// waitStatement waits until the rater has invoiced the latest rollup of a tenant-month.
func waitStatement(ctx context.Context, store *chstore.Store, tenantID, month string, roles <-chan error) (rate.Statement, error) {
	deadline := time.Now().Add(time.Minute)
	for {
		rollups, err := store.Rollups(ctx, tenantID, month)
		if err != nil {
			return rate.Statement{}, err
		}
		sts, err := rate.Reader{Store: store}.Statements(ctx, tenantID, month)
		if err != nil {
			return rate.Statement{}, err
		}
		if len(rollups) > 0 && len(sts) == 1 && sts[0].RollupVersion == rollups[len(rollups)-1].Version {
			return sts[0], nil
		}
		if time.Now().After(deadline) {
			return rate.Statement{}, fmt.Errorf("no invoice of %s %s within a minute of its close", tenantID, month)
		}
		select {
		case <-ctx.Done():
			return rate.Statement{}, ctx.Err()
		case err := <-roles:
			return rate.Statement{}, fmt.Errorf("pipeline stopped: %w", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
