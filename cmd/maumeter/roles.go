package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/maumeter/maumeter/internal/clock"
	"github.com/maumeter/maumeter/pipeline/api"
	"github.com/maumeter/maumeter/pipeline/bus"
	"github.com/maumeter/maumeter/pipeline/caps"
	"github.com/maumeter/maumeter/pipeline/chstore"
	"github.com/maumeter/maumeter/pipeline/count"
	"github.com/maumeter/maumeter/pipeline/ingest"
	"github.com/maumeter/maumeter/pipeline/rate"
	"github.com/maumeter/maumeter/pkg/event"
	"github.com/maumeter/maumeter/pkg/plan"
	"github.com/maumeter/maumeter/pkg/tenant"
)

// options are the flags shared by the roles. Each is also read from MAUMETER_<FLAG>.
type options struct {
	now            func() time.Time // the process clock: every calendar decision (internal/clock)
	logLevel       string
	tenants        string
	plans          string
	kafkaBrokers   string
	topic          string
	partitions     int
	replication    int
	group          string
	chAddr         string
	chDatabase     string
	chUser         string
	chPassword     string
	httpAddr       string
	maxEventAge    time.Duration
	maxEventFuture time.Duration
	tenantRate     float64
	tenantBurst    int
	maxInFlight    int
	keysReload     time.Duration
	http           api.Timeouts
	flushInterval  time.Duration
	checkpoint     time.Duration
	sessionTimeout time.Duration
	rollupsTopic   string
	closeGrace     time.Duration
	closeInterval  time.Duration
	closeWindow    time.Duration
	capsTopic      string
	capInterval    time.Duration
	migrate        bool
	rateGroup      string
	// shutdownTimeout bounds the drain after SIGTERM (runRoles): HTTP, producer, counter, rater.
	shutdownTimeout time.Duration
}

// DefaultShutdownTimeout is the default of --shutdown-timeout: below the 30 s that Docker
// Compose and Kubernetes wait after SIGTERM before they SIGKILL.
const DefaultShutdownTimeout = 25 * time.Second

// shutdownFlags: how long the roles may take to drain after SIGTERM.
func (o *options) shutdownFlags(fs *flag.FlagSet) {
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", DefaultShutdownTimeout, "after SIGTERM, the longest the drain may take: HTTP finishes its requests, the producer flushes, the counter stores and commits, the rater commits what it rated (then everything stops at once); keep it below the orchestrator's grace period")
}

func (o *options) kafkaFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.kafkaBrokers, "kafka-brokers", "", "comma-separated Kafka brokers host:port")
	fs.StringVar(&o.topic, "events-topic", bus.EventsTopic, "Kafka topic of validated events")
	fs.IntVar(&o.partitions, "events-partitions", 8, "partitions of the events topic when it is created")
	fs.IntVar(&o.replication, "replication-factor", 1, "replication factor of topics when they are created")
}

func (o *options) clickhouseFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.chAddr, "clickhouse-addr", "127.0.0.1:9000", "ClickHouse native protocol host:port")
	fs.StringVar(&o.chDatabase, "clickhouse-database", "maumeter", "ClickHouse database")
	fs.StringVar(&o.chUser, "clickhouse-user", "default", "ClickHouse user")
	fs.StringVar(&o.chPassword, "clickhouse-password", "", "ClickHouse password")
}

func (o *options) commonFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.tenants, "tenants", "tenants.yaml", "tenant catalogue (YAML)")
}

func (o *options) countFlags(fs *flag.FlagSet) {
	o.closerFlags(fs)
	fs.DurationVar(&o.flushInterval, "flush-interval", time.Second, "longest a first-seen device waits before it is written to ClickHouse")
	fs.DurationVar(&o.checkpoint, "checkpoint-interval", 10*time.Second, "how often partition rollups (sketches) are stored and offsets committed: the most a crash replays")
	fs.DurationVar(&o.sessionTimeout, "session-timeout", 10*time.Second, "consumer-group session timeout: how soon a dead counter's partitions move")
	fs.DurationVar(&o.capInterval, "cap-interval", time.Second, "how often the counter that owns partition 0 publishes the POC tenant-months' counted devices to the caps topic")
}

