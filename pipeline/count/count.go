// Package count is the counter: a Kafka consumer-group member that reads mau.events.v1 and keeps,
// per assigned partition and per (tenant, billing month), the exact set of device keys seen.
// A device new to its set is written to ClickHouse mau_devices.
//
// Crash safety (docs/ARCHITECTURE.md, "Counting"): offsets are committed only after the rows
// produced by the messages before them are in ClickHouse, and on every assignment a partition's
// sets are rebuilt from mau_devices before it consumes. A crash or rebalance therefore replays
// messages whose devices are already in the rebuilt sets (no new rows) or whose rows never
// reached ClickHouse (written now): nothing is lost and nothing is counted twice. Any row written
// twice anyway (two owners during a rebalance) is folded by ReplacingMergeTree and cannot change
// uniqExact(device_key).
package count

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/maumeter/maumeter/pipeline/chstore"
	"github.com/maumeter/maumeter/pkg/calendar"
	"github.com/maumeter/maumeter/pkg/deviceset"
	"github.com/maumeter/maumeter/pkg/event"
	"github.com/maumeter/maumeter/pkg/tenant"
)

// ErrConfig wraps configuration errors.
var ErrConfig = errors.New("count config")

// Config of the counter.
type Config struct {
	Brokers          []string
	Topic            string
	Group            string
	FlushInterval    time.Duration // longest a first-seen device waits before its insert (default 500ms)
	FlushRows        int           // insert as soon as this many rows are pending (default 20,000)
	SessionTimeout   time.Duration // consumer-group session timeout (default 10s)
	RebalanceTimeout time.Duration // default 10s
}

// Validate checks c and fills defaults.
func (c *Config) Validate() error {
	switch {
	case len(c.Brokers) == 0:
		return fmt.Errorf("%w: brokers are required", ErrConfig)
	case c.Topic == "":
		return fmt.Errorf("%w: topic is required", ErrConfig)
	case c.Group == "":
		return fmt.Errorf("%w: group is required", ErrConfig)
	}
	if c.FlushInterval <= 0 {
		c.FlushInterval = 500 * time.Millisecond
	}
	if c.FlushRows <= 0 {
		c.FlushRows = 20000
	}
	if c.SessionTimeout <= 0 {
		c.SessionTimeout = 10 * time.Second
	}
	if c.RebalanceTimeout <= 0 {
		c.RebalanceTimeout = 10 * time.Second
	}
	return nil
}

// Store is what the counter needs of ClickHouse.
type Store interface {
	InsertDevices(ctx context.Context, rows []chstore.DeviceRow) error
	PartitionDevices(ctx context.Context, p int32, fromMonth string, fn func(tenant, month string, key event.DeviceKey)) error
}

// Counter consumes the events topic as a member of a consumer group. Run it once.
type Counter struct {
	cfg     Config
	catalog *tenant.Catalog
	store   Store
	log     *slog.Logger
	m       metrics

	lastProgress atomic.Int64 // unix nanos of the last successful flush or idle fetch
}

type metrics struct {
	events    prometheus.Counter
	devices   prometheus.Counter
	dropped   *prometheus.CounterVec
	flushes   prometheus.Histogram
	retries   prometheus.Counter
	rebuilt   prometheus.Counter
	assigned  prometheus.Gauge
	commitErr prometheus.Counter
}

