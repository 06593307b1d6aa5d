package count

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/maumeter/maumeter/pipeline/bus"
	"github.com/maumeter/maumeter/pipeline/chstore"
	"github.com/maumeter/maumeter/pkg/calendar"
	"github.com/maumeter/maumeter/pkg/sketch"
	"github.com/maumeter/maumeter/pkg/tenant"
)

// ErrNotCaughtUp is returned by Close while the counters have not consumed every partition up
// to the close watermark yet.
var ErrNotCaughtUp = errors.New("counters have not consumed up to the close watermark yet")

// ErrMonthNotOver is returned by Close for a month that has not ended in the tenant's zone.
var ErrMonthNotOver = errors.New("month has not ended in the tenant's time zone")

// DefaultGrace and MaxGrace bound the wait between the end of a month and its close. Fees are
// deducted within the first 3 days of the next month, so the close (and the rating that follows
// it within seconds) must happen before the end of day 3: the default leaves a day for late
// events to arrive before the close and a day of margin after it; devices that arrive later are
// restatements with adjustments.
const (
	DefaultGrace = 48 * time.Hour
	MaxGrace     = 71 * time.Hour
)

// CloseConfig says when months close.
type CloseConfig struct {
	// Grace is how long after the end of the month in the tenant's zone it closes (default 48h).
	// It must leave time to rate the month before the end of day 3 of the next month, when its
	// fees are deducted: at most MaxGrace.
	Grace         time.Duration
	CheckInterval time.Duration // how often the closer looks (default 10s)
	// AutoWindow bounds automatic closes: a month whose close time is older than this is a
	// backfill and closes only when an import finishes or an operator runs `maumeter close`
	// (default 35 days, the ingest window). Restatements are automatic within it too.
	AutoWindow   time.Duration
	RollupsTopic string // compacted topic the rollups are published to (default mau.rollups.v1)
}

func (c *CloseConfig) validate() error {
	if c.Grace < 0 || c.Grace > MaxGrace {
		return fmt.Errorf("%w: close grace %s must be between 0 and %s: a month must be closed and rated before the end of day 3 of the next month", ErrConfig, c.Grace, MaxGrace)
	}
	if c.Grace == 0 {
		c.Grace = DefaultGrace
	}
	if c.CheckInterval <= 0 {
		c.CheckInterval = 10 * time.Second
	}
	if c.AutoWindow <= 0 {
		c.AutoWindow = 35 * 24 * time.Hour
	}
	if c.RollupsTopic == "" {
		c.RollupsTopic = bus.RollupsTopic
	}
	return nil
}

// Closer closes tenant-months and restates closed ones. One closer at a time runs the automatic
// loop: the counter that owns partition 0. Close may also be called by commands (import,
// `maumeter close`). It is safe for concurrent use.
type Closer struct {
	cfg     CloseConfig
	kafka   *bus.Net // brokers, TLS, SASL
	topic   string
	group   string
	catalog atomic.Pointer[tenant.Catalog] // the counter's SetCatalog swaps it
	store   *chstore.Store
	now     func() time.Time
	log     *slog.Logger

	mu         sync.Mutex
	watermarks map[tenantMonth]chstore.Watermark

	rollups       *prometheus.CounterVec
	disagreements prometheus.Counter
	mismatches    prometheus.Counter
	lost          prometheus.Counter
}

