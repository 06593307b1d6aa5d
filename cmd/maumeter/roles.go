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
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/maumeter/maumeter/internal/clock"
	"github.com/maumeter/maumeter/internal/secure"
	"github.com/maumeter/maumeter/pipeline/api"
	"github.com/maumeter/maumeter/pipeline/archive"
	"github.com/maumeter/maumeter/pipeline/bus"
	"github.com/maumeter/maumeter/pipeline/caps"
	"github.com/maumeter/maumeter/pipeline/chstore"
	"github.com/maumeter/maumeter/pipeline/count"
	"github.com/maumeter/maumeter/pipeline/ingest"
	"github.com/maumeter/maumeter/pipeline/quota"
	"github.com/maumeter/maumeter/pipeline/rate"
	"github.com/maumeter/maumeter/pkg/event"
	"github.com/maumeter/maumeter/pkg/plan"
	"github.com/maumeter/maumeter/pkg/tenant"
)

// options are the flags shared by the roles. Each is also read from MAUMETER_<FLAG>.
type options struct {
	now                 func() time.Time // the process clock: every calendar decision (internal/clock)
	logLevel            string
	tenants             string
	plans               string
	kafkaBrokers        string
	topic               string
	partitions          int
	replication         int
	minInSync           int
	retention           time.Duration // of the events topic when created; 0: minRetention
	allowShortRetention bool
	group               string
	chAddr              string
	chDatabase          string
	chUser              string
	chPasswordFile      string       // the password: this file, or MAUMETER_CLICKHOUSE_PASSWORD
	chTLS               bool         // native protocol over TLS (implied by a TLS file)
	chTLSFiles          secure.Files // CA, client certificate and key of the ClickHouse connection
	kafka               kafkaSecurity
	tlsCertFile         string // the HTTP listener's certificate and key: HTTPS when set
	tlsKeyFile          string
	httpAddr            string
	maxEventAge         time.Duration
	maxEventFuture      time.Duration
	tenantRate          float64
	tenantBurst         int
	maxInFlight         int
	keysReload          time.Duration
	http                api.Timeouts
	flushInterval       time.Duration
	checkpoint          time.Duration
	sessionTimeout      time.Duration
	rollupsTopic        string
	closeGrace          time.Duration
	closeInterval       time.Duration
	closeWindow         time.Duration
	capsTopic           string
	capInterval         time.Duration
	migrate             bool
	rateGroup           string
	archiveGroup        string        // consumer group of the archive role
	archiveTTL          time.Duration // how long the events table keeps an event (0: forever)
	archiveBatch        int
	archive             bool // serve: run the archive role too
	parkedTopic         string
	dlqTopic            string
	quotaTopic          string
	quotaInterval       time.Duration
	parkedInterval      time.Duration
	catalogReload       time.Duration
	adminAddr           string
	readLimit           api.ReadLimit
	operatorLimit       api.ReadLimit
	tenantInFlight      int
	// shutdownTimeout bounds the drain after SIGTERM (runRoles): HTTP, producer, counter, rater.
	shutdownTimeout time.Duration
}

// kafkaSecurity: how to reach the brokers beyond their addresses (TLS, SASL).
type kafkaSecurity struct {
	tls          bool
	tlsFiles     secure.Files
	saslMech     string
	saslUser     string
	passwordFile string // the SASL password: this file, or MAUMETER_KAFKA_SASL_PASSWORD
}

// Secrets are never flags (flags show in ps and in shell history): each is an environment
// variable or a file named by a flag. parseFlags refuses the flags people will try.
const (
	envClickHousePassword = "MAUMETER_CLICKHOUSE_PASSWORD"
	envKafkaSASLPassword  = "MAUMETER_KAFKA_SASL_PASSWORD"
)

