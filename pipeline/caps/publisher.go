package caps

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/maumeter/maumeter/pipeline/bus"
	"github.com/maumeter/maumeter/pipeline/chstore"
	"github.com/maumeter/maumeter/pkg/calendar"
	"github.com/maumeter/maumeter/pkg/plan"
	"github.com/maumeter/maumeter/pkg/tenant"
)

// ErrConfig wraps configuration errors.
var ErrConfig = errors.New("caps config")

// PublisherConfig says where and how often cap states are published.
type PublisherConfig struct {
	Kafka *bus.Net // the brokers and how to reach them (TLS, SASL)
	Topic string   // compacted topic of cap states (default bus.CapsTopic)
	// Interval between two reads of mau_devices (default 1s). The gateways learn that a month
	// is full at most about Interval + the counter's flush interval after its last device
	// arrived.
	Interval time.Duration
	// Window is how far back events are accepted (default 35 days, the ingest window): the
	// months events of the last Window fall in are published.
	Window time.Duration
	// Republish is how often every state is published again even when unchanged (default 1m):
	// it repairs a message lost or superseded during a rebalance, and its fresh AsOf frees the
	// places gateways reserved for devices that never reached the counter.
	Republish time.Duration
	// MaxKeys bounds the device keys of one message (default 20,000, about 700 KB of JSON).
	MaxKeys int
}

// Validate checks c and fills defaults.
func (c *PublisherConfig) Validate() error {
	if c.Kafka == nil || len(c.Kafka.Brokers) == 0 {
		return fmt.Errorf("%w: publisher brokers are required", ErrConfig)
	}
	if c.Interval < 0 || c.Window < 0 || c.Republish < 0 || c.MaxKeys < 0 {
		return fmt.Errorf("%w: publisher %+v: negative setting", ErrConfig, *c)
	}
	if c.Topic == "" {
		c.Topic = bus.CapsTopic
	}
	if c.Interval == 0 {
		c.Interval = time.Second
	}
	if c.Window == 0 {
		c.Window = 35 * 24 * time.Hour
	}
	if c.Republish == 0 {
		c.Republish = time.Minute
	}
	if c.MaxKeys == 0 {
		c.MaxKeys = 20000
	}
	return nil
}

// Publisher publishes the cap state of every POC tenant-month (a month with a capped day) of
// the ingest window. Run it in one process at a time (the counter that owns partition 0); two
// at once during a rebalance publish the same facts, which consumers merge.
type Publisher struct {
	cfg     PublisherConfig
	catalog *tenant.Catalog
	plans   *plan.Catalog
	store   *chstore.Store
	now     func() time.Time
	log     *slog.Logger

	published prometheus.Counter
	failures  prometheus.Counter
	capped    prometheus.Gauge
	duration  prometheus.Histogram
}

// NewPublisher returns a publisher reading store; the catalogues give each tenant-month's cap
// (plan.Catalog.MonthCap, the largest of its days'); now is its clock (the ingest window and
// AsOf).
func NewPublisher(cfg PublisherConfig, catalog *tenant.Catalog, plans *plan.Catalog, store *chstore.Store, now func() time.Time, log *slog.Logger, reg prometheus.Registerer) (*Publisher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &Publisher{
		cfg: cfg, catalog: catalog, plans: plans, store: store, now: now, log: log.With("component", "caps-publisher"),
		published: prometheus.NewCounter(prometheus.CounterOpts{Name: "maumeter_caps_published_total", Help: "POC cap state messages published."}),
		failures:  prometheus.NewCounter(prometheus.CounterOpts{Name: "maumeter_caps_check_errors_total", Help: "Cap checks that failed to read ClickHouse or publish (retried at the next interval)."}),
		capped:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "maumeter_caps_capped_tenant_months", Help: "POC tenant-months of the ingest window whose counted devices reached the cap, at the last check."}),
		duration:  prometheus.NewHistogram(prometheus.HistogramOpts{Name: "maumeter_caps_check_seconds", Help: "Time to read the POC device counts and publish what changed.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 8)}),
	}
	for _, c := range []prometheus.Collector{p.published, p.failures, p.capped, p.duration} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("caps publisher metrics: %w", err)
		}
	}
	return p, nil
}

// sent is what was last published for a tenant-month.
type sent struct {
	cap, devices int64
}

