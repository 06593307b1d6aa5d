// Package count is the counter: a Kafka consumer-group member that reads mau.events.v1 and keeps,
// per assigned partition and per (tenant, billing month), the exact set of device keys seen and
// HyperLogLog sketches (tenant-month, per app, per mini program, per day). A device new to its
// set is written to ClickHouse mau_devices. The member that owns partition 0 also closes months
// (closer.go) and runs the other leader tasks it is given (the POC cap publisher).
//
// Flush protocol (docs/ARCHITECTURE.md, "Counting"): every flush writes, in this order, the
// first-seen devices to mau_devices, the state of every tenant-month the partition touched to
// mau_partition_rollups (exact count, estimate, serialized sketches), and only then commits the
// offset. On every assignment a partition's open months are rebuilt before it consumes: sets
// from mau_devices, sketches from the newest partition rollup. A crash or rebalance therefore
// replays messages whose devices are already in the rebuilt sets (no new rows) or whose rows
// never reached ClickHouse (written now), and re-adds to sketches what HyperLogLog absorbs
// idempotently: nothing is lost and nothing is counted twice. Any row written twice anyway (two
// owners during a rebalance) is folded by ReplacingMergeTree and cannot change
// uniqExact(device_key).
package count

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/maumeter/maumeter/pipeline/api"
	"github.com/maumeter/maumeter/pipeline/bus"
	"github.com/maumeter/maumeter/pipeline/chstore"
	"github.com/maumeter/maumeter/pkg/calendar"
	"github.com/maumeter/maumeter/pkg/event"
	"github.com/maumeter/maumeter/pkg/sketch"
	"github.com/maumeter/maumeter/pkg/tenant"
)

// ErrConfig wraps configuration errors.
var ErrConfig = errors.New("count config")

// Config of the counter.
type Config struct {
	Kafka         *bus.Net // the brokers and how to reach them (TLS, SASL)
	Topic         string
	Group         string
	FlushInterval time.Duration // longest a first-seen device waits before it is written to mau_devices (default 1s)
	FlushRows     int           // write devices as soon as this many are pending (default 20,000)
	// CheckpointInterval is how often partition rollups (sketches) are stored and offsets
	// committed (default 10s): what a crash replays at most.
	CheckpointInterval time.Duration
	SessionTimeout     time.Duration // consumer-group session timeout (default 10s)
	RebalanceTimeout   time.Duration // default 10s
	Close              CloseConfig
	// ParkedTopic and DLQTopic receive the events the counter cannot place yet and the records
	// it cannot decode (park.go); defaults bus.ParkedTopic and bus.DLQTopic.
	ParkedTopic string
	DLQTopic    string
	// ParkedGroup keeps the parked replayer's position on ParkedTopic (default Group+"-parked");
	// ParkedInterval is how often it looks for parked events it can replay (default 10s; also
	// at once after every catalogue change).
	ParkedGroup    string
	ParkedInterval time.Duration
	// LeaderTasks run, like the month closer, in the one counter that owns partition 0, from
	// its assignment until the generation ends (when they must return: kafka-go ends a
	// generation as soon as one of its functions returns). The POC cap publisher is one.
	LeaderTasks []func(ctx context.Context)
}

// Validate checks c and fills defaults.
func (c *Config) Validate() error {
	switch {
	case c.Kafka == nil || len(c.Kafka.Brokers) == 0:
		return fmt.Errorf("%w: brokers are required", ErrConfig)
	case c.Topic == "":
		return fmt.Errorf("%w: topic is required", ErrConfig)
	case c.Group == "":
		return fmt.Errorf("%w: group is required", ErrConfig)
	}
	if c.FlushInterval <= 0 {
		c.FlushInterval = time.Second
	}
	if c.FlushRows <= 0 {
		c.FlushRows = 20000
	}
	if c.CheckpointInterval <= 0 {
		c.CheckpointInterval = 10 * time.Second
	}
	c.CheckpointInterval = max(c.CheckpointInterval, c.FlushInterval)
	if c.SessionTimeout <= 0 {
		c.SessionTimeout = 10 * time.Second
	}
	if c.RebalanceTimeout <= 0 {
		c.RebalanceTimeout = 10 * time.Second
	}
	if c.ParkedTopic == "" {
		c.ParkedTopic = bus.ParkedTopic
	}
	if c.DLQTopic == "" {
		c.DLQTopic = bus.DLQTopic
	}
	if c.ParkedGroup == "" {
		c.ParkedGroup = c.Group + "-parked"
	}
	if c.ParkedInterval <= 0 {
		c.ParkedInterval = 10 * time.Second
	}
	if c.ParkedTopic == c.Topic || c.DLQTopic == c.Topic || c.ParkedTopic == c.DLQTopic {
		return fmt.Errorf("%w: the events, parked and DLQ topics must differ (%s, %s, %s)", ErrConfig, c.Topic, c.ParkedTopic, c.DLQTopic)
	}
	return c.Close.validate()
}