var refusedFlags = map[string]string{
	"clickhouse-password": "set " + envClickHousePassword + " or --clickhouse-password-file instead",
	"kafka-sasl-password": "set " + envKafkaSASLPassword + " or --kafka-sasl-password-file instead",
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
	fs.BoolVar(&o.kafka.tls, "kafka-tls", false, "connect to Kafka over TLS (1.2 or later; implied by the --kafka-tls-*-file flags)")
	fs.StringVar(&o.kafka.tlsFiles.CAFile, "kafka-tls-ca-file", "", "PEM CA certificates that sign the brokers' certificates (empty: the system's roots)")
	fs.StringVar(&o.kafka.tlsFiles.CertFile, "kafka-tls-cert-file", "", "PEM client certificate for mutual TLS (with --kafka-tls-key-file)")
	fs.StringVar(&o.kafka.tlsFiles.KeyFile, "kafka-tls-key-file", "", "PEM private key of --kafka-tls-cert-file")
	fs.StringVar(&o.kafka.saslMech, "kafka-sasl-mechanism", "", "SASL authentication with Kafka: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (empty: none)")
	fs.StringVar(&o.kafka.saslUser, "kafka-sasl-username", "", "SASL username")
	fs.StringVar(&o.kafka.passwordFile, "kafka-sasl-password-file", "", "file holding the SASL password (else "+envKafkaSASLPassword+"; never a flag)")
	fs.StringVar(&o.topic, "events-topic", bus.EventsTopic, "Kafka topic of validated events")
	fs.IntVar(&o.partitions, "events-partitions", 8, "partitions of the events topic when it is created")
	fs.IntVar(&o.replication, "replication-factor", 3, "replication factor of topics when they are created (refused above the number of brokers; 1 for a single development broker)")
	fs.IntVar(&o.minInSync, "min-insync-replicas", 0, "min.insync.replicas of created topics: replicas that must have an event before it is acknowledged (0: replication factor - 1, at least 1)")
}

// retentionFlags: the retention of the events topic, which must outlast the longest time the
// counters may not consume (docs/OPERATIONS.md, "Retention").
func (o *options) retentionFlags(fs *flag.FlagSet) {
	fs.DurationVar(&o.retention, "events-retention", 0, "retention.ms of the events topic when it is created (0: --close-window + --close-grace, the least the counters need)")
	fs.BoolVar(&o.allowShortRetention, "allow-short-retention", false, "start although the events topic keeps records less than --close-window + --close-grace (warns instead of refusing)")
}

// minRetention is the least the events topic must keep records: a month closes until
// --close-window after its close time, and a counter that stops consuming (a ClickHouse outage)
// must find every event still there when it resumes.
func (o *options) minRetention() time.Duration {
	window, grace := o.closeWindow, o.closeGrace
	if window <= 0 {
		window = defaultCloseWindow
	}
	if grace <= 0 {
		grace = count.DefaultGrace
	}
	return window + grace
}

// topicReplicas validates the replication flags and returns the replication factor and
// min.insync.replicas of created topics.
func (o *options) topicReplicas() (int, int, error) {
	rf, isr := o.replication, o.minInSync
	if rf < 1 {
		return 0, 0, fmt.Errorf("%w: --replication-factor %d: want at least 1", errUsage, rf)
	}
	if isr == 0 {
		isr = max(1, rf-1)
	}
	if isr < 1 || isr > rf {
		return 0, 0, fmt.Errorf("%w: --min-insync-replicas %d: want 1 to the replication factor (%d)", errUsage, isr, rf)
	}
	return rf, isr, nil
}

// eventsRetention is the retention.ms of a created events topic.
func (o *options) eventsRetention() (time.Duration, error) {
	if o.retention < 0 {
		return 0, fmt.Errorf("%w: --events-retention %s: want a positive duration (0: the minimum)", errUsage, o.retention)
	}
	if o.retention == 0 {
		return o.minRetention(), nil
	}
	if o.retention < o.minRetention() && !o.allowShortRetention {
		return 0, fmt.Errorf("%w: --events-retention %s is less than --close-window + --close-grace (%s): "+
			"a counter stopped longer would lose events (--allow-short-retention to accept that)", errUsage, o.retention, o.minRetention())
	}
	return o.retention, nil
}

// checkRetention refuses to start (or warns, with --allow-short-retention) when the events
// topic on the brokers keeps records less than minRetention, and refuses a compacted one.
func (o *options) checkRetention(ctx context.Context, kafka *bus.Net, log *slog.Logger) error {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err := bus.CheckEventsTopic(cctx, kafka, o.topic, o.minRetention())
	switch {
	case errors.Is(err, bus.ErrShortRetention) && o.allowShortRetention:
		log.Warn("events topic retention is shorter than the counters need; starting anyway (--allow-short-retention)", "err", err)
	case errors.Is(err, bus.ErrShortRetention):
		return fmt.Errorf("%w (or start with --allow-short-retention)", err)
	case errors.Is(err, bus.ErrTopicNotFound):
		return nil
	case err != nil:
		return err
	}
	if st.RetentionBytes >= 0 {
		log.Warn("events topic has a size limit (retention.bytes): records may be deleted before --close-window + --close-grace",
			"topic", o.topic, "retention_bytes", st.RetentionBytes)
	}
	if _, isr, err := o.topicReplicas(); err == nil && st.MinInSyncReplicas < isr {
		log.Warn("events topic has fewer min.insync.replicas than configured; an acknowledged event may sit on fewer replicas",
			"topic", o.topic, "min_insync_replicas", st.MinInSyncReplicas, "configured", isr)
	}
	return nil
}

