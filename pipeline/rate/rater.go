package rate

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/maumeter/maumeter/pipeline/bus"
	"github.com/maumeter/maumeter/pipeline/chstore"
	"github.com/maumeter/maumeter/pkg/calendar"
	"github.com/maumeter/maumeter/pkg/plan"
	"github.com/maumeter/maumeter/pkg/tenant"
)

// Group is the default consumer group of the raters.
const Group = "maumeter-rate"

// ErrUnknownTenant is returned for a rollup of a tenant the catalogue does not list.
var ErrUnknownTenant = errors.New("tenant not in the catalogue")

// ErrContention is returned when a rating lost its month's billing order maxClaims times in a
// row; it is retried like any failure to reach ClickHouse.
var ErrContention = errors.New("billing order contention")

// maxClaims bounds the attempts of one rating at its month's next billing_seq.
const maxClaims = 100

// Config of a rater.
type Config struct {
	Kafka        *bus.Net      // the brokers and how to reach them (TLS, SASL)
	RollupsTopic string        // default bus.RollupsTopic
	Group        string        // default Group
	RetryBackoff time.Duration // first wait after a failed rating (ClickHouse down); doubles to 30s (default 500ms)
	// OverdueInterval is how often the rater counts the months whose invoice is overdue
	// (default 1m).
	OverdueInterval time.Duration
}

// Rater rates rollups into invoices. Rate is safe for concurrent use; Run consumes the rollups
// topic as a member of the consumer group.
type Rater struct {
	cfg     Config
	tenants *tenant.Catalog
	plans   *plan.Catalog
	store   *chstore.Store
	now     func() time.Time
	log     *slog.Logger

	invoices  *prometheus.CounterVec
	unchanged prometheus.Counter
	lostOrder prometheus.Counter
	late      prometheus.Counter
	skipped   *prometheus.CounterVec
	errors    prometheus.Counter
	overdue   prometheus.Gauge
}

// New returns a rater. now is the clock (time.Now in production).
func New(cfg Config, tenants *tenant.Catalog, plans *plan.Catalog, store *chstore.Store, now func() time.Time, log *slog.Logger, reg prometheus.Registerer) (*Rater, error) {
	if cfg.RollupsTopic == "" {
		cfg.RollupsTopic = bus.RollupsTopic
	}
	if cfg.Group == "" {
		cfg.Group = Group
	}
	if cfg.RetryBackoff <= 0 {
		cfg.RetryBackoff = 500 * time.Millisecond
	}
	if cfg.OverdueInterval <= 0 {
		cfg.OverdueInterval = time.Minute
	}
	r := &Rater{cfg: cfg, tenants: tenants, plans: plans, store: store, now: now, log: log,
		invoices: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "maumeter_rater_invoices_total",
			Help: "Invoices written, by rollup kind (close, restatement)."}, []string{"kind"}),
		unchanged: prometheus.NewCounter(prometheus.CounterOpts{Name: "maumeter_rater_already_rated_total",
			Help: "Rollups whose invoice existed already: nothing written."}),
		lostOrder: prometheus.NewCounter(prometheus.CounterOpts{Name: "maumeter_rater_billing_order_retries_total",
			Help: "Ratings that lost their month's next billing_seq to another rater and placed their invoice again."}),
		late: prometheus.NewCounter(prometheus.CounterOpts{Name: "maumeter_rater_invoices_late_total",
			Help: "Invoices of closed months written after their due time (end of day 3 of the next month)."}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "maumeter_rater_skipped_messages_total",
			Help: "Rollup messages that cannot be rated and were skipped, by reason (unknown_schema, bad_json, unknown_tenant, invalid)."}, []string{"reason"}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{Name: "maumeter_rater_errors_total",
			Help: "Failures that are retried: ratings (ClickHouse unreachable), fetches and commits (Kafka unreachable)."}),
		overdue: prometheus.NewGauge(prometheus.GaugeOpts{Name: "maumeter_rater_months_overdue",
			Help: "Tenant-months with devices whose invoice is due (end of day 3 of the next month) and does not exist: alert on > 0."}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{r.invoices, r.unchanged, r.lostOrder, r.late, r.skipped, r.errors, r.overdue} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("rater metrics: %w", err)
			}
		}
	}
	return r, nil
}

