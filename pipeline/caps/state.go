package caps

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/maumeter/maumeter/pipeline/bus"
	"github.com/maumeter/maumeter/pkg/calendar"
	"github.com/maumeter/maumeter/pkg/event"
	"github.com/maumeter/maumeter/pkg/plan"
	"github.com/maumeter/maumeter/pkg/tenant"
)

// ErrNotSynced is returned by Ready until the state has read the whole caps topic once.
var ErrNotSynced = errors.New("cap state not read from Kafka yet")

// StateConfig says where a gateway reads cap states from.
type StateConfig struct {
	Kafka *bus.Net // the brokers and how to reach them (TLS, SASL)
	Topic string   // compacted topic of cap states (default bus.CapsTopic)
	// Window is how far back events are accepted (default 35 days): a tenant-month that ended
	// longer ago than that (and a day) is forgotten, since its events are refused as ts_too_old.
	Window time.Duration
	// ReservationGrace: a device this gateway let in holds its place until a cap state read at
	// least this long after it was let in (by AsOf) shows whether it was counted (default 30s).
	// It bounds how long a device whose batch never reached Kafka holds a place, and must exceed
	// the usual delay from ingest to mau_devices.
	ReservationGrace time.Duration
	// MaxWait is how long one fetch waits for new messages (default 500ms).
	MaxWait time.Duration
}

// Validate checks c and fills defaults.
func (c *StateConfig) Validate() error {
	if c.Kafka == nil || len(c.Kafka.Brokers) == 0 {
		return fmt.Errorf("%w: state brokers are required", ErrConfig)
	}
	if c.Window < 0 || c.ReservationGrace < 0 || c.MaxWait < 0 {
		return fmt.Errorf("%w: state %+v: negative setting", ErrConfig, *c)
	}
	if c.Topic == "" {
		c.Topic = bus.CapsTopic
	}
	if c.Window == 0 {
		c.Window = 35 * 24 * time.Hour
	}
	if c.ReservationGrace == 0 {
		c.ReservationGrace = 30 * time.Second
	}
	if c.MaxWait == 0 {
		c.MaxWait = 500 * time.Millisecond
	}
	return nil
}

// State is a gateway's view of the POC caps: for each tenant-month, the devices the counter has
// counted (from the caps topic) and the devices this gateway let in since (reservations). It
// implements ingest.CapState. Capped is safe for concurrent use and never blocks on I/O; Run
// follows the topic.
type State struct {
	cfg     StateConfig
	catalog *tenant.Catalog
	plans   *plan.Catalog
	mayCap  map[string]bool // tenants with a purchase of a hard-capped plan
	now     func() time.Time
	log     *slog.Logger
	start   time.Time

	mu     sync.RWMutex
	months map[tenantMonth]*monthState

	// Freshness: per partition the unix ns of the last fetch that reached the end of the
	// partition (0: never); absentAt when the topic was last found not to exist.
	parts    atomic.Pointer[[]atomic.Int64]
	absentAt atomic.Int64

	messages    *prometheus.CounterVec
	fetchErrors prometheus.Counter
	delay       prometheus.Histogram
}

// monthState is one tenant-month. Its sets only grow while the month lives, except that
// reservations leave when their device is counted or was evidently never counted.
type monthState struct {
	// limit is the month's largest cap (plan.Catalog.MonthCap) and capped whether any day of it
	// has a cap; daily holds the cap of each day (plan.Catalog.DailyCaps) unless every day has
	// the same, in the tenant's zone loc. Fixed for the process's catalogues.
	limit  int64
	capped bool
	month  calendar.Month
	daily  []plan.Cap
	loc    *time.Location

	mu       sync.Mutex
	counted  map[event.DeviceKey]struct{}
	devices  int64     // counted devices, from the newest message (≥ len(counted) when truncated)
	asOf     time.Time // newest message's AsOf
	reserved map[event.DeviceKey]time.Time
}

func (s *State) newMonthState(tm tenantMonth) *monthState {
	m := &monthState{counted: map[event.DeviceKey]struct{}{}, reserved: map[event.DeviceKey]time.Time{}}
	t, ok := s.catalog.Tenant(tm.TenantID)
	if !ok {
		return m
	}
	month, err := calendar.ParseMonth(tm.Month)
	if err != nil {
		return m
	}
	daily := s.plans.DailyCaps(t, month)
	mc := s.plans.MonthCap(t, month)
	m.limit, m.capped, m.month, m.loc = mc.Limit, mc.Capped, month, t.Location()
	for _, c := range daily {
		if c.Capped != daily[0].Capped || c.Limit != daily[0].Limit {
			m.daily = daily
			break
		}
	}
	return m
}

