package count

// Parked events and the dead-letter queue (docs/ARCHITECTURE.md, "Parked events and the DLQ").
//
// The counter never drops a record. One it cannot decode, or whose schema header it does not
// know, goes to the DLQ topic; an event whose tenant (or app) its catalogue does not know yet is
// parked on the parked topic. Both are stores in the sense of the flush protocol: the side
// records a flush takes are acknowledged by Kafka before the offset past them is committed.
//
// The parked replayer runs in the counter that owns partition 0 (a leader task). It re-produces
// each parked event whose tenant and app the counter's catalogue knows now onto the events
// topic, unchanged (key, value, its own headers), so it lands on the partition its key selects,
// the only partition whose set may hold that device; only after Kafka acknowledged it does it
// commit its position on the parked topic (a simple commit of group <count group>-parked).
// Events still unknown are parked again at the tail in the same step, so they never hold back
// the ones behind them. A pass that could replay nothing writes nothing: the replayer first
// reads the waiting records and only starts moving them when at least one can go.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/maumeter/maumeter/pipeline/bus"
	"github.com/maumeter/maumeter/pkg/event"
	"github.com/maumeter/maumeter/pkg/tenant"
)

// Reasons a record is parked or dead-lettered (the reason label of the metrics and the
// maumeter-reason header).
const (
	ReasonUnknownTenant = "unknown_tenant" // parked: the tenant is not in the counter's catalogue
	ReasonUnknownApp    = "unknown_app"    // parked: the tenant does not list the app
	ReasonUnknownSchema = "unknown_schema" // DLQ: no schema header, or another schema
	ReasonUndecodable   = "undecodable"    // DLQ: the value is not a valid v1 event
)

// fate is what the counter does with one record.
type fate int

const (
	fateCount fate = iota // count it
	fatePark              // park it until the catalogue knows its tenant and app
	fateDead              // dead-letter it
)

// verdict is the decision on one record: its fate, the reason, and for fateCount the event and
// its tenant; err is the decoder's error for fateDead.
type verdict struct {
	fate   fate
	reason string
	err    error
	e      event.Event
	t      *tenant.Tenant
}

// classify decides what the counter does with m under catalogue cat. It does no I/O.
func classify(m kafka.Message, cat *tenant.Catalog) verdict {
	if !hasSchema(m) {
		s, ok := bus.Header(m.Headers, event.SchemaHeader)
		err := errors.New("no schema header")
		if ok {
			err = fmt.Errorf("schema %q is not %s", s, event.SchemaV1)
		}
		return verdict{fate: fateDead, reason: ReasonUnknownSchema, err: err}
	}
	e, err := event.Decode(m.Value)
	if err != nil {
		return verdict{fate: fateDead, reason: ReasonUndecodable, err: err}
	}
	t, ok := cat.Tenant(e.TenantID)
	if !ok {
		return verdict{fate: fatePark, reason: ReasonUnknownTenant, e: e}
	}
	if known, _ := t.App(e.AppID); !known {
		return verdict{fate: fatePark, reason: ReasonUnknownApp, e: e}
	}
	return verdict{fate: fateCount, e: e, t: t}
}

// sideRecord is a record a flush must get acknowledged on the parked or DLQ topic before it
// commits past its source offset.
type sideRecord struct {
	msg    kafka.Message
	dead   bool
	reason string
}

// sideRecordOf builds the parked or DLQ record of m: m's key, value and headers, plus its
// source coordinates, the reason and (DLQ) the error.
func sideRecordOf(m kafka.Message, v verdict, parkedTopic, dlqTopic string) sideRecord {
	errText := ""
	topic := parkedTopic
	if v.fate == fateDead {
		topic = dlqTopic
		errText = v.err.Error()
	}
	return sideRecord{
		msg:  kafka.Message{Topic: topic, Key: m.Key, Value: m.Value, Headers: bus.SideHeaders(m, v.reason, errText)},
		dead: v.fate == fateDead, reason: v.reason,
	}
}

// writeSide stores side records, retrying until Kafka acknowledged them all or ctx ends, and
// counts them.
func (c *Counter) writeSide(ctx context.Context, log *slog.Logger, side []sideRecord) error {
	if len(side) == 0 {
		return nil
	}
	msgs := make([]kafka.Message, len(side))
	for i, s := range side {
		msgs[i] = s.msg
	}
	if err := c.retry(ctx, log, "write parked and dead-letter records", func() error { return c.sideW.Write(ctx, msgs...) }); err != nil {
		return err
	}
	for _, s := range side {
		if s.dead {
			c.m.dead.WithLabelValues(s.reason).Inc()
			src, _ := bus.SourceOf(s.msg.Headers)
			errText, _ := bus.Header(s.msg.Headers, bus.HeaderError)
			log.Warn("record sent to the DLQ", "reason", s.reason, "source", src.String(), "err", errText, "dlq", s.msg.Topic)
		} else {
			c.m.parked.WithLabelValues(s.reason).Inc()
		}
	}
	return nil
}