// Rate writes the invoice of rollup ro unless it exists, and returns the invoice and whether it
// was written now. An existing invoice is never rewritten: a bill once issued stays as issued.
//
// The invoice takes the next place in its month's billing order and charges what the month's
// earlier invoices have not billed (Adjust). Two raters may rate versions of one month at once
// (the consumer and an operator's `rate --stored`): the place is taken by a conditional insert
// (chstore.ClaimInvoice), and a rater that loses it re-reads the month, where it finds the
// winner's invoice (or its own version, rated by the other), and places its invoice again.
func (r *Rater) Rate(ctx context.Context, ro *chstore.Rollup) (*chstore.Invoice, bool, error) {
	t, ok := r.tenants.Tenant(ro.TenantID)
	if !ok {
		return nil, false, fmt.Errorf("rate %s %s v%d: %w", ro.TenantID, ro.Month, ro.Version, ErrUnknownTenant)
	}
	tm := chstore.TenantMonth{TenantID: ro.TenantID, Month: ro.Month}
	var inv *chstore.Invoice
	for attempt := 1; ; attempt++ {
		invs, err := r.store.Invoices(ctx, chstore.InvoiceFilter{TenantID: tm.TenantID, Month: tm.Month, AllVersions: true})
		if err != nil {
			return nil, false, err
		}
		for _, have := range invs {
			if have.RollupVersion == ro.Version {
				r.unchanged.Inc()
				return have, false, nil
			}
		}
		if inv, err = Build(t, r.plans, ro, invs, r.store.Database(), r.now()); err != nil {
			return nil, false, err
		}
		won, err := r.store.ClaimInvoice(ctx, inv)
		if err != nil {
			return nil, false, err
		}
		if won {
			break
		}
		// Every loss is another invoice of the month written meanwhile: a month has few versions.
		r.lostOrder.Inc()
		if attempt == maxClaims {
			return nil, false, fmt.Errorf("rate %s %s v%d: lost the billing order %d times: %w", ro.TenantID, ro.Month, ro.Version, attempt, ErrContention)
		}
	}
	r.invoices.WithLabelValues(inv.RollupKind).Inc()
	if inv.RollupKind == "close" && inv.RatedAt.After(inv.DueBy) {
		r.late.Inc()
		r.log.Warn("invoice written after its due time", "tenant", inv.TenantID, "month", inv.Month, "due_by", inv.DueBy)
	}
	if inv.SupersededByVersion > 0 {
		r.log.Warn("stale rollup version invoiced with no charge: a newer version was rated first",
			"invoice", inv.InvoiceID, "tenant", inv.TenantID, "month", inv.Month, "rollup_version", inv.RollupVersion,
			"superseded_by_version", inv.SupersededByVersion)
	}
	r.log.Info("invoice written", "invoice", inv.InvoiceID, "tenant", inv.TenantID, "month", inv.Month,
		"rollup_version", inv.RollupVersion, "billing_seq", inv.BillingSeq, "mau", inv.MAU, "amount_usd", inv.AmountUSD.StringFixed(2),
		"billed_before_usd", inv.BilledBeforeUSD.StringFixed(2), "charge_usd", inv.ChargeUSD.StringFixed(2), "flags", inv.Flags)
	return inv, true, nil
}

// Run consumes the rollups topic until ctx ends, rating every rollup; an offset is committed
// only after its invoice is stored. Messages that can never be rated (unknown schema, bad JSON,
// a tenant missing from the catalogue) are logged, counted and skipped; failures to reach
// ClickHouse are retried with backoff, holding the partition.
func (r *Rater) Run(ctx context.Context) error {
	rd := kafka.NewReader(kafka.ReaderConfig{
		Brokers: r.cfg.Kafka.Brokers, Dialer: r.cfg.Kafka.Dialer(), Topic: r.cfg.RollupsTopic, GroupID: r.cfg.Group,
		StartOffset: kafka.FirstOffset, MaxWait: 500 * time.Millisecond,
		SessionTimeout: 10 * time.Second, RebalanceTimeout: 10 * time.Second,
	})
	defer rd.Close()
	r.log.Info("rater started", "topic", r.cfg.RollupsTopic, "group", r.cfg.Group)
	go r.watchOverdue(ctx)
	// Kafka unreachable (a broker restart) is waited out, not fatal: in `serve` a role that
	// ends stops them all.
	backoff := r.cfg.RetryBackoff
	for {
		msg, err := rd.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			r.errors.Inc()
			r.log.Warn("rater: fetch failed, retrying", "err", err, "retry_in", backoff)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 30*time.Second)
			continue
		}
		backoff = r.cfg.RetryBackoff
		if err := r.handle(ctx, msg); err != nil {
			return nil // ctx ended while retrying
		}
		// What is rated is committed even when the rater is stopping (a drain, see
		// cmd/maumeter runRoles), so that a restart does not rate it again.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		err = rd.CommitMessages(cctx, msg)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// Rated and stored: a redelivery finds the invoice (rating is idempotent), and the
			// next commit covers this offset too.
			r.errors.Inc()
			r.log.Warn("rater: commit failed; the message may be delivered again", "offset", msg.Offset, "err", err)
		}
	}
}