func (o *options) clickhouseFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.chAddr, "clickhouse-addr", "127.0.0.1:9000", "ClickHouse native protocol host:port")
	fs.StringVar(&o.chDatabase, "clickhouse-database", "maumeter", "ClickHouse database")
	fs.StringVar(&o.chUser, "clickhouse-user", "default", "ClickHouse user")
	fs.StringVar(&o.chPasswordFile, "clickhouse-password-file", "", "file holding the ClickHouse password (else "+envClickHousePassword+"; never a flag)")
	fs.BoolVar(&o.chTLS, "clickhouse-tls", false, "connect to ClickHouse's secure native port over TLS (1.2 or later; implied by the --clickhouse-tls-*-file flags)")
	fs.StringVar(&o.chTLSFiles.CAFile, "clickhouse-tls-ca-file", "", "PEM CA certificates that sign ClickHouse's certificate (empty: the system's roots)")
	fs.StringVar(&o.chTLSFiles.CertFile, "clickhouse-tls-cert-file", "", "PEM client certificate for mutual TLS (with --clickhouse-tls-key-file)")
	fs.StringVar(&o.chTLSFiles.KeyFile, "clickhouse-tls-key-file", "", "PEM private key of --clickhouse-tls-cert-file")
}

// httpTLSFlags: HTTPS on the role's listener.
func (o *options) httpTLSFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.tlsCertFile, "tls-cert-file", "", "PEM certificate (chain) of the HTTP listener: HTTPS, TLS 1.2 or later, reloaded when the file changes (with --tls-key-file)")
	fs.StringVar(&o.tlsKeyFile, "tls-key-file", "", "PEM private key of --tls-cert-file")
}

func (o *options) commonFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.tenants, "tenants", "tenants.yaml", "tenant catalogue (YAML)")
}

func (o *options) countFlags(fs *flag.FlagSet) {
	o.closerFlags(fs)
	fs.DurationVar(&o.flushInterval, "flush-interval", time.Second, "longest a first-seen device waits before it is written to ClickHouse")
	fs.DurationVar(&o.quotaInterval, "quota-interval", 10*time.Second, "how often the counter that owns partition 0 looks for quota crossings (80 %, 100 % of the included MAU, a POC cap) to notify")
	fs.DurationVar(&o.checkpoint, "checkpoint-interval", 10*time.Second, "how often partition rollups (sketches) are stored and offsets committed: the most a crash replays")
	fs.DurationVar(&o.sessionTimeout, "session-timeout", 10*time.Second, "consumer-group session timeout: how soon a dead counter's partitions move")
	fs.DurationVar(&o.capInterval, "cap-interval", time.Second, "how often the counter that owns partition 0 publishes the POC tenant-months' counted devices to the caps topic")
	fs.DurationVar(&o.parkedInterval, "parked-interval", 10*time.Second, "how often the counter that owns partition 0 looks for parked events it can replay (also at once after a catalogue reload)")
	fs.DurationVar(&o.catalogReload, "catalog-reload", 10*time.Second, "how often the counter reloads its tenant catalogue when the file changed (0: never); events of tenants it learns are replayed from the parked topic")
	o.sideTopicFlags(fs)
}

// sideTopicFlags: the topics of the events the counter cannot place yet (parked) or cannot
// decode (DLQ).
func (o *options) sideTopicFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.parkedTopic, "parked-topic", bus.ParkedTopic, "Kafka topic of parked events (tenant or app unknown to the counter's catalogue yet)")
	fs.StringVar(&o.dlqTopic, "dlq-topic", bus.DLQTopic, "Kafka topic of records the counter cannot decode (dead-letter queue)")
	fs.StringVar(&o.quotaTopic, "quota-topic", bus.QuotaTopic, "compacted Kafka topic of quota notices (80 %, 100 % of the included MAU, a POC cap) and their webhook deliveries")
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
	fs.DurationVar(&o.closeInterval, "close-interval", 10*time.Second, "how often the closer checks for months to close or restate")
	o.closeTimeFlags(fs)
}

