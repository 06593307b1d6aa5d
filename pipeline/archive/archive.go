// Package archive writes the raw events of the events topic to ClickHouse's events table
// (migration 011) in its own consumer group, in large batches, with the counter's rule: a batch's
// offsets are committed only after ClickHouse stored it, so a crash replays and never skips. A
// replayed batch may write events twice; the table folds them (ReplacingMergeTree on dedup_id)
// and exact queries read FINAL. The archive never feeds a bill: mau_devices does.
package archive

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/maumeter/maumeter/pipeline/bus"
	"github.com/maumeter/maumeter/pipeline/chstore"
	"github.com/maumeter/maumeter/pkg/calendar"
	"github.com/maumeter/maumeter/pkg/event"
	"github.com/maumeter/maumeter/pkg/tenant"
)

// Config of the archive.
type Config struct {
	Kafka *bus.Net
	Topic string
	Group string // its own consumer group (default maumeter-archive): the counters' is never shared
	// BatchRows and FlushInterval: a batch is written when it holds BatchRows events (default
	// 50,000) or FlushInterval (default 2 s) after its first event.
	BatchRows     int
	FlushInterval time.Duration
	RetryBackoff  time.Duration // first wait after a failed write (default 500 ms, doubling to 30 s)
}

// Archiver consumes the events topic into the events table. Run it once.
type Archiver struct {
	cfg     Config
	catalog func() *tenant.Catalog
	store   *chstore.Store
	log     *slog.Logger

	events, skipped, retries prometheus.Counter
	batchSec                 prometheus.Histogram
	lastProgress             atomic.Int64
}

// New returns an archiver; catalog gives the tenant catalogue in force (for each event's billing
// month in its tenant's zone; events of tenants it does not know are archived under their UTC
// month).
func New(cfg Config, catalog func() *tenant.Catalog, store *chstore.Store, log *slog.Logger, reg prometheus.Registerer) (*Archiver, error) {
	switch {
	case cfg.Kafka == nil || len(cfg.Kafka.Brokers) == 0:
		return nil, errors.New("archive: brokers are required")
	case cfg.Topic == "":
		return nil, errors.New("archive: topic is required")
	}
	if cfg.Group == "" {
		cfg.Group = "maumeter-archive"
	}
	if cfg.BatchRows <= 0 {
		cfg.BatchRows = 50_000
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = 2 * time.Second
	}
	if cfg.RetryBackoff <= 0 {
		cfg.RetryBackoff = 500 * time.Millisecond
	}
	a := &Archiver{cfg: cfg, catalog: catalog, store: store, log: log,
		events:   prometheus.NewCounter(prometheus.CounterOpts{Name: "maumeter_archive_events_total", Help: "Events written to the events table (a replayed batch counts again)."}),
		skipped:  prometheus.NewCounter(prometheus.CounterOpts{Name: "maumeter_archive_skipped_total", Help: "Records of the events topic the archive cannot decode (the counter sends them to the DLQ)."}),
		retries:  prometheus.NewCounter(prometheus.CounterOpts{Name: "maumeter_archive_write_retries_total", Help: "Batch writes to ClickHouse retried."}),
		batchSec: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "maumeter_archive_batch_seconds", Help: "Time to write a batch to the events table.", Buckets: prometheus.ExponentialBuckets(0.005, 3, 9)}),
	}
	for _, c := range []prometheus.Collector{a.events, a.skipped, a.retries, a.batchSec} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("archive metrics: %w", err)
		}
	}
	a.lastProgress.Store(time.Now().UnixNano())
	return a, nil
}

// LastProgress is when the archive last stored a batch or found nothing to read.
func (a *Archiver) LastProgress() time.Time { return time.Unix(0, a.lastProgress.Load()) }

