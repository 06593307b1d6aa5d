package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/maumeter/maumeter/pipeline/chstore"
	"github.com/maumeter/maumeter/pipeline/rate"
	"github.com/maumeter/maumeter/pkg/calendar"
)

func (o *options) rateFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.rateGroup, "rate-group", rate.Group, "consumer group of the raters")
}

// runRate runs the rater (no --month: consume the rollups topic and write invoices until
// stopped), rates stored rollups that have no invoice (--stored), or prints the statements of a
// month (--month), recording their bills first with --post.
func runRate(ctx context.Context, now func() time.Time, args []string, stdout, stderr io.Writer) error {
	o := &options{now: now}
	fs := flag.NewFlagSet("rate", flag.ContinueOnError)
	o.commonFlags(fs)
	o.kafkaFlags(fs)
	o.clickhouseFlags(fs)
	o.rateFlags(fs)
	o.plansFlags(fs)
	o.keysFlags(fs)
	o.shutdownFlags(fs)
	fs.StringVar(&o.rollupsTopic, "rollups-topic", "mau.rollups.v1", "compacted Kafka topic of monthly rollups")
	o.adminFlags(fs)
	o.readLimitFlags(fs)
	fs.StringVar(&o.httpAddr, "http-addr", "127.0.0.1:9465", "HTTP listen address of /healthz, /readyz and invoice and MAU reads (service mode)")
	o.httpTLSFlags(fs)
	month := fs.String("month", "", "print the statements of this month, YYYY-MM, instead of running the rater")
	only := fs.String("tenant", "", "with --month or --stored: this tenant only")
	format := fs.String("format", "table", "with --month: "+strings.Join(rate.Formats, ", "))
	stored := fs.Bool("stored", false, "rate the rollups stored in ClickHouse that have no invoice yet (--month, --tenant narrow it), print them, and exit")
	post := fs.Bool("post", false, "with --month: record the month's bill of each tenant (--tenant narrows it): the month's invoices and the earlier months' adjustments not posted yet; posting again changes nothing")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if !slices.Contains(rate.Formats, *format) {
		return fmt.Errorf("%w: --format %q: want one of %s", errUsage, *format, strings.Join(rate.Formats, ", "))
	}
	if *month != "" {
		if _, err := calendar.ParseMonth(*month); err != nil {
			return fmt.Errorf("%w: --month: %v", errUsage, err)
		}
	}
	if *post && *month == "" {
		return fmt.Errorf("%w: --post needs --month", errUsage)
	}
	if *month == "" && !*stored {
		if *only != "" {
			return fmt.Errorf("%w: --tenant needs --month or --stored", errUsage)
		}
		s, err := build(ctx, o, roleParts{rate: true}, stderr)
		if err != nil {
			return err
		}
		defer s.close()
		return runRoles(ctx, o, s, nil)
	}
	store, log, err := openStore(ctx, o, stderr)
	if err != nil {
		return err
	}
	defer store.Close()
	if *stored {
		plans, catalog, err := o.loadCatalogs()
		if err != nil {
			return err
		}
		r, err := rate.New(rate.Config{}, catalog, plans, store, o.now, log, prometheus.NewRegistry())
		if err != nil {
			return err
		}
		invs, err := r.RateStored(ctx, *only, *month)
		fmt.Fprintf(stderr, "%d invoices written\n", len(invs))
		if err != nil {
			return err
		}
	}
	sts, err := rate.Reader{Store: store}.Statements(ctx, *only, *month)
	if err != nil {
		return err
	}
	if *post {
		if sts, err = postBills(ctx, store, sts, *only, *month, stderr); err != nil {
			return err
		}
	}
	if *month != "" && len(sts) == 0 {
		fmt.Fprintf(stderr, "no invoices for %s%s: months are rated when they close (`maumeter close`)\n", *month, forTenant(*only))
	}
	return rate.Write(stdout, *format, sts)
}