// NewCloser returns a closer. kafkaNet, topic and group are the events topic and the counters'
// group whose progress a close waits for.
func NewCloser(cfg CloseConfig, kafkaNet *bus.Net, topic, group string, catalog *tenant.Catalog, store *chstore.Store, now func() time.Time, log *slog.Logger, reg prometheus.Registerer) (*Closer, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	c := &Closer{
		cfg: cfg, kafka: kafkaNet, topic: topic, group: group, store: store, now: now,
		log: log.With("component", "closer"), watermarks: map[tenantMonth]chstore.Watermark{},
		rollups:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "maumeter_close_rollups_total", Help: "Monthly rollups written, by kind (close, restatement)."}, []string{"kind"}),
		disagreements: prometheus.NewCounter(prometheus.CounterOpts{Name: "maumeter_close_hll_disagreements_total", Help: "Rollups whose HLL estimate is off the exact MAU by more than 3 standard errors."}),
		mismatches:    prometheus.NewCounter(prometheus.CounterOpts{Name: "maumeter_close_memory_mismatches_total", Help: "Closes whose in-memory sum differs from the exact MAU in ClickHouse."}),
		lost:          prometheus.NewCounter(prometheus.CounterOpts{Name: "maumeter_close_versions_lost_total", Help: "Rollup versions another close wrote first (the loser re-reads and restates if devices are missing)."}),
	}
	c.catalog.Store(catalog)
	for _, col := range []prometheus.Collector{c.rollups, c.disagreements, c.mismatches, c.lost} {
		if err := reg.Register(col); err != nil {
			return nil, fmt.Errorf("close metrics: %w", err)
		}
	}
	return c, nil
}

// CloseAt is when a tenant-month may close: the end of the month in the tenant's zone plus the
// grace period.
func (c *Closer) CloseAt(t *tenant.Tenant, month calendar.Month) time.Time {
	return month.End(t.Location()).Add(c.cfg.Grace)
}

