// Package loadgen generates super-app traffic and sends it to an ingest endpoint the way SDKs
// do: batches of one tenant over HTTP with that tenant's ingest key, retried on 429, 503 and
// network errors (so the meter sees the same events twice). It also computes the truth of what
// the endpoint accepted, the exact MAU per tenant-month, which the demo prints beside what the
// meter counted. Events refused with poc_cap_reached (a full POC month) are expected and left
// out of the truth; any other rejection of a generated event is an error.
package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/maumeter/maumeter/pkg/calendar"
	"github.com/maumeter/maumeter/pkg/population"
)

// Tenant is one tenant to generate traffic for.
type Tenant struct {
	ID       string
	Apps     []string
	Location *time.Location
	Devices  int // distinct GUIDs
}

// Config of a run.
type Config struct {
	URL         string            // the POST /v1/events endpoint
	Keys        map[string]string // tenant → ingest key (Authorization: Bearer)
	Tenants     []Tenant
	EventsPer   float64 // mean events per device (≥ 1; every device sends at least one)
	From, To    time.Time
	Batch       int // events per request (default 500)
	Concurrency int // requests in flight (default 4)
	Seed        uint64
	// Returning, when set, makes each tenant's devices a returning population (pkg/population)
	// instead of devices each seen at random instants of [From, To): per app, Tenant.Devices /
	// len(Apps) devices whose daily return probabilities are these segments' (e.g.
	// population.Typical), installs of 1/180 of them a day and churn of 1/180 a day; each
	// active day sends 1 + Exp(EventsPer − 1) events. The month's first sightings then thin
	// out as a real app's do, which is what the projection is backtested on.
	Returning []population.Segment
}

// Stats is what a run did.
type Stats struct {
	Events   int64 // events generated
	Accepted int64 // events the endpoint acknowledged
	Rejected int64 // events refused with poc_cap_reached (any other reason stops the run)
	Retries  int64 // requests sent again
	Requests int64
	Elapsed  time.Duration
	// Truth is the exact number of distinct (app, guid) per tenant and billing month among the
	// accepted events.
	Truth map[string]map[string]int
	// Capped is, per tenant and billing month, the distinct (app, guid) none of whose events
	// were accepted because the POC month was full.
	Capped map[string]map[string]int
}

// ReasonPOCCapReached is the rejection a generated event may get: its POC tenant-month is full.
const ReasonPOCCapReached = "poc_cap_reached"

type wireEvent struct {
	TenantID      string `json:"tenant_id"`
	AppID         string `json:"app_id"`
	GUID          string `json:"guid"`
	Event         string `json:"event"`
	MiniProgramID string `json:"mini_program_id,omitempty"`
	TS            string `json:"ts"`
	month         string // billing month in the tenant's zone
}

// truth collects the devices of accepted and capped events per tenant, month and app/guid.
type truth struct {
	mu       sync.Mutex
	accepted map[string]map[string]map[string]struct{}
	capped   map[string]map[string]map[string]struct{}
}

func add(m map[string]map[string]map[string]struct{}, e *wireEvent) {
	if m[e.TenantID] == nil {
		m[e.TenantID] = map[string]map[string]struct{}{}
	}
	if m[e.TenantID][e.month] == nil {
		m[e.TenantID][e.month] = map[string]struct{}{}
	}
	m[e.TenantID][e.month][e.AppID+"/"+e.GUID] = struct{}{}
}

// record notes the outcome of an acknowledged batch; capped holds the indexes refused.
func (t *truth) record(b []wireEvent, capped map[int]bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range b {
		if capped[i] {
			add(t.capped, &b[i])
		} else {
			add(t.accepted, &b[i])
		}
	}
}

// counts returns the truth and the capped devices never accepted, per tenant and month.
func (t *truth) counts() (accepted, capped map[string]map[string]int) {
	accepted, capped = map[string]map[string]int{}, map[string]map[string]int{}
	for tenant, months := range t.accepted {
		accepted[tenant] = map[string]int{}
		for m, set := range months {
			accepted[tenant][m] = len(set)
		}
	}
	for tenant, months := range t.capped {
		for m, set := range months {
			n := 0
			for d := range set {
				if _, ok := t.accepted[tenant][m][d]; !ok {
					n++
				}
			}
			if n > 0 {
				if capped[tenant] == nil {
					capped[tenant] = map[string]int{}
				}
				capped[tenant][m] = n
			}
		}
	}
	return accepted, capped
}