// Run publishes every Interval until ctx ends, and returns only then (kafka-go ends a
// generation as soon as one of the functions it started returns). It starts by publishing
// every state, so a restarted or newly elected publisher repairs the topic.
func (p *Publisher) Run(ctx context.Context) {
	w := bus.NewJSONPublisher(p.cfg.Kafka, p.cfg.Topic, bus.CapsSchema)
	defer w.Close()
	p.log.Info("cap publisher started", "topic", p.cfg.Topic, "interval", p.cfg.Interval)
	last := map[tenantMonth]sent{}
	republished := p.now()
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	var failingSince, logged time.Time // an outage is logged when it starts and every 30 s
	for {
		if now := p.now(); now.Sub(republished) >= p.cfg.Republish {
			clear(last)
			republished = now
		}
		err := p.check(ctx, w, last)
		switch {
		case ctx.Err() != nil:
		case err != nil:
			p.failures.Inc()
			if failingSince.IsZero() {
				failingSince = time.Now()
			}
			if time.Since(logged) >= 30*time.Second {
				logged = time.Now()
				p.log.Warn("cap check; retrying every interval, gateways keep the last published state",
					"failing_for", time.Since(failingSince).Round(time.Second), "err", err)
			}
		case !failingSince.IsZero():
			p.log.Info("cap check works again", "failed_for", time.Since(failingSince).Round(time.Second))
			failingSince, logged = time.Time{}, time.Time{}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// check reads the device counts of the POC tenant-months and publishes those that differ from
// last, updating it.
func (p *Publisher) check(ctx context.Context, w *bus.JSONPublisher, last map[tenantMonth]sent) error {
	start := time.Now()
	defer func() { p.duration.Observe(time.Since(start).Seconds()) }()
	now := p.now()
	tenants := map[string]*tenant.Tenant{}
	first := map[string]string{} // tenant → first month of the ingest window in its zone
	var ids []string
	from := ""
	for _, t := range p.catalog.Tenants {
		if !p.plans.MayCap(t) {
			continue
		}
		m := calendar.MonthOf(now.Add(-p.cfg.Window), t.Location()).String()
		tenants[t.ID], first[t.ID] = t, m
		ids = append(ids, t.ID)
		if from == "" || m < from {
			from = m
		}
	}
	if len(ids) == 0 {
		p.capped.Set(0)
		return nil
	}
	counts, err := p.store.DeviceCounts(ctx, ids, from)
	if err != nil {
		return err
	}
	full := 0
	var errs []error
	for tm, n := range counts {
		month, err := calendar.ParseMonth(tm.Month)
		if err != nil || tm.Month < first[tm.TenantID] {
			continue
		}
		mc := p.plans.MonthCap(tenants[tm.TenantID], month)
		if !mc.Capped {
			continue // no day of the month is capped
		}
		limit := mc.Limit
		devices := int64(n)
		if devices >= limit {
			full++
		}
		prev, seen := last[tm]
		if seen && prev.cap == limit && prev.devices == devices {
			continue
		}
		keys, err := p.store.DeviceKeys(ctx, tm, p.cfg.MaxKeys)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		// Devices flushed between the two reads are listed: the list is never older than the count.
		devices = max(devices, int64(len(keys)))
		msg := Message{
			TenantID: tm.TenantID, Month: tm.Month, Plan: mc.Plan, Cap: limit,
			Devices: devices, Capped: devices >= limit, DeviceKeys: hexKeys(keys),
			Truncated: len(keys) == p.cfg.MaxKeys && devices > int64(len(keys)), AsOf: now,
		}
		if err := w.Publish(ctx, Key(tm), msg); err != nil {
			errs = append(errs, err)
			continue
		}
		p.published.Inc()
		last[tm] = sent{cap: limit, devices: devices}
		if msg.Truncated {
			p.log.Warn("POC tenant-month has more devices than a cap state lists; unlisted counted devices are refused",
				"tenant", tm.TenantID, "month", tm.Month, "devices", devices, "listed", len(keys))
		}
		if msg.Capped && (!seen || prev.devices < prev.cap) {
			p.log.Info("POC tenant-month reached its cap; gateways now refuse new devices", "tenant", tm.TenantID,
				"month", tm.Month, "plan", msg.Plan, "cap", limit, "devices", devices)
		}
	}
	p.capped.Set(float64(full))
	return errors.Join(errs...)
}