// Counter consumes the events topic as a member of a consumer group. Run it once; MAU,
// SetCatalog and WatchCatalog may be called concurrently with Run.
type Counter struct {
	cfg        Config
	catalog    atomic.Pointer[tenant.Catalog] // swapped by SetCatalog; read on the hot path
	catalogGen atomic.Uint64                  // SetCatalog calls
	wake       chan struct{}                  // a catalogue changed: the parked replayer runs a pass
	sideW      *bus.RecordWriter              // parked and DLQ records
	store      *chstore.Store
	closer     *Closer
	now        func() time.Time
	log        *slog.Logger
	m          metrics

	lastProgress atomic.Int64 // unix nanos of the last successful flush or idle tick

	mu     sync.Mutex
	owned  map[int32]*partitionState                       // partitions of the current generation
	lost   map[int32]Loss                                  // stopped partitions: records deleted before they were read
	closed atomic.Pointer[map[tenantMonth]*chstore.Rollup] // closed months and their current rollup
	// switchAt is when the events' partitioner last changed (unix ns, 0: never; migration 008).
	switchAt atomic.Int64
}

// Loss is a range of a partition whose records were deleted (retention) before the counters'
// group read them: [From, To) was never counted. The partition is stopped until an operator
// accepts the loss (`maumeter offsets accept-loss`).
type Loss struct {
	Partition int32
	From, To  int64
}

// PartitionerRollout is how long after the partitioner change (migration 008) gateways may
// still place events the old way: months that began before the change plus this margin may
// hold a device on two partitions, and the counter reads them from mau_devices.
const PartitionerRollout = 7 * 24 * time.Hour

type metrics struct {
	events        prometheus.Counter
	devices       prometheus.Counter
	lateNew       prometheus.Counter
	parked        *prometheus.CounterVec
	dead          *prometheus.CounterVec
	reloads       *prometheus.CounterVec
	parkedWaiting prometheus.Gauge
	replayed      prometheus.Counter
	parkedLost    prometheus.Counter
	flushes       prometheus.Histogram
	retries       prometheus.Counter
	rebuilt       prometheus.Counter
	assigned      prometheus.Gauge
	commitErr     prometheus.Counter
	openMonths    prometheus.Gauge
	lost          *prometheus.GaugeVec
	accepted      prometheus.Counter
}