// defaultCloseWindow is --close-window's default: 35 days, the ingest window.
const defaultCloseWindow = 35 * 24 * time.Hour

// closeTimeFlags: when months close; the events topic's minimum retention derives from them.
func (o *options) closeTimeFlags(fs *flag.FlagSet) {
	fs.DurationVar(&o.closeGrace, "close-grace", count.DefaultGrace, "a month closes this long after it ends in the tenant's time zone (at most 71h: it must be rated before the end of day 3 of the next month)")
	fs.DurationVar(&o.closeWindow, "close-window", defaultCloseWindow, "months whose close time is older than this close only by import or \"maumeter close\"")
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
	fs.IntVar(&o.tenantInFlight, "tenant-max-inflight", 0, "ingest requests of one tenant served at once, inside --max-inflight; more get 429 (0: a quarter of --max-inflight; the catalogue's ingest_limit.max_inflight overrides it)")
	fs.DurationVar(&o.http.ReadHeader, "http-read-header-timeout", 5*time.Second, "longest a client may take to send the request headers")
	fs.DurationVar(&o.http.Read, "http-read-timeout", 30*time.Second, "longest a client may take to send a whole request, body included")
}

// adminFlags: the admin listener of a long-running role (/metrics, /debug/pprof/).
func (o *options) adminFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.adminAddr, "admin-addr", "", "listen address of /metrics and /debug/pprof/, apart from the public listener: a loopback or monitoring-network address (empty: not served)")
}