// handle rates one message, retrying until it is rated or skipped; it fails only when ctx ends.
func (r *Rater) handle(ctx context.Context, msg kafka.Message) error {
	ro, reason, err := decode(msg)
	if err != nil {
		r.skip(msg, reason, err)
		return nil
	}
	backoff := r.cfg.RetryBackoff
	for {
		_, _, err := r.Rate(ctx, ro)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, ErrUnknownTenant):
			r.skip(msg, "unknown_tenant", err)
			return nil
		case errors.Is(err, ErrInvalidRollup):
			r.skip(msg, "invalid", err)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r.errors.Inc()
		r.log.Warn("rating failed, retrying", "tenant", ro.TenantID, "month", ro.Month, "version", ro.Version, "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// ErrInvalidRollup is returned for a rollup that can never be rated as it is.
var ErrInvalidRollup = errors.New("invalid rollup")

func (r *Rater) skip(msg kafka.Message, reason string, err error) {
	r.skipped.WithLabelValues(reason).Inc()
	r.log.Error("rollup message skipped: it cannot be rated; fix the cause and rate it again with `maumeter rate --stored`",
		"partition", msg.Partition, "offset", msg.Offset, "key", string(msg.Key), "reason", reason, "err", err)
}

func decode(msg kafka.Message) (*chstore.Rollup, string, error) {
	schema := ""
	for _, h := range msg.Headers {
		if h.Key == "schema" {
			schema = string(h.Value)
		}
	}
	if schema != bus.RollupSchema {
		return nil, "unknown_schema", fmt.Errorf("%w: schema header %q, want %q", ErrInvalidRollup, schema, bus.RollupSchema)
	}
	ro := &chstore.Rollup{}
	if err := json.Unmarshal(msg.Value, ro); err != nil {
		return nil, "bad_json", fmt.Errorf("%w: %v", ErrInvalidRollup, err)
	}
	if ro.TenantID == "" || ro.Month == "" || ro.Version == 0 {
		return nil, "invalid", fmt.Errorf("%w: tenant_id, month and version are required", ErrInvalidRollup)
	}
	return ro, "", nil
}

// RateStored rates every rollup version stored in ClickHouse for a month (YYYY-MM; empty: every
// month) and tenant (empty: every tenant) that has no invoice yet, in version order. It is the
// way back after a rollup message was skipped or compacted away before a rater saw it; a version
// older than one already rated is invoiced stale, with no charge (Adjust). It may run beside
// the rater's consumer.
func (r *Rater) RateStored(ctx context.Context, tenantID, month string) ([]*chstore.Invoice, error) {
	ros, err := r.store.Rollups(ctx, tenantID, month)
	if err != nil {
		return nil, err
	}
	var out []*chstore.Invoice
	for _, ro := range ros {
		inv, written, err := r.Rate(ctx, ro)
		if err != nil {
			return out, err
		}
		if written {
			out = append(out, inv)
		}
	}
	return out, nil
}

// Overdue returns the tenant-months of the catalogue's tenants, among the last three months,
// that have devices but no invoice although their invoice is due.
func (r *Rater) Overdue(ctx context.Context) ([]chstore.TenantMonth, error) {
	now := r.now()
	from := calendar.MonthOf(now, time.UTC).Prev().Prev().Prev()
	months, err := r.store.CountedMonths(ctx, from.String())
	if err != nil {
		return nil, err
	}
	invoiced, err := r.store.InvoicedMonths(ctx, from.String())
	if err != nil {
		return nil, err
	}
	var out []chstore.TenantMonth
	for tm := range months {
		t, ok := r.tenants.Tenant(tm.TenantID)
		m, err := calendar.ParseMonth(tm.Month)
		if !ok || err != nil || invoiced[tm] || now.Before(DueBy(m, t.Location())) {
			continue
		}
		out = append(out, tm)
	}
	slices.SortFunc(out, func(a, b chstore.TenantMonth) int {
		return cmp.Or(cmp.Compare(a.TenantID, b.TenantID), cmp.Compare(a.Month, b.Month))
	})
	return out, nil
}

// watchOverdue keeps maumeter_rater_months_overdue current and logs each overdue month.
func (r *Rater) watchOverdue(ctx context.Context) {
	t := time.NewTicker(r.cfg.OverdueInterval)
	defer t.Stop()
	for {
		if late, err := r.Overdue(ctx); err == nil {
			r.overdue.Set(float64(len(late)))
			for _, tm := range late {
				r.log.Error("invoice overdue: the month has devices, its fees are due, and it is not rated (is it closed? see maumeter_close_* and the counters' lag)",
					"tenant", tm.TenantID, "month", tm.Month)
			}
		} else if ctx.Err() == nil {
			r.log.Warn("overdue check", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