// capAt is the cap on the day of instant ts in the tenant's zone (plan.Catalog.CapAt). An
// instant outside the month (the caller's month disagrees with the timestamp) takes the cap of
// the month's first or last day.
func (m *monthState) capAt(ts time.Time) (limit int64, capped bool) {
	if m.daily == nil {
		return m.limit, m.capped
	}
	y, mo, d := ts.In(m.loc).Date()
	switch at := (calendar.Month{Year: y, Month: mo}); {
	case at.Before(m.month):
		d = 1
	case m.month.Before(at):
		d = len(m.daily)
	}
	c := m.daily[d-1]
	return c.Limit, c.Capped
}

// NewState returns an empty state; Run fills it. The catalogues give the cap of each day of a
// tenant-month (plan.Catalog.DailyCaps); now is the clock of reservations and of forgetting old months.
func NewState(cfg StateConfig, catalog *tenant.Catalog, plans *plan.Catalog, now func() time.Time, log *slog.Logger, reg prometheus.Registerer) (*State, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &State{
		cfg: cfg, catalog: catalog, plans: plans, mayCap: map[string]bool{}, now: now, log: log.With("component", "caps-state"), start: now(),
		months:      map[tenantMonth]*monthState{},
		messages:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "maumeter_caps_state_messages_total", Help: "Cap state messages read by this gateway, by result (applied, tombstone, unknown_schema, undecodable)."}, []string{"result"}),
		fetchErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "maumeter_caps_state_fetch_errors_total", Help: "Failed reads of the caps topic (the last known state stays in force)."}),
		delay:       prometheus.NewHistogram(prometheus.HistogramOpts{Name: "maumeter_caps_state_delay_seconds", Help: "From a cap state's read of mau_devices (as_of) to its arrival at this gateway.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 12)}),
	}
	age := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "maumeter_caps_state_age_seconds", Help: "Time since this gateway last read the caps topic to its end (since start while it never has)."}, func() float64 {
		at, ok := s.CurrentAsOf()
		if !ok {
			at = s.start
		}
		return s.now().Sub(at).Seconds()
	})
	capped := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "maumeter_caps_state_capped_tenant_months", Help: "Tenant-months whose counted and reserved devices fill the POC cap, as this gateway sees them."}, func() float64 {
		n, _ := s.stats()
		return float64(n)
	})
	reserved := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "maumeter_caps_state_reserved_devices", Help: "Devices this gateway let into POC tenant-months that no cap state lists yet."}, func() float64 {
		_, n := s.stats()
		return float64(n)
	})
	for _, c := range []prometheus.Collector{s.messages, s.fetchErrors, s.delay, age, capped, reserved} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("caps state metrics: %w", err)
		}
	}
	for _, t := range catalog.Tenants {
		s.mayCap[t.ID] = plans.MayCap(t)
	}
	return s, nil
}

// MayCap reports whether some month of t can be capped (a purchase of a hard-capped plan): the
// gateway asks Capped only for such tenants.
func (s *State) MayCap(t *tenant.Tenant) bool { return s.mayCap[t.ID] }

// Capped reports whether an event must be refused with poc_cap_reached: the day of its
// timestamp in the tenant's zone has a cap (plan.Catalog.CapAt: a POC purchase and no paid one
// in force), its tenant-month (month, in the tenant's zone) holds as many devices as that cap,
// counted or reserved here, and its device is none of them. A new device that still fits is
// reserved, so this gateway admits at most the cap however fast devices arrive. Days without a
// cap are never capped, and reserve nothing.
func (s *State) Capped(e *event.Event, month string) bool {
	if !s.mayCap[e.TenantID] {
		return false
	}
	m := s.month(tenantMonth{TenantID: e.TenantID, Month: month}, true)
	if !m.capped {
		return false
	}
	limit, capped := m.capAt(e.TS)
	if !capped {
		return false
	}
	k := e.Key()
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.counted[k]; ok {
		return false
	}
	if _, ok := m.reserved[k]; ok {
		return false
	}
	if m.devices+int64(len(m.reserved)) >= limit {
		return true
	}
	m.reserved[k] = s.now()
	return false
}