// SetCatalog puts a new tenant catalogue in force for the counter and its closer: events are
// placed, and months closed, with it from now on, and the parked replayer runs a pass.
func (c *Counter) SetCatalog(cat *tenant.Catalog) {
	c.catalog.Store(cat)
	c.closer.catalog.Store(cat)
	c.catalogGen.Add(1)
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Catalog is the tenant catalogue in force.
func (c *Counter) Catalog() *tenant.Catalog { return c.catalog.Load() }

// WatchCatalog reloads the tenant catalogue at path whenever its content changes, checking
// every interval, until ctx ends (tenant.Watch). check, when not nil, must accept a new
// catalogue too (the plan catalogue's CheckTenants). A file that does not load is logged and
// the catalogue in force stays.
func (c *Counter) WatchCatalog(ctx context.Context, path string, interval time.Duration, check func(*tenant.Catalog) error, opts ...tenant.Option) {
	tenant.Watch(ctx, path, interval, func(cat *tenant.Catalog, err error) {
		if err == nil && check != nil {
			err = check(cat)
		}
		if err != nil {
			c.log.Error("reload tenant catalogue: unreadable or invalid, keeping the one in force", "file", path, "err", err)
			c.m.reloads.WithLabelValues("error").Inc()
			return
		}
		old := c.catalog.Load()
		var added []string
		for _, t := range cat.Tenants {
			if _, ok := old.Tenant(t.ID); !ok {
				added = append(added, t.ID)
			}
		}
		c.SetCatalog(cat)
		c.m.reloads.WithLabelValues("ok").Inc()
		c.log.Info("tenant catalogue reloaded", "file", path, "tenants", len(cat.Tenants), "added", added)
	}, opts...)
}

// ParkedWaiting is the number of parked records not replayed yet: the parked topic's end
// minus the replayer's committed position, over its partitions (0 when the topic is missing).
func (c *Counter) ParkedWaiting(ctx context.Context) (int64, error) {
	n, err := bus.Lag(ctx, c.cfg.Kafka, c.cfg.ParkedGroup, c.cfg.ParkedTopic)
	if errors.Is(err, bus.ErrTopicNotFound) {
		return 0, nil
	}
	return n, err
}

// scanned remembers, per parked partition, up to where a pass read with which catalogue
// generation and found nothing to replay: the next pass with the same catalogue reads only
// what came after.
type scanned struct {
	gen uint64
	to  int64
}

// replayParked is the parked replayer, a leader task: a pass at once, then one every
// ParkedInterval and one after every catalogue change, until ctx ends.
func (c *Counter) replayParked(ctx context.Context) {
	log := c.log.With("component", "parked-replayer", "topic", c.cfg.ParkedTopic)
	prod := bus.NewProducer(c.cfg.Kafka, c.cfg.Topic)
	defer prod.Close()
	seen := map[int]scanned{}
	t := time.NewTicker(c.cfg.ParkedInterval)
	defer t.Stop()
	for {
		if err := c.parkedPass(ctx, log, prod, seen); err != nil && ctx.Err() == nil {
			log.Warn("parked replay pass", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.wake:
		}
	}
}

// parkedPass replays what the catalogue in force can place, partition by partition.
func (c *Counter) parkedPass(ctx context.Context, log *slog.Logger, prod *bus.Producer, seen map[int]scanned) error {
	brokers, topic, group := c.cfg.Kafka, c.cfg.ParkedTopic, c.cfg.ParkedGroup
	parts, err := bus.Partitions(ctx, brokers, topic)
	if errors.Is(err, bus.ErrTopicNotFound) {
		c.m.parkedWaiting.Set(0)
		return nil
	}
	if err != nil {
		return err
	}
	end, err := bus.EndOffsets(ctx, brokers, topic)
	if err != nil {
		return err
	}
	first, err := bus.FirstOffsets(ctx, brokers, topic)
	if err != nil {
		return err
	}
	committed, err := bus.CommittedOffsets(ctx, brokers, group, topic)
	if err != nil {
		return err
	}
	gen := c.catalogGen.Load()
	var waiting int64
	for _, p := range parts {
		from, ok := committed[p]
		if !ok || from < first[p] {
			if ok {
				// Retention removed parked events before they were replayed: acknowledged
				// events lost. Never silent.
				c.m.parkedLost.Add(float64(first[p] - from))
				log.Error("parked events removed by retention before they were replayed", "partition", p,
					"committed", from, "log_start", first[p], "lost", first[p]-from)
			}
			from = first[p]
		}
		if from >= end[p] {
			continue
		}
		scanFrom := from
		if s, ok := seen[p]; ok && s.gen == gen && s.to > from {
			scanFrom = s.to
		}
		movable := false
		if scanFrom < end[p] {
			err := bus.ReadRange(ctx, brokers, topic, p, scanFrom, end[p], func(m kafka.Message) (bool, error) {
				movable = classify(m, c.catalog.Load()).fate != fatePark
				return movable, nil
			})
			if err != nil {
				return err
			}
		}
		if !movable {
			seen[p] = scanned{gen: gen, to: end[p]}
			waiting += end[p] - from
			continue
		}
		reparked, err := c.moveParked(ctx, log, prod, p, from, end[p])
		if err != nil {
			return err
		}
		seen[p] = scanned{gen: gen, to: end[p]}
		waiting += reparked
	}
	c.m.parkedWaiting.Set(float64(waiting))
	return nil
}

// parkedChunk is how many parked records one step of moveParked produces before it commits.
const parkedChunk = 2000

// moveParked moves the parked records [from, end) of partition p: those the catalogue places
// back to the events topic, the others to the parked topic's tail (undecodable ones, which
// the counter never parks, to the DLQ), committing the position after each acknowledged chunk.
// It returns how many it parked again.
func (c *Counter) moveParked(ctx context.Context, log *slog.Logger, prod *bus.Producer, p int, from, end int64) (int64, error) {
	var replay, again []kafka.Message
	var reparked int64
	next := from
	step := func() error {
		if err := c.retry(ctx, log, "replay parked events", func() error { return prod.Reproduce(ctx, replay) }); err != nil {
			return err
		}
		if err := c.retry(ctx, log, "park events again", func() error { return c.sideW.Write(ctx, again...) }); err != nil {
			return err
		}
		if err := c.retry(ctx, log, "commit parked position", func() error {
			return bus.CommitOffsets(ctx, c.cfg.Kafka, c.cfg.ParkedGroup, c.cfg.ParkedTopic, map[int]int64{p: next})
		}); err != nil {
			return err
		}
		c.m.replayed.Add(float64(len(replay)))
		reparked += int64(len(again))
		replay, again = replay[:0], again[:0]
		return nil
	}
	cat := c.catalog.Load()
	err := bus.ReadRange(ctx, c.cfg.Kafka, c.cfg.ParkedTopic, p, from, end, func(m kafka.Message) (bool, error) {
		switch v := classify(m, cat); v.fate {
		case fateCount:
			replay = append(replay, kafka.Message{Key: m.Key, Value: m.Value, Headers: bus.OwnHeaders(m.Headers)})
		case fatePark:
			again = append(again, kafka.Message{Topic: c.cfg.ParkedTopic, Key: m.Key, Value: m.Value, Headers: m.Headers})
		default:
			again = append(again, kafka.Message{Topic: c.cfg.DLQTopic, Key: m.Key, Value: m.Value,
				Headers: bus.Retag(m.Headers, v.reason, v.err.Error())})
		}
		next = m.Offset + 1
		if len(replay)+len(again) >= parkedChunk {
			return false, step()
		}
		return false, nil
	})
	if err != nil {
		return reparked, err
	}
	if next > from {
		if err := step(); err != nil {
			return reparked, err
		}
	}
	log.Info("parked events moved", "partition", p, "from", from, "to", next, "still_parked", reparked)
	return reparked, nil
}

func parkedMetrics() (parked, dead, reloads *prometheus.CounterVec, waiting prometheus.Gauge, replayed, lost prometheus.Counter) {
	parked = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "maumeter_count_parked_total",
		Help: "Events parked on the parked topic because the counter's catalogue does not know their tenant or app yet, by reason (unknown_tenant, unknown_app)."}, []string{"reason"})
	dead = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "maumeter_count_dlq_total",
		Help: "Records sent to the DLQ topic, by reason (unknown_schema, undecodable)."}, []string{"reason"})
	reloads = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "maumeter_count_catalog_reloads_total",
		Help: "Reloads of the counter's tenant catalogue, by result (ok, error)."}, []string{"result"})
	waiting = prometheus.NewGauge(prometheus.GaugeOpts{Name: "maumeter_count_parked_waiting",
		Help: "Parked events not replayed yet, as of the last pass of the parked replayer (set by the counter that owns partition 0)."})
	replayed = prometheus.NewCounter(prometheus.CounterOpts{Name: "maumeter_count_parked_replayed_total",
		Help: "Parked events re-produced onto the events topic once the catalogue knew them."})
	lost = prometheus.NewCounter(prometheus.CounterOpts{Name: "maumeter_count_parked_lost_total",
		Help: "Parked events removed by the parked topic's retention before they were replayed."})
	return
}