// New returns a counter. reg receives its metrics.
func New(cfg Config, catalog *tenant.Catalog, store Store, log *slog.Logger, reg prometheus.Registerer) (*Counter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := metrics{
		events:    prometheus.NewCounter(prometheus.CounterOpts{Name: "maumeter_count_events_total", Help: "Events consumed by the counter."}),
		devices:   prometheus.NewCounter(prometheus.CounterOpts{Name: "maumeter_count_new_devices_total", Help: "Devices first seen in their tenant-month and written to mau_devices."}),
		dropped:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "maumeter_count_dropped_total", Help: "Messages the counter could not count, by reason."}, []string{"reason"}),
		flushes:   prometheus.NewHistogram(prometheus.HistogramOpts{Name: "maumeter_count_flush_seconds", Help: "Time to insert first-seen devices and commit offsets.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 8)}),
		retries:   prometheus.NewCounter(prometheus.CounterOpts{Name: "maumeter_count_insert_retries_total", Help: "ClickHouse inserts retried."}),
		rebuilt:   prometheus.NewCounter(prometheus.CounterOpts{Name: "maumeter_count_rebuilt_devices_total", Help: "Device keys loaded from mau_devices on partition assignment."}),
		assigned:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "maumeter_count_assigned_partitions", Help: "Partitions this counter owns."}),
		commitErr: prometheus.NewCounter(prometheus.CounterOpts{Name: "maumeter_count_commit_errors_total", Help: "Offset commits that failed (the partition replays from the last good commit)."}),
	}
	for _, c := range []prometheus.Collector{m.events, m.devices, m.dropped, m.flushes, m.retries, m.rebuilt, m.assigned, m.commitErr} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("count metrics: %w", err)
		}
	}
	c := &Counter{cfg: cfg, catalog: catalog, store: store, log: log, m: m}
	c.lastProgress.Store(time.Now().UnixNano())
	return c, nil
}

// LastProgress is when the counter last flushed or found its partitions idle; readiness uses it.
func (c *Counter) LastProgress() time.Time { return time.Unix(0, c.lastProgress.Load()) }

// Run joins the group and counts until ctx is cancelled, then flushes, commits and leaves.
func (c *Counter) Run(ctx context.Context) error {
	group, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID:                     c.cfg.Group,
		Brokers:                c.cfg.Brokers,
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
		}
		c.log.Info("partitions assigned", "generation", gen.ID, "member", gen.MemberID, "partitions", ids)
		c.m.assigned.Set(float64(len(assigned)))
		for _, a := range assigned {
			gen.Start(func(ctx context.Context) { c.consume(ctx, gen, a) })
		}
	}
}

// tenantMonth keys the exact sets of one partition.
type tenantMonth struct{ tenant, month string }

// partition is the state of one assigned partition for one generation. It is owned by one
// goroutine and thrown away when the generation ends.
type partition struct {
	id      int
	sets    map[tenantMonth]*deviceset.Set
	pending []chstore.DeviceRow
	next    int64 // offset to commit: one past the last message processed
	dirty   bool  // next moved since the last commit
}

func (c *Counter) consume(ctx context.Context, gen *kafka.Generation, a kafka.PartitionAssignment) {
	log := c.log.With("partition", a.ID, "generation", gen.ID)
	p := &partition{id: a.ID, sets: map[tenantMonth]*deviceset.Set{}, next: a.Offset}
	start := time.Now()
	if err := c.rebuild(ctx, p); err != nil {
		log.Warn("rebuild abandoned", "err", err)
		return
	}
	log.Info("partition rebuilt", "devices", p.devices(), "sets", len(p.sets), "took", time.Since(start).Round(time.Millisecond), "offset", a.Offset)

	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:       c.cfg.Brokers,
		Topic:         c.cfg.Topic,
		Partition:     a.ID,
		MinBytes:      64 << 10,
		MaxBytes:      16 << 20,
		MaxWait:       250 * time.Millisecond,
		QueueCapacity: 10000,
	})
	defer r.Close()
	offset := a.Offset
	if offset < 0 {
		offset = kafka.FirstOffset
	}
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
	for {
		select {
		case m, ok := <-msgs:
			if !ok {
				c.drain(p, gen, log)
				return
			}
			c.process(p, m)
			if len(p.pending) >= c.cfg.FlushRows {
				if err := c.flush(ctx, p, gen, log); err != nil {
					return
				}
			}
		case <-tick.C:
			if p.dirty {
				if err := c.flush(ctx, p, gen, log); err != nil {
					return
				}
			} else if len(msgs) == 0 {
				c.lastProgress.Store(time.Now().UnixNano())
			}
		case <-ctx.Done():
			c.drain(p, gen, log)
			return
		}
	}
}