// Counted is how many devices of a tenant-month the counter has published as counted (0 while
// no state of it arrived).
func (s *State) Counted(tenantID, month string) int64 {
	m := s.month(tenantMonth{TenantID: tenantID, Month: month}, false)
	if m == nil {
		return 0
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.devices
}

func (s *State) month(tm tenantMonth, create bool) *monthState {
	s.mu.RLock()
	m := s.months[tm]
	s.mu.RUnlock()
	if m != nil || !create {
		return m
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if m = s.months[tm]; m == nil {
		m = s.newMonthState(tm)
		s.months[tm] = m
	}
	return m
}

// apply merges a message into the state: the union of the device lists, the largest count.
// Reservations of devices it lists are done; those made more than ReservationGrace before its
// AsOf and still not listed were never counted (their batch failed, or the client gave up) and
// give their place back.
func (s *State) apply(msg *Message) error {
	if s.expired(msg.Month, s.now()) {
		return nil
	}
	keys := make([]event.DeviceKey, len(msg.DeviceKeys))
	for i, h := range msg.DeviceKeys {
		k, err := parseKey(h)
		if err != nil {
			return err
		}
		keys[i] = k
	}
	m := s.month(tenantMonth{TenantID: msg.TenantID, Month: msg.Month}, true)
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range keys {
		m.counted[k] = struct{}{}
		delete(m.reserved, k)
	}
	m.devices = max(m.devices, msg.Devices, int64(len(m.counted)))
	if msg.AsOf.After(m.asOf) {
		m.asOf = msg.AsOf
	}
	for k, at := range m.reserved {
		if at.Add(s.cfg.ReservationGrace).Before(msg.AsOf) {
			delete(m.reserved, k)
		}
	}
	return nil
}

// forget drops a tenant-month (a tombstone on the topic).
func (s *State) forget(tm tenantMonth) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.months, tm)
}

// prune forgets the tenant-months that ended more than Window (and a day, for the zones) ago.
func (s *State) prune(now time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for tm := range s.months {
		if s.expired(tm.Month, now) {
			delete(s.months, tm)
			n++
		}
	}
	return n
}

// expired reports whether month (YYYY-MM) ended more than Window and a day (for the zones) ago.
func (s *State) expired(month string, now time.Time) bool {
	m, err := calendar.ParseMonth(month)
	return err != nil || m.End(time.UTC).Add(s.cfg.Window+24*time.Hour).Before(now)
}

// stats counts the full tenant-months and the reserved devices.
func (s *State) stats() (capped, reserved int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, m := range s.months {
		m.mu.Lock()
		if m.capped && m.devices+int64(len(m.reserved)) >= m.limit {
			capped++
		}
		reserved += len(m.reserved)
		m.mu.Unlock()
	}
	return capped, reserved
}

// CurrentAsOf is when the state last held everything the caps topic held, and false while it
// never has. A topic that does not exist yet holds nothing.
func (s *State) CurrentAsOf() (time.Time, bool) {
	if parts := s.parts.Load(); parts != nil {
		oldest := int64(math.MaxInt64)
		for i := range *parts {
			v := (*parts)[i].Load()
			if v == 0 {
				return time.Time{}, false
			}
			oldest = min(oldest, v)
		}
		return time.Unix(0, oldest), true
	}
	if v := s.absentAt.Load(); v != 0 {
		return time.Unix(0, v), true
	}
	return time.Time{}, false
}

// Ready fails until the state has read the caps topic to its end once: a gateway that served
// before would admit new devices of full months. Later outages keep the last known state and
// show in maumeter_caps_state_age_seconds instead.
func (s *State) Ready(context.Context) error {
	if _, ok := s.CurrentAsOf(); !ok {
		return ErrNotSynced
	}
	return nil
}

// Run follows the caps topic until ctx ends: it waits for the topic to exist, then reads every
// partition from its first offset, for ever. Kafka errors are logged, counted and retried; the
// last known state stays in force meanwhile.
func (s *State) Run(ctx context.Context) {
	client := s.cfg.Kafka.Client()
	var parts []int
	backoff := 100 * time.Millisecond
	for {
		var err error
		parts, err = bus.Partitions(ctx, s.cfg.Kafka, s.cfg.Topic)
		if err == nil && len(parts) > 0 {
			break
		}
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, bus.ErrTopicNotFound) {
			if s.absentAt.Swap(s.now().UnixNano()) == 0 {
				s.log.Warn("caps topic does not exist yet (`maumeter migrate` creates it); no POC month is capped until it does", "topic", s.cfg.Topic)
			}
		} else {
			s.fetchErrors.Inc()
			s.log.Warn("caps topic metadata; retrying", "topic", s.cfg.Topic, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	current := make([]atomic.Int64, len(parts))
	s.parts.Store(&current)
	s.log.Info("following caps topic", "topic", s.cfg.Topic, "partitions", len(parts))
	var wg sync.WaitGroup
	for i, p := range parts {
		wg.Go(func() { s.follow(ctx, client, p, &current[i]) })
	}
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-t.C:
			s.prune(s.now())
		}
	}
}

