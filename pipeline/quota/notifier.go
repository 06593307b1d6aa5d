package quota

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/maumeter/maumeter/pipeline/bus"
	"github.com/maumeter/maumeter/pipeline/chstore"
	"github.com/maumeter/maumeter/pkg/calendar"
	"github.com/maumeter/maumeter/pkg/plan"
	"github.com/maumeter/maumeter/pkg/tenant"
)

// Config of a Notifier.
type Config struct {
	Kafka    *bus.Net
	Topic    string        // default bus.QuotaTopic (compacted)
	Interval time.Duration // between two looks at every tenant's month (default 10 s)
	// HTTPClient posts the webhooks (default: 10 s timeout). MinBackoff and MaxBackoff bound the
	// waits between attempts (defaults 1 s and 10 min, full jitter).
	HTTPClient             *http.Client
	MinBackoff, MaxBackoff time.Duration
}

// UsageFunc gives the exact MAU per app of a tenant-month so far (the counter's).
type UsageFunc func(ctx context.Context, tm chstore.TenantMonth) (map[string]uint64, error)

// Notifier publishes and delivers quota notices. Run it as a leader task.
type Notifier struct {
	cfg     Config
	catalog func() *tenant.Catalog
	plans   *plan.Catalog
	usage   UsageFunc
	now     func() time.Time
	log     *slog.Logger

	published, delivered, failures prometheus.Counter
}

// New returns a Notifier.
func New(cfg Config, catalog func() *tenant.Catalog, plans *plan.Catalog, usage UsageFunc, now func() time.Time,
	log *slog.Logger, reg prometheus.Registerer) (*Notifier, error) {
	if cfg.Kafka == nil || len(cfg.Kafka.Brokers) == 0 {
		return nil, errors.New("quota: brokers are required")
	}
	if cfg.Topic == "" {
		cfg.Topic = bus.QuotaTopic
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 10 * time.Second
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = time.Second
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(10*time.Minute, cfg.MinBackoff)
	}
	n := &Notifier{cfg: cfg, catalog: catalog, plans: plans, usage: usage, now: now, log: log,
		published: prometheus.NewCounter(prometheus.CounterOpts{Name: "maumeter_quota_notices_published_total", Help: "Quota notices published (one per crossing of a tenant-month)."}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{Name: "maumeter_quota_webhooks_delivered_total", Help: "Quota webhooks the tenant's endpoint answered with 2xx."}),
		failures:  prometheus.NewCounter(prometheus.CounterOpts{Name: "maumeter_quota_webhook_failures_total", Help: "Quota webhook attempts that failed (retried with backoff)."}),
	}
	for _, c := range []prometheus.Collector{n.published, n.delivered, n.failures} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("quota metrics: %w", err)
		}
	}
	return n, nil
}

// record keys on the topic: n/<id> a notice, d/<id> its delivery.
const (
	noticeKey   = "n/"
	deliveryKey = "d/"
)