// New returns a counter. now is its clock (month close and grace are measured on it); reg
// receives its metrics.
func New(cfg Config, catalog *tenant.Catalog, store *chstore.Store, now func() time.Time, log *slog.Logger, reg prometheus.Registerer) (*Counter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := metrics{
		events:     prometheus.NewCounter(prometheus.CounterOpts{Name: "maumeter_count_events_total", Help: "Events consumed by the counter."}),
		devices:    prometheus.NewCounter(prometheus.CounterOpts{Name: "maumeter_count_new_devices_total", Help: "Devices first seen in their tenant-month and written to mau_devices."}),
		lateNew:    prometheus.NewCounter(prometheus.CounterOpts{Name: "maumeter_count_late_devices_total", Help: "Devices first seen in a tenant-month that had already closed (they cause a restatement)."}),
		flushes:    prometheus.NewHistogram(prometheus.HistogramOpts{Name: "maumeter_count_flush_seconds", Help: "Time to store devices and partition rollups and commit offsets.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 8)}),
		retries:    prometheus.NewCounter(prometheus.CounterOpts{Name: "maumeter_count_store_retries_total", Help: "ClickHouse writes retried."}),
		rebuilt:    prometheus.NewCounter(prometheus.CounterOpts{Name: "maumeter_count_rebuilt_devices_total", Help: "Device keys loaded from mau_devices on partition assignment."}),
		assigned:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "maumeter_count_assigned_partitions", Help: "Partitions this counter owns."}),
		commitErr:  prometheus.NewCounter(prometheus.CounterOpts{Name: "maumeter_count_commit_errors_total", Help: "Offset commits that failed (the partition replays from the last good commit)."}),
		openMonths: prometheus.NewGauge(prometheus.GaugeOpts{Name: "maumeter_count_open_months", Help: "Tenant-months held in memory over all owned partitions."}),
		lost: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "maumeter_count_lost_offsets",
			Help: "Offsets of the events topic deleted (retention) before the counters read them, not accepted yet: the partition is stopped. 0 when none."}, []string{"partition"}),
		accepted: prometheus.NewCounter(prometheus.CounterOpts{Name: "maumeter_count_accepted_lost_offsets_total",
			Help: "Lost offsets an operator accepted (maumeter offsets accept-loss), after which their partition resumed."}),
	}
	m.parked, m.dead, m.reloads, m.parkedWaiting, m.replayed, m.parkedLost = parkedMetrics()
	for _, col := range []prometheus.Collector{m.events, m.devices, m.lateNew, m.flushes, m.retries, m.rebuilt, m.assigned, m.commitErr, m.openMonths,
		m.parked, m.dead, m.reloads, m.parkedWaiting, m.replayed, m.parkedLost, m.lost, m.accepted} {
		if err := reg.Register(col); err != nil {
			return nil, fmt.Errorf("count metrics: %w", err)
		}
	}
	c := &Counter{cfg: cfg, store: store, now: now, log: log, m: m, owned: map[int32]*partitionState{}, wake: make(chan struct{}, 1), lost: map[int32]Loss{}}
	c.catalog.Store(catalog)
	closer, err := NewCloser(cfg.Close, cfg.Kafka, cfg.Topic, cfg.Group, catalog, store, now, log, reg)
	if err != nil {
		return nil, err
	}
	c.closer = closer
	c.sideW = bus.NewRecordWriter(cfg.Kafka)
	c.closed.Store(&map[tenantMonth]*chstore.Rollup{})
	c.lastProgress.Store(time.Now().UnixNano())
	return c, nil
}

// Closer is the month closer this counter runs while it owns partition 0.
func (c *Counter) Closer() *Closer { return c.closer }

// LastProgress is when the counter last flushed or found its partitions idle; readiness uses it.
func (c *Counter) LastProgress() time.Time { return time.Unix(0, c.lastProgress.Load()) }

func (c *Counter) isClosed(tm tenantMonth) bool { return (*c.closed.Load())[tm] != nil }

// refreshClosed reloads the set of closed tenant-months from mau_rollups, and when the
// partitioner last changed.
func (c *Counter) refreshClosed(ctx context.Context) error {
	latest, err := c.store.LatestRollups(ctx)
	if err != nil {
		return err
	}
	c.closed.Store(&latest)
	sw, err := c.store.PartitionerSwitch(ctx)
	if err != nil {
		return err
	}
	if !sw.IsZero() {
		c.switchAt.Store(sw.UnixNano())
	}
	return nil
}

// straddles says whether tm began before the partitioner change (plus PartitionerRollout), so
// that a device of it may sit in two partitions' sets: one placed by the old partitioner, one by
// the new. The sum of the sets would count it twice; reads of such months take uniqExact over
// mau_devices, as the close does for every month.
func (c *Counter) straddles(tm tenantMonth) bool {
	sw := c.switchAt.Load()
	if sw == 0 {
		return false
	}
	t, ok := c.catalog.Load().Tenant(tm.TenantID)
	m, err := calendar.ParseMonth(tm.Month)
	if !ok || err != nil {
		return true
	}
	return m.Start(t.Location()).Before(time.Unix(0, sw).Add(PartitionerRollout))
}