// closerFlags: what a month close needs, in the counter and in the commands that close
// (close, import): the counters' group whose progress it waits for, and when months close.
func (o *options) closerFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.group, "count-group", bus.CountGroup, "consumer group of the counters")
	o.closeFlags(fs)
}

// loadCatalogs loads the plan catalogue (--plans) and the tenant catalogue checked against it.
func (o *options) loadCatalogs() (*plan.Catalog, *tenant.Catalog, error) {
	plans, err := plan.LoadCatalog(o.plans)
	if err != nil {
		return nil, nil, err
	}
	tenants, err := plans.LoadTenants(o.tenants)
	if err != nil {
		return nil, nil, err
	}
	return plans, tenants, nil
}

// plansFlags: the plan catalogue. The rater prices with it; the gateway and the counter take
// the POC caps from it (plan.Catalog.DailyCaps), so every role reads the same file. Every
// command that reads the tenant catalogue takes it too (loadCatalogs), since a tenant catalogue
// naming a plan only a custom catalogue holds is refused against the embedded one.
func (o *options) plansFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.plans, "plans", "", "plan catalogue (YAML, schemas/catalog/plans.schema.json); empty: the embedded one, the billing overview's plans")
}

// capsFlags: the topic the counter publishes POC cap states to and gateways read them from.
func (o *options) capsFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.capsTopic, "caps-topic", bus.CapsTopic, "compacted Kafka topic of POC cap states (counted devices of POC tenant-months)")
}

func (o *options) closeFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.rollupsTopic, "rollups-topic", bus.RollupsTopic, "compacted Kafka topic of monthly rollups")
	fs.DurationVar(&o.closeGrace, "close-grace", count.DefaultGrace, "a month closes this long after it ends in the tenant's time zone (at most 71h: it must be rated before the end of day 3 of the next month)")
	fs.DurationVar(&o.closeInterval, "close-interval", 10*time.Second, "how often the closer checks for months to close or restate")
	fs.DurationVar(&o.closeWindow, "close-window", 35*24*time.Hour, "months whose close time is older than this close only by import or \"maumeter close\"")
}

func (o *options) closeConfig() count.CloseConfig {
	return count.CloseConfig{Grace: o.closeGrace, CheckInterval: o.closeInterval, AutoWindow: o.closeWindow, RollupsTopic: o.rollupsTopic}
}

func (o *options) ingestFlags(fs *flag.FlagSet) {
	fs.DurationVar(&o.maxEventAge, "max-event-age", event.DefaultBounds.MaxAge, "oldest event ts accepted, relative to now")
	fs.DurationVar(&o.maxEventFuture, "max-event-future", event.DefaultBounds.MaxFuture, "furthest event ts accepted ahead of now")
	fs.Float64Var(&o.tenantRate, "tenant-rate", 20000, "events/s each tenant may send to this gateway (token bucket; 0: no limit; the catalogue's ingest_limit overrides it)")
	fs.IntVar(&o.tenantBurst, "tenant-burst", 0, "token bucket size in events (0: 2 s of --tenant-rate, at least one full batch)")
	fs.IntVar(&o.maxInFlight, "max-inflight", 256, "ingest requests served at once; more get 429")
	fs.DurationVar(&o.http.ReadHeader, "http-read-header-timeout", 5*time.Second, "longest a client may take to send the request headers")
	fs.DurationVar(&o.http.Read, "http-read-timeout", 30*time.Second, "longest a client may take to send a whole request, body included")
}

// keysFlags are the flags of the roles that authenticate requests (ingest keys, read keys).
func (o *options) keysFlags(fs *flag.FlagSet) {
	fs.DurationVar(&o.keysReload, "keys-reload", 10*time.Second, "how often to reload the ingest, read and operator keys from the catalogue when it changed (0: never)")
}

func (o *options) brokers() ([]string, error) {
	b, err := bus.SplitBrokers(o.kafkaBrokers)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	return b, nil
}

func (o *options) chConfig() chstore.Config {
	return chstore.Config{Addr: o.chAddr, Database: o.chDatabase, Username: o.chUser, Password: o.chPassword}
}