// readLimitFlags: the rate limits of the MAU and invoice reads, per key.
func (o *options) readLimitFlags(fs *flag.FlagSet) {
	fs.Float64Var(&o.readLimit.PerSecond, "read-rate", 5, "MAU and invoice reads per second each read key may make (token bucket; 0: no limit); more get 429")
	fs.IntVar(&o.readLimit.Burst, "read-burst", 20, "token bucket size of each read key, in requests (0: one second of --read-rate)")
	fs.Float64Var(&o.operatorLimit.PerSecond, "operator-read-rate", 50, "MAU and invoice reads per second each operator key may make (0: no limit)")
	fs.IntVar(&o.operatorLimit.Burst, "operator-read-burst", 100, "token bucket size of each operator key, in requests (0: one second of --operator-read-rate)")
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

// kafkaNet is how this process reaches Kafka: the brokers, TLS and SASL. Build it once and hand
// it to every Kafka client.
func (o *options) kafkaNet() (*bus.Net, error) {
	brokers, err := o.brokers()
	if err != nil {
		return nil, err
	}
	n := &bus.Net{Brokers: brokers}
	if o.kafka.tls || o.kafka.tlsFiles != (secure.Files{}) {
		if n.TLS, err = secure.ClientTLS("kafka", o.kafka.tlsFiles); err != nil {
			return nil, fmt.Errorf("%w: %v", errUsage, err)
		}
	}
	password := ""
	if o.kafka.saslMech == "" && o.kafka.passwordFile != "" {
		return nil, fmt.Errorf("%w: --kafka-sasl-password-file is set but no --kafka-sasl-mechanism", errUsage)
	}
	if o.kafka.saslMech != "" {
		if password, err = secure.Secret("kafka SASL password", envKafkaSASLPassword, o.kafka.passwordFile); err != nil {
			return nil, fmt.Errorf("%w: %v", errUsage, err)
		}
	}
	if n.SASL, err = bus.NewSASL(o.kafka.saslMech, o.kafka.saslUser, password); err != nil {
		return nil, fmt.Errorf("%w: %v (the password: %s or --kafka-sasl-password-file)", errUsage, err, envKafkaSASLPassword)
	}
	if n.Secure() && len(brokers) == 0 {
		return nil, fmt.Errorf("%w: Kafka TLS or SASL is set but no --kafka-brokers (MAUMETER_KAFKA_BROKERS)", errUsage)
	}
	return n, nil
}

// chConfig is the ClickHouse connection: address, credentials (the password from its file or
// the environment) and TLS.
func (o *options) chConfig() (chstore.Config, error) {
	password, err := secure.Secret("clickhouse password", envClickHousePassword, o.chPasswordFile)
	if err != nil {
		return chstore.Config{}, fmt.Errorf("%w: %v", errUsage, err)
	}
	cfg := chstore.Config{Addr: o.chAddr, Database: o.chDatabase, Username: o.chUser, Password: password}
	if o.chTLS || o.chTLSFiles != (secure.Files{}) {
		if cfg.TLS, err = secure.ClientTLS("clickhouse", o.chTLSFiles); err != nil {
			return chstore.Config{}, fmt.Errorf("%w: %v", errUsage, err)
		}
	}
	return cfg, nil
}

// openStore opens ClickHouse with the configured connection.
func (o *options) openStore(ctx context.Context, log *slog.Logger) (*chstore.Store, error) {
	cfg, err := o.chConfig()
	if err != nil {
		return nil, err
	}
	return chstore.Open(ctx, cfg, log)
}

// stack is what a role runs: the parts are nil when the role does not use them.
type stack struct {
	log      *slog.Logger
	reg      *prometheus.Registry
	plans    *plan.Catalog
	catalog  *tenant.Catalog
	kafka    *bus.Net // the brokers and how to reach them (TLS, SASL)
	store    *chstore.Store
	producer *bus.Producer
	ingest   *ingest.Handler
	counter  *count.Counter
	rater    *rate.Rater
	archiver *archive.Archiver
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
	ingest, count, rate, archive, embeddedKafka bool
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
	if s.kafka, err = o.kafkaNet(); err != nil {
		return nil, err
	}
	if len(s.kafka.Brokers) == 0 && (parts.ingest || parts.count || parts.rate || parts.archive) {
		if !parts.embeddedKafka {
			return nil, fmt.Errorf("%w: --kafka-brokers (MAUMETER_KAFKA_BROKERS) is required", errUsage)
		}
		if s.embedded, err = bus.StartEmbedded(0, ""); err != nil {
			return nil, err
		}
		s.closers = append(s.closers, s.embedded.Close)
		s.kafka = bus.Plain(s.embedded.Brokers())
		// One in-memory broker: one replica is all it can hold.
		o.replication, o.minInSync = 1, 1
		log.Warn("no --kafka-brokers given: started an in-process Kafka (kfake); events live in memory only, for demos and development",
			"brokers", s.kafka.Brokers, "replication_factor", 1)
	}
	if parts.count || parts.rate || parts.archive || o.migrate {
		if s.store, err = o.openStore(ctx, log); err != nil {
			return nil, err
		}
		s.closers = append(s.closers, func() { s.store.Close() })
	}
	if o.migrate || s.embedded != nil {
		if err := setupInfra(ctx, o, s.kafka, s.store, log); err != nil {
			return nil, err
		}
	}
	if len(s.kafka.Brokers) > 0 && (parts.count || o.migrate) {
		if err := o.checkRetention(ctx, s.kafka, log); err != nil {
			return nil, err
		}
	}
	if parts.ingest {
		s.producer = bus.NewProducer(s.kafka, o.topic)
		s.closeProducer = sync.OnceValue(s.producer.Close) // the drain closes it first (runRoles)
		s.closers = append(s.closers, func() { s.closeProducer() })
		s.caps, err = caps.NewState(caps.StateConfig{Kafka: s.kafka, Topic: o.capsTopic, Window: o.maxEventAge}, s.catalog, s.plans, o.now, log, s.reg)
		if err != nil {
			return nil, err
		}
	}
	if parts.count {
		pub, err := caps.NewPublisher(caps.PublisherConfig{Kafka: s.kafka, Topic: o.capsTopic, Interval: o.capInterval,
			Window: o.maxEventAge}, s.catalog, s.plans, s.store, o.now, log, s.reg)
		if err != nil {
			return nil, err
		}
		store := s.store
		notifier, err := quota.New(quota.Config{Kafka: s.kafka, Topic: o.quotaTopic, Interval: o.quotaInterval},
			func() *tenant.Catalog { return s.counter.Catalog() }, s.plans,
			func(ctx context.Context, tm chstore.TenantMonth) (map[string]uint64, error) {
				u, err := store.AppUsage(ctx, tm, time.Time{}, time.Time{})
				return u.MAUByApp, err
			}, o.now, log, s.reg)
		if err != nil {
			return nil, err
		}
		s.counter, err = count.New(count.Config{
			Kafka: s.kafka, Topic: o.topic, Group: o.group,
			FlushInterval: o.flushInterval, CheckpointInterval: o.checkpoint,
			SessionTimeout: o.sessionTimeout, RebalanceTimeout: o.sessionTimeout,
			Close: o.closeConfig(), LeaderTasks: []func(context.Context){pub.Run, notifier.Run},
			ParkedTopic: o.parkedTopic, DLQTopic: o.dlqTopic, ParkedInterval: o.parkedInterval,
		}, s.catalog, s.store, o.now, log, s.reg)
		if err != nil {
			return nil, err
		}
	}
	if parts.rate {
		// The rater prices with the plan catalogue; the tenants were checked against it above.
		s.rater, err = rate.New(rate.Config{Kafka: s.kafka, RollupsTopic: o.rollupsTopic, Group: o.rateGroup},
			s.catalog, s.plans, s.store, o.now, log, s.reg)
		if err != nil {
			return nil, err
		}
	}
	if parts.archive {
		catalog := func() *tenant.Catalog { return s.catalog }
		if s.counter != nil {
			catalog = s.counter.Catalog // the counter's, reloaded
		}
		s.archiver, err = archive.New(archive.Config{Kafka: s.kafka, Topic: o.topic, Group: o.archiveGroup, BatchRows: o.archiveBatch},
			catalog, s.store, log, s.reg)
		if err != nil {
			return nil, err
		}
		if err := s.store.SetEventsTTL(ctx, o.archiveTTL); err != nil {
			return nil, err
		}
	}
	ok = true
	return s, nil
}

// setupInfra applies the ClickHouse migrations and creates the Kafka topics.
func setupInfra(ctx context.Context, o *options, kafka *bus.Net, store *chstore.Store, log *slog.Logger) error {
	if store != nil {
		applied, err := store.Migrate(ctx)
		if err != nil {
			return err
		}
		log.Info("clickhouse migrated", "database", o.chDatabase, "applied", applied)
	}
	if len(kafka.Brokers) == 0 {
		log.Warn("no --kafka-brokers given: Kafka topics not checked or created")
	} else {
		rf, isr, err := o.topicReplicas()
		if err != nil {
			return err
		}
		retention, err := o.eventsRetention()
		if err != nil {
			return err
		}
		defaultTo(&o.rollupsTopic, bus.RollupsTopic)
		defaultTo(&o.capsTopic, bus.CapsTopic)
		defaultTo(&o.parkedTopic, bus.ParkedTopic)
		defaultTo(&o.dlqTopic, bus.DLQTopic)
		defaultTo(&o.quotaTopic, bus.QuotaTopic)
		minISR := strconv.Itoa(isr)
		// Every topic the roles use, with its partitions and what its records are:
		//   - events: the acknowledged events, kept --events-retention (at least the close
		//     window and grace, checked by count, serve and migrate);
		//   - rollups, caps and quota notices: the latest state per key, compacted;
		//   - parked and dead-letter: acknowledged events waiting for an operator or a catalogue,
		//     kept until removed (retention.ms -1), one partition each (ordering does not matter
		//     to sets; the volume is what the counter could not place).
		topics := []struct {
			name       string
			partitions int
			configs    map[string]string
		}{
			{o.topic, o.partitions, map[string]string{"cleanup.policy": "delete", "retention.ms": strconv.FormatInt(retention.Milliseconds(), 10)}},
			{o.rollupsTopic, 1, map[string]string{"cleanup.policy": "compact"}},
			{o.capsTopic, 1, map[string]string{"cleanup.policy": "compact"}},
			{o.quotaTopic, 1, map[string]string{"cleanup.policy": "compact"}},
			{o.parkedTopic, 1, map[string]string{"retention.ms": "-1"}},
			{o.dlqTopic, 1, map[string]string{"retention.ms": "-1"}},
		}
		tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		for _, tp := range topics {
			tp.configs["min.insync.replicas"] = minISR
			t := bus.Topic{Name: tp.name, Partitions: tp.partitions, ReplicationFactor: rf, Configs: tp.configs}
			if err := bus.EnsureTopic(tctx, kafka, t, log); err != nil {
				return err
			}
		}
	}
	return nil
}

// defaultTo sets *s to def when it is empty.
func defaultTo(s *string, def string) {
	if *s == "" {
		*s = def
	}
}

// handler returns the HTTP surface of the stack.
func (s *stack) handler(o *options) (http.Handler, error) {
	cfg := api.Config{Catalog: s.catalog, Now: o.now, Log: s.log}
	if s.producer != nil {
		h, err := ingest.New(ingest.Config{
			Bounds:            event.Bounds{MaxAge: o.maxEventAge, MaxFuture: o.maxEventFuture},
			TenantLimit:       tenant.IngestLimit{EventsPerSecond: o.tenantRate, Burst: o.tenantBurst},
			MaxInFlight:       o.maxInFlight,
			TenantMaxInFlight: o.tenantInFlight,
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
		cfg.Tenants = s.counter.Catalog
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
	// Every role has the read and operator keys: the reads take them, and /readyz shows its
	// checks' details to an operator key.
	keys := s.readKeys
	if keys == nil {
		keys = s.catalog.ReadKeyring()
		if keys.Len() == 0 && (cfg.MAU != nil || cfg.Invoices != nil) {
			s.log.Warn("the tenant catalogue holds no read_keys and no operator_keys: every MAU and invoice read will get 401 (create keys with `maumeter keys new --read`)")
		}
	}
	auth, err := api.NewAuth(keys, s.log, s.reg)
	if err != nil {
		return nil, err
	}
	if err := auth.SetLimits(o.readLimit, o.operatorLimit, nil); err != nil {
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	s.auth = auth
	cfg.Auth = auth
	if s.archiver != nil {
		a := s.archiver
		cfg.Ready = append(cfg.Ready, api.Check{Name: "archive", Fn: func(context.Context) error {
			if since := time.Since(a.LastProgress()); since > time.Minute {
				return fmt.Errorf("archive: no batch stored for %s", since.Round(time.Second))
			}
			return nil
		}})
	}
	if s.counter != nil {
		counter := s.counter
		cfg.Ready = append(cfg.Ready, api.Check{Name: "counter", Fn: func(context.Context) error {
			if since := time.Since(counter.LastProgress()); since > time.Minute {
				return fmt.Errorf("no progress for %s", since.Round(time.Second))
			}
			return nil
		}}, api.Check{Name: "offsets", Fn: func(context.Context) error { return counter.LossError() }})
		// Parked events are reported, not a reason to take the counter out of service: it
		// counts everything else, and a restart would not teach it the missing tenants (the
		// catalogue does). Alert on maumeter_count_parked_waiting instead (docs/OPERATIONS.md).
		cfg.Ready = append(cfg.Ready, api.Check{Name: "parked", ReportOnly: true, Fn: func(ctx context.Context) error {
			n, err := counter.ParkedWaiting(ctx)
			if err != nil {
				return fmt.Errorf("parked events: %w", err)
			}
			if n > 0 {
				return fmt.Errorf("%d parked events wait for their tenant or app in the counter's catalogue (topic %s)", n, o.parkedTopic)
			}
			return nil
		}})
	}
	return api.New(cfg), nil
}

// serveHTTP serves h on addr until ctx ends, then shuts down gracefully. ready, if not nil,
// receives the bound address.
// cert, if not nil, makes it HTTPS (TLS 1.2 or later) with that certificate, reloaded when its
// files change. It stops accepting at once and gives the requests in flight up to drain to
// finish.
func serveHTTP(ctx context.Context, addr string, h http.Handler, timeouts api.Timeouts, cert *secure.ServerCert, drain time.Duration, log *slog.Logger, ready chan<- string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	srv := api.NewServer(h, timeouts)
	scheme := "http"
	if cert != nil {
		srv.TLSConfig = cert.TLSConfig()
		scheme = "https"
	}
	log.Info("http listening", "addr", ln.Addr().String(), "scheme", scheme)
	if ready != nil {
		ready <- ln.Addr().String()
	}
	errc := make(chan error, 1)
	go func() {
		if cert != nil {
			errc <- srv.ServeTLS(ln, "", "") // the certificate comes from TLSConfig.GetCertificate
			return
		}
		errc <- srv.Serve(ln)
	}()
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
	var cert *secure.ServerCert
	if o.tlsCertFile != "" || o.tlsKeyFile != "" {
		if cert, err = secure.NewServerCert(o.tlsCertFile, o.tlsKeyFile, s.log); err != nil {
			return fmt.Errorf("%w: --tls-cert-file / --tls-key-file: %v", errUsage, err)
		}
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
	if s.counter != nil && o.catalogReload > 0 {
		go s.counter.WatchCatalog(bg, o.tenants, o.catalogReload, s.plans.CheckTenants, plans)
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
		return serveHTTP(ctx, o.httpAddr, h, o.http, cert, timeout, s.log, ready)
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
	if s.archiver != nil {
		stages = append(stages, &stage{name: "archive", run: s.archiver.Run})
	}
	if s.rater != nil {
		stages = append(stages, &stage{name: "rater", run: s.rater.Run})
	}
	// The admin listener stops last: /metrics shows the drain.
	if o.adminAddr != "" {
		// pprof's profile and trace run 30 s by default: the answer may take that long.
		admin := api.Timeouts{ReadHeader: 5 * time.Second, Read: 10 * time.Second, Write: 2 * time.Minute}
		stages = append(stages, &stage{name: "admin", run: func(ctx context.Context) error {
			return serveHTTP(ctx, o.adminAddr, api.Admin(s.reg), admin, nil, time.Second, s.log.With("listener", "admin"), nil)
		}})
	} else {
		s.log.Info("no --admin-addr: /metrics and /debug/pprof/ are not served")
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
	o.retentionFlags(fs)
	o.ingestFlags(fs)
	o.keysFlags(fs)
	o.rateFlags(fs)
	o.capsFlags(fs)
	o.shutdownFlags(fs)
	o.plansFlags(fs)
	o.adminFlags(fs)
	o.readLimitFlags(fs)
	fs.StringVar(&o.httpAddr, "http-addr", "127.0.0.1:8080", "HTTP listen address")
	o.httpTLSFlags(fs)
	fs.BoolVar(&o.migrate, "migrate", true, "apply ClickHouse migrations and create topics at start")
	o.archiveFlags(fs)
	fs.BoolVar(&o.archive, "archive", false, "run the archive role too: raw events into ClickHouse's events table")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	s, err := build(ctx, o, roleParts{ingest: true, count: true, rate: true, archive: o.archive, embeddedKafka: true}, stderr)
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
	o.adminFlags(fs)
	fs.StringVar(&o.httpAddr, "http-addr", "127.0.0.1:8080", "HTTP listen address of POST /v1/events, /healthz and /readyz")
	o.httpTLSFlags(fs)
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
	o.retentionFlags(fs)
	o.keysFlags(fs)
	o.capsFlags(fs)
	o.shutdownFlags(fs)
	o.plansFlags(fs)
	o.adminFlags(fs)
	o.readLimitFlags(fs)
	fs.StringVar(&o.httpAddr, "http-addr", "127.0.0.1:9464", "HTTP listen address of /healthz, /readyz and MAU and invoice reads")
	o.httpTLSFlags(fs)
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

// archiveFlags are the flags of the archive role.
func (o *options) archiveFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.archiveGroup, "archive-group", "maumeter-archive", "consumer group of the archive role (never the counters')")
	fs.DurationVar(&o.archiveTTL, "archive-ttl", 0, "how long the events table keeps an event after its ts, e.g. 9600h (0: forever); applied at start")
	fs.IntVar(&o.archiveBatch, "archive-batch", 50_000, "events written to ClickHouse per insert (at most; a batch also ends 2 s after its first event)")
}

func runArchive(ctx context.Context, now func() time.Time, args []string, stdout, stderr io.Writer) error {
	o := &options{now: now}
	fs := flag.NewFlagSet("archive", flag.ContinueOnError)
	o.commonFlags(fs)
	o.kafkaFlags(fs)
	o.clickhouseFlags(fs)
	o.archiveFlags(fs)
	o.shutdownFlags(fs)
	o.plansFlags(fs)
	o.adminFlags(fs)
	fs.StringVar(&o.httpAddr, "http-addr", "127.0.0.1:9465", "HTTP listen address of /healthz and /readyz")
	o.httpTLSFlags(fs)
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	s, err := build(ctx, o, roleParts{archive: true}, stderr)
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
	o.closeTimeFlags(fs)
	o.retentionFlags(fs)
	o.capsFlags(fs)
	o.sideTopicFlags(fs)
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
	url := fs.String("url", "http://127.0.0.1:8080/readyz", "URL that must answer 200 (/readyz: ready to serve; /healthz: the process answers)")
	caFile := fs.String("tls-ca-file", "", "PEM CA certificates that sign an https URL's certificate (empty: the system's roots)")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	client := http.DefaultClient
	if *caFile != "" {
		cfg, err := secure.ClientTLS("healthcheck", secure.Files{CAFile: *caFile})
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		client = &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *url, nil)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s", *url, resp.Status)
	}
	return nil
}
