package main

import (
	"bufio"
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/maumeter/maumeter/pipeline/bus"
	"github.com/maumeter/maumeter/pipeline/chstore"
	"github.com/maumeter/maumeter/pipeline/ingest"
	"github.com/maumeter/maumeter/pipeline/loadgen"
	"github.com/maumeter/maumeter/pkg/calendar"
	"github.com/maumeter/maumeter/pkg/event"
	"github.com/maumeter/maumeter/pkg/population"
	"github.com/maumeter/maumeter/pkg/tenant"
)

// runImport backfills an NDJSON file through the events topic. Historical ts are allowed; ts in
// the future beyond --max-event-future are not. Exit status 3 when some lines were rejected (the
// rest went through), 1 when the import itself failed.
func runImport(ctx context.Context, now func() time.Time, args []string, stdout, stderr io.Writer) error {
	o := &options{now: now}
	fs := flag.NewFlagSet("import", flag.ContinueOnError)
	o.commonFlags(fs)
	o.kafkaFlags(fs)
	o.clickhouseFlags(fs)
	o.closerFlags(fs)
	o.plansFlags(fs)
	closeAfter := fs.Bool("close", true, "after the import, wait for the counters and close the touched months whose close time has passed")
	closeTimeout := fs.Duration("close-timeout", 30*time.Minute, "longest wait for the counters to consume the import")
	file := fs.String("file", "", "NDJSON file of events ('-' for standard input)")
	batchSize := fs.Int("batch", 5000, "events per produce")
	fs.DurationVar(&o.maxEventFuture, "max-event-future", event.DefaultBounds.MaxFuture, "furthest event ts accepted ahead of now")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if *file == "" {
		return fmt.Errorf("%w: --file is required", errUsage)
	}
	log, err := newLogger(stderr, o.logLevel)
	if err != nil {
		return err
	}
	_, catalog, err := o.loadCatalogs()
	if err != nil {
		return err
	}
	kafka, err := o.kafkaNet()
	if err != nil {
		return err
	}
	if len(kafka.Brokers) == 0 {
		return fmt.Errorf("%w: --kafka-brokers (MAUMETER_KAFKA_BROKERS) is required", errUsage)
	}
	in := io.Reader(os.Stdin)
	if *file != "-" {
		f, err := os.Open(*file)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	producer := bus.NewProducer(kafka, o.topic)
	defer producer.Close()
	bounds := event.Bounds{MaxFuture: o.maxEventFuture}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), event.MaxBatchBytes)
	var batch []event.Event
	var lines, imported, bad int
	touched := map[chstore.TenantMonth]bool{}
	flush := func() error {
		if err := producer.Produce(ctx, batch); err != nil {
			return fmt.Errorf("after %d events imported: %w", imported, err)
		}
		imported += len(batch)
		batch = batch[:0]
		return nil
	}
	for sc.Scan() {
		lines++
		line := sc.Bytes()
		if len(strings.TrimSpace(string(line))) == 0 {
			continue
		}
		e, rj := event.Parse(line, o.now(), bounds)
		if rj == nil {
			rj = ingest.CheckCatalog(catalog, &e)
		}
		if rj != nil {
			bad++
			fmt.Fprintf(stderr, "%s:%d: %s", *file, lines, rj.Reason)
			if rj.Field != "" {
				fmt.Fprintf(stderr, " (%s)", rj.Field)
			}
			fmt.Fprintf(stderr, ": %s\n", rj.Message)
			continue
		}
		t, _ := catalog.Tenant(e.TenantID)
		touched[chstore.TenantMonth{TenantID: e.TenantID, Month: calendar.MonthOf(e.TS, t.Location()).String()}] = true
		batch = append(batch, e)
		if len(batch) >= *batchSize {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			err = fmt.Errorf("line %d is longer than %d bytes", lines+1, event.MaxBatchBytes)
		}
		return fmt.Errorf("read %s after %d events imported: %w", *file, imported, err)
	}
	if err := flush(); err != nil {
		return err
	}
	log.Info("import done", "file", *file, "lines", lines, "imported", imported, "rejected", bad)
	fmt.Fprintf(stdout, "imported %d events, rejected %d lines\n", imported, bad)
	if *closeAfter && imported > 0 {
		// A backfilled month closes once, with the whole import in its first rollup.
		cctx, cancel := context.WithTimeout(ctx, *closeTimeout)
		defer cancel()
		closer, store, err := openCloser(cctx, o, catalog, log)
		if err != nil {
			return fmt.Errorf("close imported months: %w", err)
		}
		defer store.Close()
		var due []chstore.TenantMonth
		for tm := range touched {
			t, _ := catalog.Tenant(tm.TenantID)
			m, _ := calendar.ParseMonth(tm.Month)
			if !o.now().Before(closer.CloseAt(t, m)) {
				due = append(due, tm)
			}
		}
		if len(due) > 0 {
			fmt.Fprintf(stdout, "waiting for the counters, then closing %d tenant-months whose close time has passed\n", len(due))
			if err := closeMonths(cctx, closer, due, stdout); err != nil {
				return fmt.Errorf("close imported months: %w", err)
			}
		}
	}
	if bad > 0 {
		return exitCode{3, fmt.Sprintf("%d lines rejected (listed above); the other %d events were imported", bad, imported)}
	}
	return nil
}