// stack is what a role runs: the parts are nil when the role does not use them.
type stack struct {
	log      *slog.Logger
	reg      *prometheus.Registry
	plans    *plan.Catalog
	catalog  *tenant.Catalog
	brokers  []string
	store    *chstore.Store
	producer *bus.Producer
	ingest   *ingest.Handler
	counter  *count.Counter
	rater    *rate.Rater
	embedded *bus.Embedded
	caps     *caps.State         // the gateway's POC cap state; nil without ingest
	keys     *tenant.Keyring     // ingest keys; nil: the catalogue's
	readKeys *tenant.ReadKeyring // read and operator keys; nil: the catalogue's
	auth     *api.Auth           // guards the reads; nil when the role serves none
	closers  []func()

	// closeProducer flushes and closes the producer once (the drain, then close).
	closeProducer func() error
}

func (s *stack) close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
}

type roleParts struct {
	ingest, count, rate, embeddedKafka bool
}

// build wires a role: catalogue, Kafka (embedded when allowed and no brokers are given),
// ClickHouse (migrated when asked), topics, producer and counter.
func build(ctx context.Context, o *options, parts roleParts, stderr io.Writer) (*stack, error) {
	log, err := newLogger(stderr, o.logLevel)
	if err != nil {
		return nil, err
	}
	s := &stack{log: log, reg: prometheus.NewRegistry()}
	s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ok := false
	defer func() {
		if !ok {
			s.close()
		}
	}()
	if s.plans, s.catalog, err = o.loadCatalogs(); err != nil {
		return nil, err
	}
	log.Info("catalogues loaded", "tenants_file", o.tenants, "tenants", len(s.catalog.Tenants), "plans", s.plans.Name())
	if v := os.Getenv(clock.Env); v != "" {
		log.Warn("the clock is set for tests: months, windows and invoices follow it, not the wall clock",
			clock.Env, v, clock.EnvAt, os.Getenv(clock.EnvAt), "now", o.now().UTC().Format(time.RFC3339))
	}
	if s.brokers, err = o.brokers(); err != nil {
		return nil, err
	}
	if len(s.brokers) == 0 && (parts.ingest || parts.count || parts.rate) {
		if !parts.embeddedKafka {
			return nil, fmt.Errorf("%w: --kafka-brokers (MAUMETER_KAFKA_BROKERS) is required", errUsage)
		}
		if s.embedded, err = bus.StartEmbedded(0, ""); err != nil {
			return nil, err
		}
		s.closers = append(s.closers, s.embedded.Close)
		s.brokers = s.embedded.Brokers()
		log.Warn("no --kafka-brokers given: started an in-process Kafka (kfake); events live in memory only, for demos and development",
			"brokers", s.brokers)
	}
	if parts.count || parts.rate || o.migrate {
		if s.store, err = chstore.Open(ctx, o.chConfig(), log); err != nil {
			return nil, err
		}
		s.closers = append(s.closers, func() { s.store.Close() })
	}
	if o.migrate || s.embedded != nil {
		if err := setupInfra(ctx, o, s.brokers, s.store, log); err != nil {
			return nil, err
		}
	}
	if parts.ingest {
		s.producer = bus.NewProducer(s.brokers, o.topic)
		s.closeProducer = sync.OnceValue(s.producer.Close) // the drain closes it first (runRoles)
		s.closers = append(s.closers, func() { s.closeProducer() })
		s.caps, err = caps.NewState(caps.StateConfig{Brokers: s.brokers, Topic: o.capsTopic, Window: o.maxEventAge}, s.catalog, s.plans, o.now, log, s.reg)
		if err != nil {
			return nil, err
		}
	}
	if parts.count {
		pub, err := caps.NewPublisher(caps.PublisherConfig{Brokers: s.brokers, Topic: o.capsTopic, Interval: o.capInterval,
			Window: o.maxEventAge}, s.catalog, s.plans, s.store, o.now, log, s.reg)
		if err != nil {
			return nil, err
		}
		s.counter, err = count.New(count.Config{
			Brokers: s.brokers, Topic: o.topic, Group: o.group,
			FlushInterval: o.flushInterval, CheckpointInterval: o.checkpoint,
			SessionTimeout: o.sessionTimeout, RebalanceTimeout: o.sessionTimeout,
			Close: o.closeConfig(), LeaderTasks: []func(context.Context){pub.Run},
		}, s.catalog, s.store, o.now, log, s.reg)
		if err != nil {
			return nil, err
		}
	}
	if parts.rate {
		// The rater prices with the plan catalogue; the tenants were checked against it above.
		s.rater, err = rate.New(rate.Config{Brokers: s.brokers, RollupsTopic: o.rollupsTopic, Group: o.rateGroup},
			s.catalog, s.plans, s.store, o.now, log, s.reg)
		if err != nil {
			return nil, err
		}
	}
	ok = true
	return s, nil
}