// Losses are the ranges of the partitions this counter owns that were deleted before they were
// read and are not accepted yet; their partitions are stopped.
func (c *Counter) Losses() []Loss {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Loss, 0, len(c.lost))
	for _, l := range c.lost {
		out = append(out, l)
	}
	slices.SortFunc(out, func(a, b Loss) int { return int(a.Partition - b.Partition) })
	return out
}

// LossError is nil when no owned partition is stopped by a loss, else an error naming each
// partition, its lost range and the command that accepts it: the counter's readiness.
func (c *Counter) LossError() error {
	var errs []error
	for _, l := range c.Losses() {
		errs = append(errs, fmt.Errorf("partition %d stopped: offsets [%d, %d) (%d records) were deleted before they were counted; "+
			"accept the loss with `maumeter offsets accept-loss --partition %d` (docs/OPERATIONS.md)", l.Partition, l.From, l.To, l.To-l.From, l.Partition))
	}
	return errors.Join(errs...)
}

// Run joins the group and counts until ctx is cancelled, then flushes, commits and leaves.
func (c *Counter) Run(ctx context.Context) error {
	group, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID:                     c.cfg.Group,
		Brokers:                c.cfg.Kafka.Brokers,
		Dialer:                 c.cfg.Kafka.Dialer(),
		Topics:                 []string{c.cfg.Topic},
		StartOffset:            kafka.FirstOffset,
		HeartbeatInterval:      c.cfg.SessionTimeout / 5,
		SessionTimeout:         c.cfg.SessionTimeout,
		RebalanceTimeout:       c.cfg.RebalanceTimeout,
		JoinGroupBackoff:       time.Second,
		WatchPartitionChanges:  true,
		PartitionWatchInterval: 5 * time.Second,
		ErrorLogger:            kafka.LoggerFunc(func(f string, a ...any) { c.log.Debug(fmt.Sprintf(f, a...), "component", "kafka-group") }),
	})
	if err != nil {
		return fmt.Errorf("join group %s: %w", c.cfg.Group, err)
	}
	defer group.Close()
	defer c.sideW.Close()
	go c.refreshLoop(ctx)
	for {
		gen, err := group.Next(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			c.log.Warn("consumer group", "group", c.cfg.Group, "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
			continue
		}
		assigned := gen.Assignments[c.cfg.Topic]
		ids := make([]int, len(assigned))
		for i, a := range assigned {
			ids[i] = a.ID
			if a.ID == 0 {
				gen.Start(c.closer.Run)
				gen.Start(c.replayParked)
				for _, task := range c.cfg.LeaderTasks {
					gen.Start(task)
				}
			}
		}
		c.log.Info("partitions assigned", "generation", gen.ID, "member", gen.MemberID, "partitions", ids)
		c.m.assigned.Set(float64(len(assigned)))
		for _, a := range assigned {
			gen.Start(func(ctx context.Context) { c.consume(ctx, gen, a) })
		}
	}
}