// Run consumes until ctx ends. What it has stored when ctx ends is committed; what it has not is
// read again by the next archive.
func (a *Archiver) Run(ctx context.Context) error {
	rd := kafka.NewReader(kafka.ReaderConfig{
		Brokers: a.cfg.Kafka.Brokers, Dialer: a.cfg.Kafka.Dialer(), Topic: a.cfg.Topic, GroupID: a.cfg.Group,
		StartOffset: kafka.FirstOffset, MinBytes: 1, MaxBytes: 16 << 20, MaxWait: 500 * time.Millisecond,
		QueueCapacity: 10_000, SessionTimeout: 10 * time.Second, RebalanceTimeout: 10 * time.Second,
	})
	defer rd.Close()
	a.log.Info("archive started", "topic", a.cfg.Topic, "group", a.cfg.Group)
	var (
		rows []chstore.EventRow
		msgs []kafka.Message
	)
	for {
		// Collect a batch: until BatchRows, FlushInterval after its first message, or ctx.
		var deadline time.Time
		for len(msgs) < a.cfg.BatchRows {
			wait := a.cfg.FlushInterval
			if !deadline.IsZero() {
				wait = time.Until(deadline)
			}
			fctx, cancel := context.WithTimeout(ctx, wait)
			m, err := rd.FetchMessage(fctx)
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					break
				}
				if errors.Is(err, context.DeadlineExceeded) {
					if len(msgs) == 0 {
						a.lastProgress.Store(time.Now().UnixNano()) // idle: nothing to read
						continue
					}
					break
				}
				a.log.Warn("archive: fetch failed, retrying", "err", err)
				if !sleep(ctx, a.cfg.RetryBackoff) {
					break
				}
				continue
			}
			if deadline.IsZero() {
				deadline = time.Now().Add(a.cfg.FlushInterval)
			}
			msgs = append(msgs, m)
			if r, ok := a.row(m); ok {
				rows = append(rows, r)
			}
		}
		if len(msgs) > 0 {
			if err := a.store1(ctx, rows, msgs); err != nil {
				return nil // ctx ended before the batch was stored: it is read again
			}
			// Stored: commit even while stopping, so a restart does not write it again.
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			err := rd.CommitMessages(cctx, msgs...)
			cancel()
			if err != nil {
				a.log.Warn("archive: commit failed; the batch may be written again (the table folds it)", "err", err)
			}
			a.lastProgress.Store(time.Now().UnixNano())
			rows, msgs = rows[:0], msgs[:0]
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// store1 writes one batch, retrying until it is stored or ctx ends.
func (a *Archiver) store1(ctx context.Context, rows []chstore.EventRow, msgs []kafka.Message) error {
	first, last := msgs[0], msgs[len(msgs)-1]
	token := fmt.Sprintf("archive/%s/%d/%d/%d/%d", a.cfg.Topic, first.Partition, first.Offset, last.Partition, last.Offset)
	backoff := a.cfg.RetryBackoff
	for {
		start := time.Now()
		// The write is not cancelled by ctx (see chstore: a cancelled query can take the embedded
		// server down); it is bounded by the server's execution time.
		err := a.store.InsertEvents(context.WithoutCancel(ctx), rows, token)
		if err == nil {
			a.batchSec.Observe(time.Since(start).Seconds())
			a.events.Add(float64(len(rows)))
			return nil
		}
		a.retries.Inc()
		a.log.Warn("archive: write failed, retrying", "rows", len(rows), "err", err, "retry_in", backoff)
		if !sleep(ctx, backoff) {
			return ctx.Err()
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// row decodes a record of the events topic. Undecodable records are skipped here: the counter
// puts them on the DLQ, and `maumeter dlq replay` re-produces the fixed ones.
func (a *Archiver) row(m kafka.Message) (chstore.EventRow, bool) {
	if s, _ := bus.Header(m.Headers, event.SchemaHeader); s != event.SchemaV1 {
		a.skipped.Inc()
		return chstore.EventRow{}, false
	}
	e, err := event.Decode(m.Value)
	if err != nil {
		a.skipped.Inc()
		return chstore.EventRow{}, false
	}
	loc := time.UTC
	if t, ok := a.catalog().Tenant(e.TenantID); ok {
		loc = t.Location()
	}
	return chstore.EventRow{Month: calendar.MonthOf(e.TS, loc).String(), Event: e, Partition: int32(m.Partition), Offset: m.Offset}, true
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