// Run publishes and delivers until ctx ends (the leader's generation ends).
func (n *Notifier) Run(ctx context.Context) {
	w := bus.NewRecordWriter(n.cfg.Kafka)
	defer w.Close()
	var (
		published map[string]Notice
		delivered map[string]bool
	)
	// The topic is the record of what was published and delivered: read it before anything.
	for {
		var err error
		if published, delivered, err = n.load(ctx); err == nil {
			break
		}
		n.log.Warn("quota: reading the notices topic failed, retrying", "topic", n.cfg.Topic, "err", err)
		if !sleep(ctx, 5*time.Second) {
			return
		}
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	deliver := func(no Notice) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.deliver(ctx, w, no)
		}()
	}
	for id, no := range published {
		if !delivered[id] {
			deliver(no)
		}
	}
	tick := time.NewTicker(n.cfg.Interval)
	defer tick.Stop()
	for {
		for _, no := range n.crossings(ctx) {
			if _, ok := published[no.ID]; ok {
				continue
			}
			body, _ := json.Marshal(no)
			if err := w.Write(ctx, kafka.Message{Topic: n.cfg.Topic, Key: []byte(noticeKey + no.ID), Value: body}); err != nil {
				n.log.Warn("quota: publishing a notice failed; next look retries", "tenant", no.TenantID, "month", no.Month, "kind", no.Kind, "err", err)
				continue
			}
			published[no.ID] = no
			n.published.Inc()
			n.log.Info("quota notice published", "tenant", no.TenantID, "month", no.Month, "kind", no.Kind,
				"billable_mau", no.BillableMAU, "included_mau", no.IncludedMAU)
			deliver(no)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (n *Notifier) load(ctx context.Context) (map[string]Notice, map[string]bool, error) {
	published, delivered := map[string]Notice{}, map[string]bool{}
	err := bus.ReadAll(ctx, n.cfg.Kafka, n.cfg.Topic, func(m kafka.Message) error {
		k := string(m.Key)
		switch {
		case strings.HasPrefix(k, noticeKey):
			var no Notice
			if err := json.Unmarshal(m.Value, &no); err != nil {
				n.log.Warn("quota: unreadable notice on the topic, ignored", "key", k, "err", err)
				return nil
			}
			published[no.ID] = no
		case strings.HasPrefix(k, deliveryKey):
			delivered[strings.TrimPrefix(k, deliveryKey)] = true
		}
		return nil
	})
	return published, delivered, err
}

// crossings prices every tenant's current month and returns what it has crossed.
func (n *Notifier) crossings(ctx context.Context) []Notice {
	now := n.now()
	var out []Notice
	for _, t := range n.catalog().Tenants {
		m := calendar.MonthOf(now, t.Location())
		byApp, err := n.usage(ctx, chstore.TenantMonth{TenantID: t.ID, Month: m.String()})
		if err != nil {
			n.log.Warn("quota: usage unavailable", "tenant", t.ID, "month", m, "err", err)
			continue
		}
		b := n.plans.Price(t, plan.Usage{Month: m, MAUByApp: byApp})
		p, _ := n.plans.Plan(b.Plan)
		out = append(out, Crossed(b, p != nil && p.HardCap, now)...)
	}
	return out
}

// deliver posts no to its tenant's webhook until it answers 2xx, then records the delivery.
func (n *Notifier) deliver(ctx context.Context, w *bus.RecordWriter, no Notice) {
	t, ok := n.catalog().Tenant(no.TenantID)
	if !ok || t.QuotaWebhook == nil {
		return // published only: the tenant has no webhook
	}
	secret := t.QuotaWebhook.Secret()
	if secret == "" {
		n.failures.Inc()
		n.log.Error("quota webhook not sent: its signing secret's environment variable is empty", "tenant", t.ID,
			"secret_env", t.QuotaWebhook.SecretEnv, "notice", no.ID)
		return
	}
	body, _ := json.Marshal(no)
	for attempt := 0; ; attempt++ {
		status, err := n.post(ctx, t.QuotaWebhook.URL, secret, no.ID, body)
		if err == nil && status/100 == 2 {
			break
		}
		if ctx.Err() != nil {
			return
		}
		n.failures.Inc()
		wait := n.backoff(attempt)
		n.log.Warn("quota webhook failed, retrying", "tenant", t.ID, "notice", no.ID, "status", status, "err", err, "retry_in", wait)
		if !sleep(ctx, wait) {
			return
		}
	}
	n.delivered.Inc()
	n.log.Info("quota webhook delivered", "tenant", t.ID, "notice", no.ID, "kind", no.Kind)
	rec, _ := json.Marshal(map[string]any{"id": no.ID, "delivered_at": n.now().UTC()})
	for ctx.Err() == nil {
		// After the 2xx, even while stopping: a restart must not deliver it again.
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		err := w.Write(wctx, kafka.Message{Topic: n.cfg.Topic, Key: []byte(deliveryKey + no.ID), Value: rec})
		cancel()
		if err == nil {
			return
		}
		n.log.Warn("quota: recording a delivery failed, retrying", "notice", no.ID, "err", err)
		sleep(ctx, time.Second)
	}
}

func (n *Notifier) post(ctx context.Context, url, secret, id string, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "maumeter-quota/1")
	req.Header.Set("X-Maumeter-Notice-Id", id)
	req.Header.Set("X-Maumeter-Signature", Signature(secret, time.Now(), body))
	resp, err := n.cfg.HTTPClient.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode, nil
}

func (n *Notifier) backoff(attempt int) time.Duration {
	ceil := n.cfg.MaxBackoff
	if attempt < 30 {
		ceil = min(n.cfg.MaxBackoff, n.cfg.MinBackoff<<attempt)
	}
	return max(time.Duration(rand.Int64N(int64(ceil)+1)), 10*time.Millisecond)
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