// Run closes and restates months every CheckInterval until ctx ends. It first republishes the
// rollups of the window, so a rollup whose publication was interrupted reaches the rater.
func (c *Closer) Run(ctx context.Context) {
	pub := bus.NewJSONPublisher(c.kafka, c.cfg.RollupsTopic, bus.RollupSchema)
	defer pub.Close()
	c.log.Info("closer started", "grace", c.cfg.Grace, "interval", c.cfg.CheckInterval)
	republished := false
	t := time.NewTicker(c.cfg.CheckInterval)
	defer t.Stop()
	for {
		if !republished {
			republished = c.republish(ctx, pub) == nil
		}
		if err := c.check(ctx, pub); err != nil && ctx.Err() == nil {
			c.log.Warn("close check", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (c *Closer) republish(ctx context.Context, pub *bus.JSONPublisher) error {
	latest, err := c.store.LatestRollups(ctx)
	if err != nil {
		return err
	}
	for _, r := range latest {
		if r.ClosedAt.After(c.now().Add(-c.cfg.AutoWindow)) {
			if err := pub.Publish(ctx, r.TenantID+"/"+r.Month, r); err != nil {
				return err
			}
		}
	}
	return nil
}

// check closes the months whose time has come and restates closed months with new devices.
func (c *Closer) check(ctx context.Context, pub *bus.JSONPublisher) error {
	now := c.now()
	latest, err := c.store.LatestRollups(ctx)
	if err != nil {
		return err
	}
	// Months older than this cannot close automatically any more (see AutoWindow).
	from := calendar.MonthOf(now.Add(-c.cfg.AutoWindow-c.cfg.Grace), time.UTC).Prev().Prev()
	months, err := c.store.Frontiers(ctx, from.String(), nil)
	if err != nil {
		return err
	}
	var errs []error
	for tm, frontier := range months {
		t, ok := c.catalog.Load().Tenant(tm.TenantID)
		if !ok {
			continue
		}
		m, err := calendar.ParseMonth(tm.Month)
		if err != nil {
			continue
		}
		closeAt := c.CloseAt(t, m)
		if now.Before(closeAt) || closeAt.Before(now.Add(-c.cfg.AutoWindow)) {
			continue
		}
		prev := latest[tm]
		if prev != nil && prev.Watermark.Below(frontier) {
			continue // closed, nothing new
		}
		_, err = c.close(ctx, tm, prev, pub)
		switch {
		case errors.Is(err, ErrNotCaughtUp), errors.Is(err, chstore.ErrVersionTaken):
			// Next check: the counters catch up; a lost race re-reads the winner's version.
		case err != nil:
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Close closes tenant-month tm now (or restates it when it is closed and has new devices),
// waiting until the counters have consumed every partition up to the offsets Kafka holds when
// it starts, or until ctx ends. It returns the rollup written, or nil when the month was closed
// and nothing changed. The month must have ended in the tenant's zone; the grace period is the
// caller's decision. When another close wins the version it was writing, it reads the winner's
// version and restates it if devices are still missing from it.
func (c *Closer) Close(ctx context.Context, tm tenantMonth) (*chstore.Rollup, error) {
	t, ok := c.catalog.Load().Tenant(tm.TenantID)
	if !ok {
		return nil, fmt.Errorf("close %s %s: tenant not in the catalogue", tm.TenantID, tm.Month)
	}
	m, err := calendar.ParseMonth(tm.Month)
	if err != nil {
		return nil, fmt.Errorf("close %s: %w", tm.TenantID, err)
	}
	if c.now().Before(m.End(t.Location())) {
		return nil, fmt.Errorf("close %s %s: %w (ends %s)", tm.TenantID, tm.Month, ErrMonthNotOver, m.End(t.Location()).Format(time.RFC3339))
	}
	pub := bus.NewJSONPublisher(c.kafka, c.cfg.RollupsTopic, bus.RollupSchema)
	defer pub.Close()
	for {
		latest, err := c.store.LatestRollups(ctx)
		if err != nil {
			return nil, err
		}
		// Whether a closed month has new devices is known only once the counters caught up:
		// close waits for that before it looks.
		r, err := c.close(ctx, tm, latest[tm], pub)
		switch {
		case errors.Is(err, chstore.ErrVersionTaken):
			continue // at once: the winner's version is stored
		case !errors.Is(err, ErrNotCaughtUp):
			return r, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("close %s %s: %w", tm.TenantID, tm.Month, err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// close writes the next rollup version of tm once the counters have caught up with its
// watermark, and publishes it. For a closed month (prev not nil) without devices beyond prev's
// watermark it writes nothing and returns nil. When another close wrote that version first it
// returns chstore.ErrVersionTaken and publishes nothing.
func (c *Closer) close(ctx context.Context, tm tenantMonth, prev *chstore.Rollup, pub *bus.JSONPublisher) (*chstore.Rollup, error) {
	wm, err := c.watermark(ctx, tm)
	if err != nil {
		return nil, err
	}
	if prev != nil {
		// A version never covers less than the one before it, whoever took which watermark.
		wm = wm.MaxWith(prev.Watermark)
	}
	committed, err := bus.CommittedOffsets(ctx, c.kafka, c.group, c.topic)
	if err != nil {
		return nil, err
	}
	for p, end := range wm {
		if end > 0 && committed[int(p)] < end {
			return nil, ErrNotCaughtUp
		}
	}
	if prev != nil {
		frontiers, err := c.store.Frontiers(ctx, tm.Month, &tm)
		if err != nil {
			return nil, err
		}
		if prev.Watermark.Below(frontiers[tm]) {
			c.forget(tm)
			return nil, nil
		}
	}
	facts, err := c.store.Facts(ctx, tm, wm)
	if err != nil {
		return nil, err
	}
	parts, err := c.store.LatestPartitionRollups(ctx, -1, &tm)
	if err != nil {
		return nil, err
	}
	merged := sketch.NewMonth()
	var memory uint64
	for _, pr := range parts {
		memory += pr.ExactDevices
		sk := sketch.NewMonth()
		if err := sk.UnmarshalBinary(pr.Sketches); err != nil {
			c.log.Warn("unreadable partition sketches left out of the cross-check", "tenant", tm.TenantID, "month", tm.Month, "partition", pr.Partition, "err", err)
			continue
		}
		if err := merged.Merge(sk); err != nil {
			return nil, fmt.Errorf("merge sketches %s %s: %w", tm.TenantID, tm.Month, err)
		}
	}
	r := &chstore.Rollup{
		TenantID: tm.TenantID, Month: tm.Month, Version: 1, Kind: "close",
		MAU: facts.MAU, MAUMemory: memory, MAUByApp: facts.ByApp,
		Watermark: wm, Writer: writerID(), ClosedAt: c.now(),
	}
	if prev != nil {
		// A restatement: the in-memory sets of the month are gone, so the in-memory figure is
		// the exact one, and the sketches are the previous version's with whatever partitions
		// still hold merged in.
		r.Version, r.Kind, r.MAUMemory = prev.Version+1, "restatement", facts.MAU
		old, err := c.store.RollupSketches(ctx, tm, prev.Version)
		if err != nil {
			return nil, err
		}
		sk := sketch.NewMonth()
		if err := sk.UnmarshalBinary(old); err == nil {
			if err := merged.Merge(sk); err != nil {
				return nil, fmt.Errorf("merge sketches %s %s: %w", tm.TenantID, tm.Month, err)
			}
		}
	}
	r.HLLEstimate, r.HLLRelativeError, r.DAU = merged.Estimate(), merged.RelativeError(), merged.Days()
	r.MiniPrograms = uint32(len(merged.MiniPrograms()))
	if merged.OtherMiniPrograms() > 0 {
		r.MiniPrograms++ // at least one beyond the kept ones: more than MaxMiniPrograms
	}
	if r.Sketches, err = merged.MarshalBinary(); err != nil {
		return nil, fmt.Errorf("marshal sketches %s %s: %w", tm.TenantID, tm.Month, err)
	}
	if err := c.store.WriteRollup(ctx, r); err != nil {
		if errors.Is(err, chstore.ErrVersionTaken) {
			c.lost.Inc()
			c.forget(tm)
			c.log.Info("another close wrote this rollup version first; re-reading it", "tenant", tm.TenantID, "month", tm.Month, "version", r.Version)
		}
		return nil, err
	}
	c.forget(tm)
	if bound := 3*r.HLLRelativeError*float64(r.MAU) + 3; math.Abs(float64(r.HLLEstimate)-float64(r.MAU)) > bound {
		c.disagreements.Inc()
		c.log.Warn("HLL estimate disagrees with the exact MAU beyond 3 standard errors", "tenant", tm.TenantID, "month", tm.Month,
			"mau", r.MAU, "hll_estimate", r.HLLEstimate, "bound", int64(bound))
	}
	if r.Kind == "close" && r.MAUMemory != r.MAU {
		c.mismatches.Inc()
		c.log.Warn("in-memory sum differs from the exact MAU", "tenant", tm.TenantID, "month", tm.Month, "mau", r.MAU, "mau_memory", r.MAUMemory)
	}
	c.rollups.WithLabelValues(r.Kind).Inc()
	c.log.Info("rollup written", "tenant", tm.TenantID, "month", tm.Month, "version", r.Version, "kind", r.Kind,
		"mau", r.MAU, "mau_memory", r.MAUMemory, "hll_estimate", r.HLLEstimate, "writer", r.Writer)
	if err := pub.Publish(ctx, tm.TenantID+"/"+tm.Month, r); err != nil {
		// Stored, not yet published: the closer republishes the window when it (re)starts.
		c.log.Warn("publish rollup; it is republished when the closer restarts", "tenant", tm.TenantID, "month", tm.Month, "err", err)
	}
	return r, nil
}

// forget drops the watermark a close of tm waited for: the next close takes a new one.
func (c *Closer) forget(tm tenantMonth) {
	c.mu.Lock()
	delete(c.watermarks, tm)
	c.mu.Unlock()
}

// writerID is a random id for one rollup write, unique among the closes that may race.
func writerID() string { return rand.Text() }

// watermark is the end offsets of the events topic when the close of tm began.
func (c *Closer) watermark(ctx context.Context, tm tenantMonth) (chstore.Watermark, error) {
	c.mu.Lock()
	wm := c.watermarks[tm]
	c.mu.Unlock()
	if wm != nil {
		return wm, nil
	}
	end, err := bus.EndOffsets(ctx, c.kafka, c.topic)
	if err != nil {
		return nil, err
	}
	wm = make(chstore.Watermark, len(end))
	for p, o := range end {
		wm[int32(p)] = o
	}
	c.mu.Lock()
	c.watermarks[tm] = wm
	c.mu.Unlock()
	return wm, nil
}