var eventTypes = []string{"search", "pre_download", "open"}

// Run generates the traffic and sends it, returning when every batch was acknowledged or ctx
// ended.
func Run(ctx context.Context, cfg Config, client *http.Client) (Stats, error) {
	if cfg.Batch <= 0 {
		cfg.Batch = 500
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 4
	}
	if cfg.EventsPer < 1 {
		cfg.EventsPer = 1
	}
	if !cfg.To.After(cfg.From) {
		return Stats{}, errors.New("loadgen: To must be after From")
	}
	start := time.Now()
	st := Stats{}
	tr := &truth{accepted: map[string]map[string]map[string]struct{}{}, capped: map[string]map[string]map[string]struct{}{}}
	for _, t := range cfg.Tenants {
		if cfg.Keys[t.ID] == "" {
			return Stats{}, fmt.Errorf("loadgen: no ingest key for tenant %s", t.ID)
		}
	}
	batches := make(chan []wireEvent, cfg.Concurrency)
	var accepted, rejected, retries, requests atomic.Int64
	var wg sync.WaitGroup
	var sendErr error
	var errOnce sync.Once
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range cfg.Concurrency {
		wg.Go(func() {
			for b := range batches {
				a, capped, tries, err := send(ctx, client, cfg.URL, cfg.Keys[b[0].TenantID], b)
				if err == nil {
					tr.record(b, capped)
				}
				accepted.Add(int64(a))
				rejected.Add(int64(len(capped)))
				retries.Add(int64(tries - 1))
				requests.Add(int64(tries))
				if err != nil {
					errOnce.Do(func() { sendErr = err; cancel() })
				}
			}
		})
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x6d61756d))
	// A batch holds one tenant's events: a key belongs to one tenant.
	pending := map[string][]wireEvent{}
	flush := func(tenant string) bool {
		batch := pending[tenant]
		if len(batch) == 0 {
			return true
		}
		select {
		case batches <- batch:
			pending[tenant] = make([]wireEvent, 0, cfg.Batch)
			return true
		case <-ctx.Done():
			return false
		}
	}
	// add queues one event of tenant t; false when the run is over.
	add := func(t Tenant, app, guid string, ts time.Time) bool {
		typ := eventTypes[rng.IntN(len(eventTypes))]
		e := wireEvent{TenantID: t.ID, AppID: app, GUID: guid, Event: typ, TS: ts.In(t.Location).Format(time.RFC3339Nano),
			month: calendar.MonthOf(ts, t.Location).String()}
		if typ != "search" {
			e.MiniProgramID = fmt.Sprintf("mp-%d", rng.IntN(50))
		}
		st.Events++
		pending[t.ID] = append(pending[t.ID], e)
		return len(pending[t.ID]) < cfg.Batch || flush(t.ID)
	}
	if cfg.Returning != nil {
		returning(cfg, rng, add)
	} else {
		uniform(cfg, rng, add)
	}
	for _, t := range cfg.Tenants {
		if !flush(t.ID) {
			break
		}
	}
	close(batches)
	wg.Wait()
	st.Truth, st.Capped = tr.counts()
	st.Accepted, st.Rejected, st.Retries, st.Requests = accepted.Load(), rejected.Load(), retries.Load(), requests.Load()
	st.Elapsed = time.Since(start)
	if sendErr != nil {
		return st, sendErr
	}
	return st, ctx.Err()
}

// uniform generates Tenant.Devices devices per tenant, each sending events at random instants
// of [From, To). Devices are interleaved across tenants so the requests of all tenants mix, as
// a shared ingest endpoint sees them.
func uniform(cfg Config, rng *rand.Rand, add func(t Tenant, app, guid string, ts time.Time) bool) {
	span := cfg.To.Sub(cfg.From)
	maxDevices := 0
	for _, t := range cfg.Tenants {
		maxDevices = max(maxDevices, t.Devices)
	}
	for d := range maxDevices {
		for _, t := range cfg.Tenants {
			if d >= t.Devices {
				continue
			}
			app := t.Apps[d%len(t.Apps)]
			guid := fmt.Sprintf("%s-dev-%08d", t.ID, d)
			n := 1 + int(rng.ExpFloat64()*(cfg.EventsPer-1))
			for range n {
				if !add(t, app, guid, cfg.From.Add(time.Duration(rng.Int64N(int64(span))))) {
					return
				}
			}
		}
	}
}

