package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/maumeter/maumeter/pipeline/chstore"
	"github.com/maumeter/maumeter/pipeline/count"
	"github.com/maumeter/maumeter/pkg/calendar"
	"github.com/maumeter/maumeter/pkg/tenant"
)

// runClose closes a month (or restates it when it is closed and has new devices) for one tenant
// or all, once the counters have consumed everything Kafka holds now.
func runClose(ctx context.Context, now func() time.Time, args []string, stdout, stderr io.Writer) error {
	o := &options{now: now}
	fs := flag.NewFlagSet("close", flag.ContinueOnError)
	o.commonFlags(fs)
	o.kafkaFlags(fs)
	o.clickhouseFlags(fs)
	o.closerFlags(fs)
	o.plansFlags(fs)
	month := fs.String("month", "", "month to close, YYYY-MM (in each tenant's time zone)")
	only := fs.String("tenant", "", "close for this tenant only (default: every tenant of the catalogue)")
	timeout := fs.Duration("timeout", 10*time.Minute, "longest wait for the counters to catch up")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	m, err := calendar.ParseMonth(*month)
	if err != nil {
		return fmt.Errorf("%w: --month: %v", errUsage, err)
	}
	log, err := newLogger(stderr, o.logLevel)
	if err != nil {
		return err
	}
	_, catalog, err := o.loadCatalogs()
	if err != nil {
		return err
	}
	var tms []chstore.TenantMonth
	for _, t := range catalog.Tenants {
		if *only == "" || t.ID == *only {
			tms = append(tms, chstore.TenantMonth{TenantID: t.ID, Month: m.String()})
		}
	}
	if len(tms) == 0 {
		return fmt.Errorf("%w: tenant %q is not in the catalogue", errUsage, *only)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	closer, store, err := openCloser(ctx, o, catalog, log)
	if err != nil {
		return err
	}
	defer store.Close()
	return closeMonths(ctx, closer, tms, stdout)
}

func openCloser(ctx context.Context, o *options, catalog *tenant.Catalog, log *slog.Logger) (*count.Closer, *chstore.Store, error) {
	kafka, err := o.kafkaNet()
	if err != nil {
		return nil, nil, err
	}
	if len(kafka.Brokers) == 0 {
		return nil, nil, fmt.Errorf("%w: --kafka-brokers (MAUMETER_KAFKA_BROKERS) is required", errUsage)
	}
	store, err := o.openStore(ctx, log)
	if err != nil {
		return nil, nil, err
	}
	closer, err := count.NewCloser(o.closeConfig(), kafka, o.topic, o.group, catalog, store, o.now, log, prometheus.NewRegistry())
	if err != nil {
		store.Close()
		return nil, nil, err
	}
	return closer, store, nil
}

// closeMonths closes each tenant-month and prints what it wrote.
func closeMonths(ctx context.Context, closer *count.Closer, tms []chstore.TenantMonth, stdout io.Writer) error {
	sort.Slice(tms, func(i, j int) bool {
		return tms[i].TenantID < tms[j].TenantID || tms[i].TenantID == tms[j].TenantID && tms[i].Month < tms[j].Month
	})
	for _, tm := range tms {
		r, err := closer.Close(ctx, tm)
		if err != nil {
			return err
		}
		if r == nil {
			fmt.Fprintf(stdout, "%s %s: already closed, no new devices\n", tm.TenantID, tm.Month)
			continue
		}
		fmt.Fprintf(stdout, "%s %s: %s, rollup version %d, MAU %d (in memory %d, HLL %d)\n",
			tm.TenantID, tm.Month, r.Kind, r.Version, r.MAU, r.MAUMemory, r.HLLEstimate)
	}
	return nil
}
