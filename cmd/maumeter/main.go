// Command maumeter meters the Monthly Active Users of mini programs in super apps. Every role of
// the pipeline is a subcommand, so one binary (and one image) serves them all; `serve` runs
// ingest, count and rate in one process, on an in-process Kafka when no brokers are given.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"
	_ "time/tzdata" // billing time zones must resolve in minimal images too

	"github.com/maumeter/maumeter/internal/clock"
)

type command struct {
	name    string
	summary string
	// run runs the command; now is the process clock (internal/clock, read once in main).
	run func(ctx context.Context, now func() time.Time, args []string, stdout, stderr io.Writer) error
}

var commands = []command{
	{"serve", "ingest + count + rate in one process (in-process Kafka when --kafka-brokers is empty)", runServe},
	{"ingest", "HTTP ingest only: POST /v1/events to Kafka", runIngest},
	{"count", "counter only: consume events, keep exact sets, write mau_devices", runCount},
	{"migrate", "apply ClickHouse migrations and create the Kafka topics (events, rollups, caps)", runMigrate},
	{"import", "backfill events from an NDJSON file through Kafka (historical ts allowed)", runImport},
	{"loadgen", "send generated super-app traffic to an ingest endpoint", runLoadgen},
	{"demo", "run the pipeline on generated traffic (in-process Kafka) and print MAU and bills", runDemo},
	{"close", "close a month (or restate it) once the counters have consumed everything", runClose},
	{"offsets", "the counters' offsets per partition (status), and accepting records deleted before they were counted (accept-loss)", runOffsets},
	{"archive", "archive only: write the raw events to ClickHouse's events table (for disputes and analysts)", runArchive},
	{"rate", "rate closed months into invoices (rollups topic to ClickHouse), or print a month's invoices", runRate},
	{"audit", "export the devices billed on a tenant-month's invoice as CSV", runAudit},
	{"keys", "make, list and check ingest keys (kept hashed in the tenant catalogue)", runKeys},
	{"dlq", "list the records the counter could not decode (DLQ topic) and replay them after a fix", runDLQ},
	{"mau", "print the exact MAU of every tenant-month from ClickHouse", runMAU},
	{"healthcheck", "exit 0 when an HTTP health endpoint answers 200 (for container health checks)", runHealthcheck},
	{"version", "print the version, the Go version and the source revision of this binary", runVersion},
}

// version is stamped at build: go build -ldflags "-X main.version=$(git describe)" (`make
// build` and the Dockerfile do). Unstamped, runVersion falls back to the module version Go
// records from the checkout.
var version = ""

// errUsage marks errors that are the caller's: exit code 2.
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The one clock of the process, read once: every calendar decision of every role takes it
	// (internal/clock; MAUMETER_FAKE_NOW sets it ahead for tests).
	now, err := clock.FromEnv()
	if err != nil {
		fmt.Fprintf(os.Stderr, "maumeter: %v\n", err)
		os.Exit(2)
	}
	os.Exit(run(ctx, now, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, now func() time.Time, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, now, args[1:], stdout, stderr)
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			fmt.Fprintf(stderr, "maumeter %s: %v\n", c.name, err)
			return 2
		default:
			var ec exitCode
			if errors.As(err, &ec) {
				fmt.Fprintf(stderr, "maumeter %s: %v\n", c.name, err)
				return int(ec.code)
			}
			fmt.Fprintf(stderr, "maumeter %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "maumeter: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

// runVersion prints the stamped version, the Go toolchain and the VCS settings Go embeds
// (debug.ReadBuildInfo): enough to find the commit a running binary was built from.
func runVersion(_ context.Context, _ func() time.Time, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	v := version
	info, ok := debug.ReadBuildInfo()
	if v == "" && ok {
		v = info.Main.Version // "(devel)" from go run and go test; a pseudo-version from go build
	}
	if v == "" {
		v = "unknown"
	}
	fmt.Fprintf(stdout, "maumeter %s\n", v)
	fmt.Fprintf(stdout, "go %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if ok {
		for _, s := range info.Settings {
			if strings.HasPrefix(s.Key, "vcs") {
				fmt.Fprintf(stdout, "%s %s\n", s.Key, s.Value)
			}
		}
	}
	return nil
}

// exitCode carries a specific exit status with its message.
type exitCode struct {
	code int
	msg  string
}

func (e exitCode) Error() string { return e.msg }

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: maumeter <command> [flags]\n\ncommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nEvery flag can also be set by the environment: --kafka-brokers is MAUMETER_KAFKA_BROKERS.")
	fmt.Fprintln(w, "Run `maumeter <command> -h` for the flags of a command.")
}

// parseFlags parses args, then fills every flag not given on the command line from its
// MAUMETER_* environment variable, so flags, env and compose files use the same names.
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer) error {
	fs.SetOutput(stderr)
	if err := refuseSecretFlags(args); err != nil {
		return err
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		if v, ok := os.LookupEnv(envName(f.Name)); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%w: %s=%q: %v", errUsage, envName(f.Name), v, err))
			}
		}
	})
	return errors.Join(errs...)
}

// refuseSecretFlags refuses the secrets people will try to pass as flags (refusedFlags), saying
// what to use instead, without echoing the value.
func refuseSecretFlags(args []string) error {
	for _, a := range args {
		if a == "--" {
			return nil
		}
		if !strings.HasPrefix(a, "-") {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if instead, ok := refusedFlags[name]; ok {
			return fmt.Errorf("%w: --%s is not accepted: a flag shows in ps and in shell history; %s", errUsage, name, instead)
		}
	}
	return nil
}

func envName(flagName string) string {
	return "MAUMETER_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("%w: log level %q: want debug, info, warn or error", errUsage, level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}