// refreshLoop keeps the closed-month set fresh so that partitions drop closed months and send
// their late events down the late path.
func (c *Counter) refreshLoop(ctx context.Context) {
	t := time.NewTicker(c.cfg.Close.CheckInterval)
	defer t.Stop()
	for {
		if err := c.refreshClosed(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("refresh closed months", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (c *Counter) own(p *partitionState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.owned[p.id] = p
}

func (c *Counter) disown(p *partitionState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.owned[p.id] == p {
		delete(c.owned, p.id)
	}
}

func (c *Counter) consume(ctx context.Context, gen *kafka.Generation, a kafka.PartitionAssignment) {
	log := c.log.With("partition", a.ID, "generation", gen.ID)
	p := newPartitionState(int32(a.ID))
	p.next = a.Offset
	if a.Offset >= 0 {
		p.committed = a.Offset
	}
	c.own(p)
	defer c.disown(p)
	start := time.Now()
	if err := c.rebuild(ctx, p); err != nil {
		log.Warn("rebuild abandoned", "err", err)
		return
	}
	log.Info("partition rebuilt", "devices", p.devices(), "months", len(p.months), "took", time.Since(start).Round(time.Millisecond), "offset", a.Offset)
	offset, ok := c.startOffset(ctx, gen, p, a.Offset, log)
	if !ok {
		return
	}
	p.mu.Lock()
	p.next = offset
	p.mu.Unlock()

	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:       c.cfg.Kafka.Brokers,
		Dialer:        c.cfg.Kafka.Dialer(),
		Topic:         c.cfg.Topic,
		Partition:     a.ID,
		MinBytes:      64 << 10,
		MaxBytes:      16 << 20,
		MaxWait:       250 * time.Millisecond,
		QueueCapacity: 10000,
	})
	defer r.Close()
	if err := r.SetOffset(offset); err != nil {
		log.Error("set offset", "offset", offset, "err", err)
		return
	}

	msgs := make(chan kafka.Message, 1024)
	fetchCtx, stopFetch := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(msgs)
		for {
			m, err := r.FetchMessage(fetchCtx)
			if err != nil {
				if fetchCtx.Err() != nil {
					return
				}
				// The reader retries broker errors itself; anything that reaches here is
				// retried too, so the partition never stalls silently.
				log.Warn("fetch; retrying", "err", err)
				select {
				case <-fetchCtx.Done():
					return
				case <-time.After(time.Second):
				}
				continue
			}
			select {
			case msgs <- m:
			case <-fetchCtx.Done():
				return
			}
		}
	})
	defer wg.Wait()
	defer stopFetch()

	tick := time.NewTicker(c.cfg.FlushInterval)
	defer tick.Stop()
	lastCheckpoint := time.Now()
	for {
		select {
		case m, ok := <-msgs:
			if !ok {
				c.drain(p, gen, log)
				return
			}
			p.mu.Lock()
			gapTo := c.process(p, m)
			// Apply what is already fetched under one lock.
			for more := gapTo < 0; more && len(p.pending)+len(p.side) < c.cfg.FlushRows; {
				select {
				case m, ok := <-msgs:
					if ok {
						gapTo = c.process(p, m)
						more = gapTo < 0
					} else {
						more = false
					}
				default:
					more = false
				}
			}
			full := len(p.pending)+len(p.side) >= c.cfg.FlushRows
			from := p.next
			p.mu.Unlock()
			if gapTo >= 0 {
				// kafka-go's reader skips to the log start when its offset was deleted: the
				// records in between were never read. Store and commit what came before them,
				// then stop the partition.
				stopFetch()
				if err := c.flush(ctx, p, gen, log, true); err != nil {
					return
				}
				c.awaitAccepted(ctx, gen, p, from, gapTo, log)
				return
			}
			if full {
				if err := c.flush(ctx, p, gen, log, false); err != nil {
					return
				}
			}
		case <-tick.C:
			if p.dirty {
				checkpoint := time.Since(lastCheckpoint) >= c.cfg.CheckpointInterval
				if err := c.flush(ctx, p, gen, log, checkpoint); err != nil {
					return
				}
				if checkpoint {
					lastCheckpoint = time.Now()
				}
			} else if len(msgs) == 0 {
				c.lastProgress.Store(time.Now().UnixNano())
			}
			p.mu.Lock()
			p.dropClosed(c.isClosed)
			p.mu.Unlock()
		case <-ctx.Done():
			c.drain(p, gen, log)
			return
		}
	}
}