// postBills records the bill of month of each tenant with a statement, reports each on stderr,
// and returns the statements as posted. A tenant whose bill cannot be posted (a later month's
// is) is reported and the others are posted; the command then fails.
func postBills(ctx context.Context, store *chstore.Store, sts []rate.Statement, only, month string, stderr io.Writer) ([]rate.Statement, error) {
	var failed []string
	for _, st := range sts {
		run, now, err := rate.PostBill(ctx, store, st.TenantID, month, time.Now())
		switch {
		case errors.Is(err, rate.ErrLaterBillPosted):
			fmt.Fprintf(stderr, "%s %s: not posted: %v\n", st.TenantID, month, err)
			failed = append(failed, st.TenantID)
			continue
		case err != nil:
			return nil, err
		case now:
			fmt.Fprintf(stderr, "%s %s: bill posted (run %d): %d invoices, %s USD\n", st.TenantID, month, run.RunSeq, len(run.InvoiceIDs), run.ChargedUSD.StringFixed(2))
		default:
			fmt.Fprintf(stderr, "%s %s: bill already posted (run %d, %s, by %s): nothing recorded\n", st.TenantID, month, run.RunSeq,
				run.PostedAt.UTC().Format(time.RFC3339), run.PostedBy)
		}
	}
	sts, err := rate.Reader{Store: store}.Statements(ctx, only, month)
	if err != nil {
		return nil, err
	}
	if len(failed) > 0 {
		return sts, fmt.Errorf("bills of %s not posted for %s", month, strings.Join(failed, ", "))
	}
	return sts, nil
}

func forTenant(t string) string {
	if t == "" {
		return ""
	}
	return " of tenant " + t
}

// runAudit exports the devices billed on a tenant-month's invoice as CSV: the answer to a
// disputed bill. The row count equals the invoice's MAU, and the command checks it.
func runAudit(ctx context.Context, now func() time.Time, args []string, stdout, stderr io.Writer) error {
	o := &options{now: now}
	fs := flag.NewFlagSet("audit", flag.ContinueOnError)
	o.commonFlags(fs)
	o.clickhouseFlags(fs)
	only := fs.String("tenant", "", "tenant (required)")
	month := fs.String("month", "", "billing month YYYY-MM (required)")
	version := fs.Uint("version", 0, "rollup version of the invoice (default: the latest)")
	out := fs.String("out", "", "write the CSV to this file instead of stdout")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if *only == "" || *month == "" {
		return fmt.Errorf("%w: --tenant and --month are required", errUsage)
	}
	if _, err := calendar.ParseMonth(*month); err != nil {
		return fmt.Errorf("%w: --month: %v", errUsage, err)
	}
	store, _, err := openStore(ctx, o, stderr)
	if err != nil {
		return err
	}
	defer store.Close()
	invs, err := store.Invoices(ctx, chstore.InvoiceFilter{TenantID: *only, Month: *month, AllVersions: true})
	if err != nil {
		return err
	}
	var inv *chstore.Invoice
	for _, i := range invs {
		if *version == 0 || uint(i.RollupVersion) == *version {
			inv = i // ordered by version: the last match is the latest
		}
	}
	if inv == nil && *version > 0 {
		return fmt.Errorf("no invoice for %s %s rollup version %d", *only, *month, *version)
	}
	if inv == nil {
		return fmt.Errorf("no invoice for %s %s: months are rated when they close (`maumeter close`)", *only, *month)
	}
	w := stdout
	if *out != "" {
		f, err := os.Create(*out)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	n, err := store.WriteBilledDevices(ctx, inv, w)
	if err != nil {
		return err
	}
	if *out != "" {
		if err := w.(*os.File).Close(); err != nil {
			return err
		}
	}
	fmt.Fprintf(stderr, "%s %s: %d billed devices, invoice %s (rollup version %d) MAU %d\n",
		inv.TenantID, inv.Month, n, inv.InvoiceID, inv.RollupVersion, inv.MAU)
	if uint64(n) != inv.MAU {
		return errors.New("the exported devices do not match the invoice's MAU: the billing record changed after rating; investigate before answering the dispute")
	}
	return nil
}

// openStore opens ClickHouse for a command that reads or writes it, with its logger.
func openStore(ctx context.Context, o *options, stderr io.Writer) (*chstore.Store, *slog.Logger, error) {
	log, err := newLogger(stderr, o.logLevel)
	if err != nil {
		return nil, nil, err
	}
	store, err := o.openStore(ctx, log)
	if err != nil {
		return nil, nil, err
	}
	return store, log, nil
}