// runMAU prints the exact MAU of every tenant-month from ClickHouse.
func runMAU(ctx context.Context, now func() time.Time, args []string, stdout, stderr io.Writer) error {
	o := &options{now: now}
	fs := flag.NewFlagSet("mau", flag.ContinueOnError)
	o.clickhouseFlags(fs)
	fs.StringVar(&o.logLevel, "log-level", "warn", "debug, info, warn or error")
	format := fs.String("format", "table", "table or json")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	store, _, err := openStore(ctx, o, stderr)
	if err != nil {
		return err
	}
	defer store.Close()
	rows, err := store.AllMAU(ctx)
	if err != nil {
		return err
	}
	if *format == "json" {
		return writeJSONLines(stdout, rows)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "tenant\tmonth\tmau\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%d\t\n", r.TenantID, r.Month, r.MAU)
	}
	return tw.Flush()
}

// runLoadgen sends generated traffic for every tenant of the catalogue to an ingest endpoint.
func runLoadgen(ctx context.Context, now func() time.Time, args []string, stdout, stderr io.Writer) error {
	o := &options{now: now}
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	o.commonFlags(fs)
	o.plansFlags(fs)
	url := fs.String("url", "http://127.0.0.1:8080/v1/events", "ingest endpoint")
	devices := fs.Int("devices", 10000, "distinct devices per tenant")
	eventsPer := fs.Float64("events-per-device", 3, "mean events per device")
	days := fs.Int("days", 30, "spread events over the last N days")
	batch := fs.Int("batch", 500, "events per request")
	conc := fs.Int("concurrency", 4, "requests in flight")
	keyList := fs.String("ingest-keys", "", "ingest key of each tenant: tenant=key,tenant=key (see \"maumeter keys new\")")
	mix := fs.String("returning", "", "devices return like a real app's (pkg/population): typical, sticky or casual; "+
		"--devices is then the returning population, --events-per-device the mean events per active day")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	keys, err := parseKeyList(*keyList)
	if err != nil {
		return err
	}
	_, catalog, err := o.loadCatalogs()
	if err != nil {
		return err
	}
	segments, ok := map[string][]population.Segment{"": nil, "typical": population.Typical, "sticky": population.Sticky, "casual": population.Casual}[*mix]
	if !ok {
		return fmt.Errorf("--returning %q: want typical, sticky or casual", *mix)
	}
	var tenants []loadgen.Tenant
	for _, t := range catalog.Tenants {
		tenants = append(tenants, loadgen.Tenant{ID: t.ID, Apps: appsOf(t), Location: t.Location(), Devices: *devices})
	}
	at := o.now()
	st, err := loadgen.Run(ctx, loadgen.Config{
		URL: *url, Keys: keys, Tenants: tenants, EventsPer: *eventsPer, Batch: *batch, Concurrency: *conc,
		From: at.Add(-time.Duration(*days) * 24 * time.Hour), To: at, Seed: uint64(at.UnixNano()), Returning: segments,
	}, &http.Client{Timeout: 30 * time.Second})
	fmt.Fprintf(stdout, "sent %d events in %d requests (%d retries), %d accepted, %d refused with poc_cap_reached, in %s (%.0f events/s)\n",
		st.Events, st.Requests, st.Retries, st.Accepted, st.Rejected, st.Elapsed.Round(time.Millisecond), float64(st.Accepted)/st.Elapsed.Seconds())
	return err
}

// appsOf lists a tenant's production apps, or its testing apps when it has none.
func appsOf(t *tenant.Tenant) []string {
	if len(t.Apps) > 0 {
		return t.Apps
	}
	return t.TestingApps
}