// returning generates each tenant's apps as returning populations (Config.Returning) over the
// days of [From, To), day i being [From + i·24h, From + (i+1)·24h); tenant after tenant.
func returning(cfg Config, rng *rand.Rand, add func(t Tenant, app, guid string, ts time.Time) bool) {
	const day = 24 * time.Hour
	days := int((cfg.To.Sub(cfg.From) + day - 1) / day)
	for ti, t := range cfg.Tenants {
		for ai, app := range t.Apps {
			n := max(1, t.Devices/len(t.Apps))
			shape := population.Shape{Devices: n, Segments: cfg.Returning, InstallsPerDay: float64(n) / 180, ChurnPerDay: 1.0 / 180, Growth: 1}
			i := 0
			ok := true
			shape.Each(cfg.Seed^uint64(ti)<<32^uint64(ai), 0, days, func(d population.Device, drng *rand.Rand) {
				guid := fmt.Sprintf("%s-%s-pop-%08d", t.ID, app, i)
				i++
				d.Active(0, days, drng, func(dd int) {
					for range 1 + int(drng.ExpFloat64()*(cfg.EventsPer-1)) {
						ts := cfg.From.Add(time.Duration(dd)*day + time.Duration(drng.Int64N(int64(day))))
						if ok && ts.Before(cfg.To) {
							ok = add(t, app, guid, ts)
						}
					}
				})
			})
			if !ok {
				return
			}
		}
	}
}

// send posts one batch until it is acknowledged, retrying overload and outages with backoff.
// It returns the indexes refused with poc_cap_reached; any other rejection is an error.
func send(ctx context.Context, client *http.Client, url, key string, b []wireEvent) (accepted int, capped map[int]bool, tries int, err error) {
	var body bytes.Buffer
	enc := json.NewEncoder(&body)
	for i := range b {
		if err := enc.Encode(&b[i]); err != nil {
			return 0, nil, 1, fmt.Errorf("loadgen: encode: %w", err)
		}
	}
	backoff := 50 * time.Millisecond
	for tries = 1; ; tries++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body.Bytes()))
		if err != nil {
			return 0, nil, tries, fmt.Errorf("loadgen: %w", err)
		}
		req.Header.Set("Content-Type", "application/x-ndjson")
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := client.Do(req)
		if err == nil {
			data, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch resp.StatusCode {
			case http.StatusOK:
				var r struct {
					Accepted int `json:"accepted"`
					Rejected []struct {
						Index   int    `json:"index"`
						Reason  string `json:"reason"`
						Message string `json:"message"`
					} `json:"rejected"`
				}
				if err := json.Unmarshal(data, &r); err != nil {
					return 0, nil, tries, fmt.Errorf("loadgen: response: %w", err)
				}
				capped := map[int]bool{}
				for _, rj := range r.Rejected {
					if rj.Reason != ReasonPOCCapReached || rj.Index < 0 || rj.Index >= len(b) {
						return r.Accepted, nil, tries, fmt.Errorf("loadgen: generated event %d rejected: %s: %s", rj.Index, rj.Reason, rj.Message)
					}
					capped[rj.Index] = true
				}
				if r.Accepted != len(b)-len(capped) {
					return r.Accepted, nil, tries, fmt.Errorf("loadgen: %d of %d events accepted and %d refused", r.Accepted, len(b), len(capped))
				}
				return r.Accepted, capped, tries, nil
			case http.StatusTooManyRequests, http.StatusServiceUnavailable:
			default:
				return 0, nil, tries, fmt.Errorf("loadgen: %s: %s", resp.Status, bytes.TrimSpace(data))
			}
		}
		wait := backoff
		if err == nil {
			// Honour Retry-After (seconds), jittered so throttled senders do not return in step.
			if s, perr := strconv.Atoi(resp.Header.Get("Retry-After")); perr == nil && s > 0 {
				wait = time.Duration(s)*time.Second/2 + rand.N(time.Duration(s)*time.Second)
			}
		}
		select {
		case <-ctx.Done():
			return 0, nil, tries, ctx.Err()
		case <-time.After(wait):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}