// setupInfra applies the ClickHouse migrations and creates the Kafka topics.
func setupInfra(ctx context.Context, o *options, brokers []string, store *chstore.Store, log *slog.Logger) error {
	if store != nil {
		applied, err := store.Migrate(ctx)
		if err != nil {
			return err
		}
		log.Info("clickhouse migrated", "database", o.chDatabase, "applied", applied)
	}
	if len(brokers) == 0 {
		log.Warn("no --kafka-brokers given: Kafka topics not checked or created")
	} else {
		tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		t := bus.Topic{Name: o.topic, Partitions: o.partitions, ReplicationFactor: o.replication}
		if err := bus.EnsureTopic(tctx, brokers, t, log); err != nil {
			return err
		}
		if o.rollupsTopic == "" {
			o.rollupsTopic = bus.RollupsTopic
		}
		if o.capsTopic == "" {
			o.capsTopic = bus.CapsTopic
		}
		for _, name := range []string{o.rollupsTopic, o.capsTopic} {
			t := bus.Topic{Name: name, Partitions: 1, ReplicationFactor: o.replication,
				Configs: map[string]string{"cleanup.policy": "compact"}}
			if err := bus.EnsureTopic(tctx, brokers, t, log); err != nil {
				return err
			}
		}
	}
	return nil
}

// handler returns the HTTP surface of the stack.
func (s *stack) handler(o *options) (http.Handler, error) {
	cfg := api.Config{Catalog: s.catalog, Gatherer: s.reg, Now: o.now, Log: s.log}
	if s.producer != nil {
		h, err := ingest.New(ingest.Config{
			Bounds:      event.Bounds{MaxAge: o.maxEventAge, MaxFuture: o.maxEventFuture},
			TenantLimit: tenant.IngestLimit{EventsPerSecond: o.tenantRate, Burst: o.tenantBurst},
			MaxInFlight: o.maxInFlight,
		}, s.catalog, s.producer, s.caps, o.now, s.log, s.reg)
		if err != nil {
			return nil, err
		}
		if s.keys != nil {
			h.SetKeyring(s.keys)
		}
		if s.keys == nil && s.catalog.Keyring().Len() == 0 {
			s.log.Warn("the tenant catalogue holds no ingest_keys: every POST /v1/events will get 401 (create keys with `maumeter keys new`)")
		}
		s.ingest = h
		cfg.Ingest = h
		cfg.Ready = append(cfg.Ready, api.Check{Name: "caps", Fn: s.caps.Ready})
	}
	if s.counter != nil {
		cfg.MAU = s.counter
	} else if s.store != nil {
		cfg.MAU = s.store
		cfg.Ready = append(cfg.Ready, api.Check{Name: "clickhouse", Fn: s.store.Ping})
	}
	if s.store != nil {
		cfg.Invoices = rate.Reader{Store: s.store}
		// The MAU read prices the month to date and projects it: every role that serves it
		// has the plan catalogue and ClickHouse (ingest serves no reads).
		cfg.Plans, cfg.Usage = s.plans, s.store
	}
	if cfg.MAU != nil || cfg.Invoices != nil {
		keys := s.readKeys
		if keys == nil {
			keys = s.catalog.ReadKeyring()
			if keys.Len() == 0 {
				s.log.Warn("the tenant catalogue holds no read_keys and no operator_keys: every MAU and invoice read will get 401 (create keys with `maumeter keys new --read`)")
			}
		}
		auth, err := api.NewAuth(keys, s.log, s.reg)
		if err != nil {
			return nil, err
		}
		s.auth = auth
		cfg.Auth = auth
	}
	if s.counter != nil {
		counter := s.counter
		cfg.Ready = append(cfg.Ready, api.Check{Name: "counter", Fn: func(context.Context) error {
			if since := time.Since(counter.LastProgress()); since > time.Minute {
				return fmt.Errorf("no progress for %s", since.Round(time.Second))
			}
			return nil
		}})
	}
	return api.New(cfg), nil
}