// drain makes a last attempt to store and commit what was processed when the generation ends.
// Failing is harmless: the next owner rebuilds from ClickHouse and replays from the last commit.
func (c *Counter) drain(p *partitionState, gen *kafka.Generation, log *slog.Logger) {
	if !p.dirty {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.flush(ctx, p, gen, log, true); err != nil {
		log.Info("final flush skipped; the next owner replays", "err", err)
	}
}

// process applies one message; p.mu must be held. The events topic is neither compacted nor
// transactional (bus.CheckEventsTopic), so its offsets are contiguous and kafka-go hands them
// out in order, compressed batches included (TestReaderOffsetsContiguous): a message beyond the
// next expected offset means the records in between were deleted. Such a message is not
// applied; process returns its offset, the end of the gap (else -1). A message it cannot count
// becomes a side record (parked or DLQ) that the next flush stores before it commits past it
// (park.go).
func (c *Counter) process(p *partitionState, m kafka.Message) (gapTo int64) {
	if p.next >= 0 && m.Offset > p.next {
		return m.Offset
	}
	c.m.events.Inc()
	p.next, p.dirty = m.Offset+1, true
	v := classify(m, c.catalog.Load())
	if v.fate != fateCount {
		p.side = append(p.side, sideRecordOf(m, v, c.cfg.ParkedTopic, c.cfg.DLQTopic))
		return -1
	}
	p.apply(&v.e, v.t, m.Offset, c.isClosed)
	return -1
}

// startOffset is where an assigned partition resumes: the group's committed offset, or the log
// start when it has none. A committed offset below the log start means records were deleted
// before the group read them: the partition stops until the loss is accepted (awaitAccepted)
// and false is returned, so the generation restarts from the new commit.
func (c *Counter) startOffset(ctx context.Context, gen *kafka.Generation, p *partitionState, committed int64, log *slog.Logger) (int64, bool) {
	var first int64
	if err := c.retry(ctx, log, "read the partition's log start", func() error {
		offs, err := bus.FirstOffsets(ctx, c.cfg.Kafka, c.cfg.Topic)
		if err != nil {
			return err
		}
		f, ok := offs[int(p.id)]
		if !ok {
			return fmt.Errorf("partition %d missing from the log starts of %s", p.id, c.cfg.Topic)
		}
		first = f
		return nil
	}); err != nil {
		return 0, false
	}
	switch {
	case committed < 0:
		return first, true
	case committed < first:
		c.awaitAccepted(ctx, gen, p, committed, first, log)
		return 0, false
	}
	return committed, true
}

// awaitAccepted reports that [from, to) of the partition was deleted before it was read (the
// metric, an error log, the counter's readiness) and holds the partition, consuming and
// committing nothing, until an operator's acceptance covering from is in ClickHouse
// (kafka_offset_losses, written by `maumeter offsets accept-loss`) or the generation ends. On
// acceptance it commits the accepted range's end and returns, which ends the generation: the
// partition resumes there (and stops again if more was deleted since).
func (c *Counter) awaitAccepted(ctx context.Context, gen *kafka.Generation, p *partitionState, from, to int64, log *slog.Logger) {
	label := fmt.Sprint(p.id)
	c.mu.Lock()
	c.lost[p.id] = Loss{Partition: p.id, From: from, To: to}
	c.mu.Unlock()
	c.m.lost.WithLabelValues(label).Set(float64(to - from))
	defer func() {
		c.mu.Lock()
		delete(c.lost, p.id)
		c.mu.Unlock()
		c.m.lost.WithLabelValues(label).Set(0)
	}()
	log.Error("offsets lost: records were deleted (retention) before the counter read them; the partition is stopped until the loss is accepted",
		"topic", c.cfg.Topic, "group", c.cfg.Group, "from", from, "to", to, "lost", to-from,
		"accept", fmt.Sprintf("maumeter offsets accept-loss --partition %d", p.id))
	tick := time.NewTicker(c.cfg.Close.CheckInterval)
	defer tick.Stop()
	for {
		acc, err := c.store.AcceptedLoss(ctx, c.cfg.Topic, c.cfg.Group, p.id, from)
		switch {
		case err != nil:
			if ctx.Err() == nil {
				log.Warn("look up accepted offset losses", "err", err)
			}
		case acc != nil:
			if err := gen.CommitOffsets(map[string]map[int]int64{c.cfg.Topic: {int(p.id): acc.To}}); err != nil {
				c.m.commitErr.Inc()
				log.Warn("commit after an accepted loss", "offset", acc.To, "err", err)
				break
			}
			c.m.accepted.Add(float64(acc.To - from))
			log.Warn("lost offsets accepted; the partition resumes", "from", from, "to", acc.To,
				"accepted_by", acc.AcceptedBy, "accepted_at", acc.AcceptedAt, "reason", acc.Reason)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func hasSchema(m kafka.Message) bool {
	for _, h := range m.Headers {
		if h.Key == event.SchemaHeader {
			return string(h.Value) == event.SchemaV1
		}
	}
	return false
}

// retry runs fn until it succeeds or ctx ends, backing off; the partition waits meanwhile
// (backpressure, never loss).
func (c *Counter) retry(ctx context.Context, log *slog.Logger, what string, fn func() error) error {
	backoff := 100 * time.Millisecond
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c.m.retries.Inc()
		log.Warn(what+"; retrying", "in", backoff, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// flush stores what the partition learned: late devices checked against ClickHouse, then
// first-seen devices; at a checkpoint also the partition rollups, and then it commits the
// offset. It returns an error only when ctx ended first or the commit failed.
func (c *Counter) flush(ctx context.Context, p *partitionState, gen *kafka.Generation, log *slog.Logger, checkpoint bool) error {
	start := time.Now()
	p.mu.Lock()
	late := p.late
	p.late = map[tenantMonth]map[event.DeviceKey]chstore.DeviceRow{}
	rows := p.pending
	p.pending = make([]chstore.DeviceRow, 0, len(rows))
	side := p.side
	p.side = nil
	var rollups []chstore.PartitionRollup
	var err error
	if checkpoint {
		rollups, err = p.rollups(c.now())
	}
	next := p.next
	p.mu.Unlock()
	if err != nil {
		return fmt.Errorf("partition %d rollups: %w", p.id, err)
	}
	// Parked and dead-letter records are stores too: acknowledged before any commit past them.
	if err := c.writeSide(ctx, log, side); err != nil {
		return err
	}
	for tm, devices := range late {
		keys := make([]event.DeviceKey, 0, len(devices))
		for k := range devices {
			keys = append(keys, k)
		}
		var known map[event.DeviceKey]bool
		if err := c.retry(ctx, log, "check late devices", func() (err error) {
			known, err = c.store.KnownDevices(ctx, tm, keys)
			return err
		}); err != nil {
			return err
		}
		for k, row := range devices {
			if !known[k] {
				rows = append(rows, row)
				c.m.lateNew.Inc()
			}
		}
	}
	if err := c.retry(ctx, log, "insert devices", func() error { return c.store.InsertDevices(ctx, rows) }); err != nil {
		return err
	}
	c.m.devices.Add(float64(len(rows)))
	if !checkpoint {
		c.lastProgress.Store(time.Now().UnixNano())
		return nil
	}
	// The fence: a counter stopped past its session (SIGSTOP, a long pause) wakes still
	// believing it owns the partition, and its rollups, versioned by its clock, would overwrite
	// the new owner's. Committing again the offset it last committed fails once its generation
	// is over, before it writes them (the rows above are harmless: mau_devices keeps one per
	// device).
	if p.committed >= 0 {
		if err := gen.CommitOffsets(map[string]map[int]int64{c.cfg.Topic: {int(p.id): p.committed}}); err != nil {
			c.m.commitErr.Inc()
			log.Warn("fence commit failed: the partition moved; its rollups are not written", "offset", p.committed, "err", err)
			return err
		}
	}
	if err := c.retry(ctx, log, "insert partition rollups", func() error { return c.store.InsertPartitionRollups(ctx, rollups) }); err != nil {
		return err
	}
	p.mu.Lock()
	if len(rollups) > 0 {
		p.stored(rollups[0].Version)
	}
	p.mu.Unlock()
	if err := gen.CommitOffsets(map[string]map[int]int64{c.cfg.Topic: {int(p.id): next}}); err != nil {
		// The rows are stored; a replay from the older offset finds them in the rebuilt sets.
		c.m.commitErr.Inc()
		log.Warn("commit offset", "offset", next, "err", err)
		return err
	}
	p.mu.Lock()
	p.dirty = p.next != next
	p.committed = next
	p.mu.Unlock()
	c.m.flushes.Observe(time.Since(start).Seconds())
	c.lastProgress.Store(time.Now().UnixNano())
	return nil
}

// rebuild loads the partition's open months: sets from mau_devices, sketches from the newest
// partition rollups.
func (c *Counter) rebuild(ctx context.Context, p *partitionState) error {
	log := c.log.With("partition", p.id)
	return c.retry(ctx, log, "rebuild partition", func() error {
		if err := c.refreshClosed(ctx); err != nil {
			return err
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		clear(p.months)
		n := 0
		err := c.store.PartitionDevices(ctx, p.id, func(tenant, month string, k event.DeviceKey) {
			p.month(tenantMonth{TenantID: tenant, Month: month}).set.Add(k)
			n++
		})
		if err != nil {
			return err
		}
		rollups, err := c.store.LatestPartitionRollups(ctx, p.id, nil)
		if err != nil {
			return err
		}
		for _, r := range rollups {
			p.version = max(p.version, r.Version)
			tm := tenantMonth{TenantID: r.TenantID, Month: r.Month}
			if c.isClosed(tm) {
				continue
			}
			sk := sketch.NewMonth()
			if err := sk.UnmarshalBinary(r.Sketches); err != nil {
				// Sketches are cross-checks, never the billed figure: start this one afresh.
				log.Warn("unreadable partition sketches; starting them empty", "tenant", r.TenantID, "month", r.Month, "err", err)
				continue
			}
			p.month(tm).sk = sk
		}
		c.m.rebuilt.Add(float64(n))
		p.ready = true
		return nil
	})
}

// MAU is the exact MAU of a tenant-month as this counter knows it now (see MAUDetail).
func (c *Counter) MAU(ctx context.Context, tenantID, month string) (uint64, error) {
	n, _, err := c.MAUDetail(ctx, tenantID, month)
	return n, err
}

// MAUDetail is the exact MAU of a tenant-month with its cross-checks. An open month is summed
// over partitions, with their sketches merged: those this process owns from memory (up to the
// second), the others from their newest partition rollup (at most one checkpoint behind); no
// scan of mau_devices. A closed month's sets are gone: it answers uniqExact over its rows in
// mau_devices, which includes late devices a restatement has not picked up yet, with the
// figures of its current rollup (the billed version).
func (c *Counter) MAUDetail(ctx context.Context, tenantID, month string) (uint64, api.MAUDetail, error) {
	tm := tenantMonth{TenantID: tenantID, Month: month}
	if r := (*c.closed.Load())[tm]; r != nil {
		n, err := c.store.MAU(ctx, tenantID, month)
		return n, api.MAUDetail{
			Source: fmt.Sprintf("clickhouse mau_devices (uniqExact); month closed, current rollup version %d", r.Version),
			Closed: true, RollupVersion: r.Version, HLLEstimate: r.HLLEstimate, HLLRelativeError: r.HLLRelativeError, ByApp: r.MAUByApp,
		}, err
	}
	c.mu.Lock()
	owned := make([]*partitionState, 0, len(c.owned))
	for _, p := range c.owned {
		owned = append(owned, p)
	}
	c.mu.Unlock()
	merged := sketch.NewMonth()
	local := map[int32]bool{}
	var total uint64
	var err error
	for _, p := range owned {
		p.mu.Lock()
		if p.ready {
			local[p.id] = true
			if m := p.months[tm]; m != nil {
				total += uint64(m.set.Len())
				err = errors.Join(err, merged.Merge(m.sk))
			}
		}
		p.mu.Unlock()
	}
	if err != nil {
		return 0, api.MAUDetail{}, fmt.Errorf("merge sketches: %w", err)
	}
	rollups, err := c.store.LatestPartitionRollups(ctx, -1, &tm)
	if err != nil {
		return 0, api.MAUDetail{}, err
	}
	for _, r := range rollups {
		if local[r.Partition] {
			continue
		}
		total += r.ExactDevices
		sk := sketch.NewMonth()
		if err := sk.UnmarshalBinary(r.Sketches); err != nil {
			c.log.Warn("unreadable partition sketches left out of a read", "tenant", tenantID, "month", month, "partition", r.Partition, "err", err)
			continue
		}
		if err := merged.Merge(sk); err != nil {
			return 0, api.MAUDetail{}, fmt.Errorf("merge sketches: %w", err)
		}
	}
	source := "counter memory and partition rollups (exact sets summed over partitions)"
	if c.straddles(tm) {
		if total, err = c.store.MAU(ctx, tenantID, month); err != nil {
			return 0, api.MAUDetail{}, err
		}
		source = "clickhouse mau_devices (uniqExact): the month was open when the events' partitioner changed, so a device may be in two partitions' sets"
	}
	return total, api.MAUDetail{
		Source:      source,
		HLLEstimate: merged.Estimate(), HLLRelativeError: merged.RelativeError(), ByApp: merged.Apps(),
	}, nil
}