// drain makes a last attempt to store and commit what was processed when the generation ends.
// Failing is harmless: the next owner rebuilds from ClickHouse and replays from the last commit.
func (c *Counter) drain(p *partition, gen *kafka.Generation, log *slog.Logger) {
	if !p.dirty {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.flush(ctx, p, gen, log); err != nil {
		log.Info("final flush skipped; the next owner replays", "err", err)
	}
}

func (c *Counter) process(p *partition, m kafka.Message) {
	c.m.events.Inc()
	p.next, p.dirty = m.Offset+1, true
	if !hasSchema(m) {
		c.m.dropped.WithLabelValues("unknown_schema").Inc()
		return
	}
	e, err := event.Decode(m.Value)
	if err != nil {
		c.m.dropped.WithLabelValues("undecodable").Inc()
		c.log.Warn("undecodable event", "partition", m.Partition, "offset", m.Offset, "err", err)
		return
	}
	t, ok := c.catalog.Tenant(e.TenantID)
	if !ok {
		c.m.dropped.WithLabelValues("unknown_tenant").Inc()
		c.log.Warn("event of a tenant not in the catalogue", "tenant", e.TenantID, "partition", m.Partition, "offset", m.Offset)
		return
	}
	tm := tenantMonth{e.TenantID, calendar.MonthOf(e.TS, t.Location()).String()}
	set := p.sets[tm]
	if set == nil {
		set = deviceset.New(1024)
		p.sets[tm] = set
	}
	if !set.Add(e.Key()) {
		return
	}
	p.pending = append(p.pending, chstore.DeviceRow{
		TenantID: e.TenantID, Month: tm.month, AppID: e.AppID, Key: e.Key(), GUID: e.GUID,
		FirstSeenAt: e.TS, FirstEvent: e.Type, MiniProgramID: e.MiniProgramID,
		Partition: int32(m.Partition), Offset: m.Offset,
	})
}

func hasSchema(m kafka.Message) bool {
	for _, h := range m.Headers {
		if h.Key == event.SchemaHeader {
			return string(h.Value) == event.SchemaV1
		}
	}
	return false
}

// flush writes pending rows to ClickHouse, retrying until it succeeds or ctx ends, and only then
// commits the offset. It returns an error only when ctx ended first.
func (c *Counter) flush(ctx context.Context, p *partition, gen *kafka.Generation, log *slog.Logger) error {
	start := time.Now()
	backoff := 100 * time.Millisecond
	for {
		err := c.store.InsertDevices(ctx, p.pending)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c.m.retries.Inc()
		log.Warn("insert devices; retrying", "rows", len(p.pending), "in", backoff, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	c.m.devices.Add(float64(len(p.pending)))
	p.pending = p.pending[:0]
	if err := gen.CommitOffsets(map[string]map[int]int64{c.cfg.Topic: {p.id: p.next}}); err != nil {
		// The rows are stored; a replay from the older offset finds them in the rebuilt sets.
		c.m.commitErr.Inc()
		log.Warn("commit offset", "offset", p.next, "err", err)
		return err
	}
	p.dirty = false
	c.m.flushes.Observe(time.Since(start).Seconds())
	c.lastProgress.Store(time.Now().UnixNano())
	return nil
}

func (c *Counter) rebuild(ctx context.Context, p *partition) error {
	backoff := 100 * time.Millisecond
	for {
		clear(p.sets)
		n := 0
		err := c.store.PartitionDevices(ctx, int32(p.id), "", func(tenant, month string, k event.DeviceKey) {
			tm := tenantMonth{tenant, month}
			set := p.sets[tm]
			if set == nil {
				set = deviceset.New(1024)
				p.sets[tm] = set
			}
			set.Add(k)
			n++
		})
		if err == nil {
			c.m.rebuilt.Add(float64(n))
			return nil
		}
		c.log.Warn("rebuild partition; retrying", "partition", p.id, "in", backoff, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (p *partition) devices() int {
	n := 0
	for _, s := range p.sets {
		n += s.Len()
	}
	return n
}