// serveHTTP serves h on addr until ctx ends, then shuts down gracefully. ready, if not nil,
// receives the bound address.
// It stops accepting at once and gives the requests in flight up to drain to finish.
func serveHTTP(ctx context.Context, addr string, h http.Handler, timeouts api.Timeouts, drain time.Duration, log *slog.Logger, ready chan<- string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	srv := api.NewServer(h, timeouts)
	log.Info("http listening", "addr", ln.Addr().String())
	if ready != nil {
		ready <- ln.Addr().String()
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("http: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	start := time.Now()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("http shutdown: %w", err)
	}
	log.Info("http drained", "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// runRoles runs HTTP (with the gateway's cap state), the counter and the rater, whichever the
// stack has, until ctx ends (SIGTERM, SIGINT) or one of them ends.
//
// When ctx ends the roles stop one after the other, in reverse data-flow order, within
// --shutdown-timeout: HTTP stops accepting and finishes the ingest requests in flight (each is
// answered only once Kafka has its events), then the producer flushes and closes, then the cap
// state stops, then the counter makes its final flush and commit, then the rater commits what it
// stored. Past the deadline, or when a role ends on its own (a failure), everything stops at
// once, as a crash would: nothing acknowledged is lost either way (Kafka holds it and the
// counter replays from its last commit), a clean stop only spares the replay.
func runRoles(ctx context.Context, o *options, s *stack, ready chan<- string) error {
	h, err := s.handler(o)
	if err != nil {
		return err
	}
	timeout := o.shutdownTimeout
	if timeout <= 0 {
		timeout = DefaultShutdownTimeout
	}
	// The watchers and every stage run on contexts of their own (keeping ctx's values), so that
	// ctx ending starts the drain instead of stopping everything.
	base := context.WithoutCancel(ctx)
	bg, stopBG := context.WithCancel(base)
	defer stopBG()
	// Reloads parse the catalogue against the plans the role started with (--plans).
	plans := tenant.KnownPlans(s.plans.IDs()...)
	if s.ingest != nil && s.keys == nil && o.keysReload > 0 {
		go s.ingest.WatchKeys(bg, o.tenants, o.keysReload, plans)
	}
	if s.auth != nil && s.readKeys == nil && o.keysReload > 0 {
		go s.auth.WatchKeys(bg, o.tenants, o.keysReload, plans)
	}
	type stage struct {
		name  string
		run   func(context.Context) error
		after func() // once run has returned in a drain: the producer flushes
		stop  context.CancelFunc
		done  chan struct{}
		err   error
	}
	stages := []*stage{{name: "http", run: func(ctx context.Context) error {
		return serveHTTP(ctx, o.httpAddr, h, o.http, timeout, s.log, ready)
	}}}
	if s.producer != nil {
		stages[0].after = func() {
			if err := s.closeProducer(); err != nil {
				s.log.Warn("producer flush", "err", err)
			}
		}
	}
	if s.caps != nil {
		stages = append(stages, &stage{name: "caps", run: func(ctx context.Context) error { s.caps.Run(ctx); return nil }}) // returns when ctx ends
	}
	if s.counter != nil {
		stages = append(stages, &stage{name: "counter", run: s.counter.Run})
	}
	if s.rater != nil {
		stages = append(stages, &stage{name: "rater", run: s.rater.Run})
	}
	ended := make(chan *stage, len(stages))
	for _, st := range stages {
		var sctx context.Context
		sctx, st.stop = context.WithCancel(base)
		st.done = make(chan struct{})
		go func() {
			st.err = st.run(sctx)
			close(st.done)
			ended <- st
		}()
	}
	stopAll := func() {
		for _, st := range stages {
			st.stop()
		}
	}
	waitAll := func() error {
		var errs []error
		for _, st := range stages {
			<-st.done
			if st.err != nil {
				errs = append(errs, st.err)
			}
		}
		return errors.Join(errs...)
	}
	select {
	case st := <-ended:
		// A role ended on its own: the others stop at once; the first error wins.
		stopAll()
		first := st.err
		if err := waitAll(); first == nil {
			first = err
		}
		return first
	case <-ctx.Done():
	}
	start := time.Now()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	s.log.Info("stopping: draining in reverse data-flow order", "shutdown_timeout", timeout)
	for _, st := range stages {
		st.stop()
		select {
		case <-st.done:
		case <-deadline.C:
			stopAll()
			s.log.Error("shutdown deadline exceeded: stopping everything at once; the counter replays from its last commit",
				"stage", st.name, "shutdown_timeout", timeout)
			waitAll()
			return fmt.Errorf("shutdown: %s did not stop within --shutdown-timeout %s", st.name, timeout)
		}
		if st.after != nil {
			st.after()
		}
		s.log.Info("stopped", "stage", st.name, "after", time.Since(start).Round(time.Millisecond))
	}
	s.log.Info("drained", "took", time.Since(start).Round(time.Millisecond))
	return waitAll()
}

func runServe(ctx context.Context, now func() time.Time, args []string, stdout, stderr io.Writer) error {
	o := &options{now: now}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	o.commonFlags(fs)
	o.kafkaFlags(fs)
	o.clickhouseFlags(fs)
	o.countFlags(fs)
	o.ingestFlags(fs)
	o.keysFlags(fs)
	o.rateFlags(fs)
	o.capsFlags(fs)
	o.shutdownFlags(fs)
	o.plansFlags(fs)
	fs.StringVar(&o.httpAddr, "http-addr", "127.0.0.1:8080", "HTTP listen address")
	fs.BoolVar(&o.migrate, "migrate", true, "apply ClickHouse migrations and create topics at start")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	s, err := build(ctx, o, roleParts{ingest: true, count: true, rate: true, embeddedKafka: true}, stderr)
	if err != nil {
		return err
	}
	defer s.close()
	return runRoles(ctx, o, s, nil)
}

func runIngest(ctx context.Context, now func() time.Time, args []string, stdout, stderr io.Writer) error {
	o := &options{now: now}
	fs := flag.NewFlagSet("ingest", flag.ContinueOnError)
	o.commonFlags(fs)
	o.kafkaFlags(fs)
	o.ingestFlags(fs)
	o.keysFlags(fs)
	o.capsFlags(fs)
	o.shutdownFlags(fs)
	o.plansFlags(fs)
	fs.StringVar(&o.httpAddr, "http-addr", "127.0.0.1:8080", "HTTP listen address")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	s, err := build(ctx, o, roleParts{ingest: true}, stderr)
	if err != nil {
		return err
	}
	defer s.close()
	return runRoles(ctx, o, s, nil)
}

func runCount(ctx context.Context, now func() time.Time, args []string, stdout, stderr io.Writer) error {
	o := &options{now: now}
	fs := flag.NewFlagSet("count", flag.ContinueOnError)
	o.commonFlags(fs)
	o.kafkaFlags(fs)
	o.clickhouseFlags(fs)
	o.countFlags(fs)
	o.keysFlags(fs)
	o.capsFlags(fs)
	o.shutdownFlags(fs)
	o.plansFlags(fs)
	fs.StringVar(&o.httpAddr, "http-addr", "127.0.0.1:9464", "HTTP listen address of /metrics, /healthz, /readyz and MAU and invoice reads")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	s, err := build(ctx, o, roleParts{count: true}, stderr)
	if err != nil {
		return err
	}
	defer s.close()
	return runRoles(ctx, o, s, nil)
}

func runMigrate(ctx context.Context, now func() time.Time, args []string, stdout, stderr io.Writer) error {
	o := &options{now: now, migrate: true}
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	o.commonFlags(fs)
	o.kafkaFlags(fs)
	o.clickhouseFlags(fs)
	fs.StringVar(&o.rollupsTopic, "rollups-topic", bus.RollupsTopic, "compacted Kafka topic of monthly rollups")
	o.capsFlags(fs)
	o.plansFlags(fs)
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	s, err := build(ctx, o, roleParts{}, stderr)
	if err != nil {
		return err
	}
	s.close()
	return nil
}

func runHealthcheck(ctx context.Context, _ func() time.Time, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	url := fs.String("url", "http://127.0.0.1:8080/healthz", "URL that must answer 200")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *url, nil)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s", *url, resp.Status)
	}
	return nil
}