// follow reads one partition from its first offset, recording in current when it last reached
// the end.
func (s *State) follow(ctx context.Context, client *kafka.Client, partition int, current *atomic.Int64) {
	log := s.log.With("partition", partition)
	offset := kafka.FirstOffset
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		resp, err := client.Fetch(ctx, &kafka.FetchRequest{Topic: s.cfg.Topic, Partition: partition, Offset: offset,
			MinBytes: 1, MaxBytes: 16 << 20, MaxWait: s.cfg.MaxWait})
		if err == nil && resp.Error != nil {
			err = resp.Error
		}
		if err == nil {
			var read int
			read, err = s.read(resp.Records, &offset, current.Load() != 0)
			// A fetch that reached the high watermark, or found nothing to return after
			// waiting, saw the partition's end.
			if err == nil && (offset >= resp.HighWatermark || read == 0) {
				current.Store(s.now().UnixNano())
			}
		}
		switch {
		case err == nil:
			backoff = 100 * time.Millisecond
			continue
		case ctx.Err() != nil:
			return
		case errors.Is(err, kafka.OffsetOutOfRange):
			log.Warn("caps topic offset out of range; reading again from the first offset", "offset", offset)
			offset = kafka.FirstOffset
			continue
		}
		s.fetchErrors.Inc()
		log.Warn("read caps topic; keeping the last known cap state", "retry_in", backoff, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// read applies the records of a fetch from *offset on, moving *offset past each. live says
// the partition was read to its end before: these are new messages, not the replay of the
// topic at start.
func (s *State) read(records kafka.RecordReader, offset *int64, live bool) (int, error) {
	n := 0
	for {
		r, err := records.ReadRecord()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("read caps record: %w", err)
		}
		if r.Offset < *offset {
			continue // fetches may return a batch that starts before the offset asked for
		}
		if err := s.applyRecord(r, live); err != nil {
			s.log.Warn("cap state message skipped", "offset", r.Offset, "err", err)
		}
		*offset = r.Offset + 1
		n++
	}
}

func (s *State) applyRecord(r *kafka.Record, live bool) error {
	key, err := kafka.ReadAll(r.Key)
	if err != nil {
		return fmt.Errorf("key: %w", err)
	}
	value, err := kafka.ReadAll(r.Value)
	if err != nil {
		return fmt.Errorf("value: %w", err)
	}
	tenantID, month, ok := strings.Cut(string(key), "/")
	if !ok {
		s.messages.WithLabelValues("undecodable").Inc()
		return fmt.Errorf("key %q: want tenant/month", key)
	}
	if value == nil {
		s.forget(tenantMonth{TenantID: tenantID, Month: month})
		s.messages.WithLabelValues("tombstone").Inc()
		return nil
	}
	schema := ""
	for _, h := range r.Headers {
		if h.Key == event.SchemaHeader {
			schema = string(h.Value)
		}
	}
	if schema != bus.CapsSchema {
		s.messages.WithLabelValues("unknown_schema").Inc()
		return fmt.Errorf("key %s: schema %q, want %q", key, schema, bus.CapsSchema)
	}
	var msg Message
	if err := json.Unmarshal(value, &msg); err != nil {
		s.messages.WithLabelValues("undecodable").Inc()
		return fmt.Errorf("key %s: %w", key, err)
	}
	if msg.TenantID != tenantID || msg.Month != month {
		s.messages.WithLabelValues("undecodable").Inc()
		return fmt.Errorf("key %s holds the state of %s/%s", key, msg.TenantID, msg.Month)
	}
	if err := s.apply(&msg); err != nil {
		s.messages.WithLabelValues("undecodable").Inc()
		return fmt.Errorf("key %s: %w", key, err)
	}
	s.messages.WithLabelValues("applied").Inc()
	if live {
		s.delay.Observe(s.now().Sub(msg.AsOf).Seconds())
	}
	return nil
}
