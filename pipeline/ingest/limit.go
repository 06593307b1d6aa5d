package ingest

import (
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/maumeter/maumeter/pkg/tenant"
)

// bucket is a token bucket of events: it holds at most burst tokens and gains rate per second.
// A request takes one token per event of its batch, all or nothing. It is safe for concurrent use.
type bucket struct {
	rate, burst float64

	mu     sync.Mutex
	tokens float64
	last   time.Time
}

func newBucket(rate float64, burst int, now time.Time) *bucket {
	return &bucket{rate: rate, burst: float64(burst), tokens: float64(burst), last: now}
}

// refill must be called with mu held.
func (b *bucket) refill(now time.Time) {
	if dt := now.Sub(b.last); dt > 0 {
		b.tokens = math.Min(b.burst, b.tokens+dt.Seconds()*b.rate)
		b.last = now
	}
}

// take takes n tokens when the bucket holds them. Otherwise it takes nothing and says how long
// until it will hold them. n = 0 asks whether the bucket holds at least one token.
func (b *bucket) take(n int, now time.Time) (ok bool, wait time.Duration) {
	if b == nil {
		return true, 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill(now)
	need := float64(max(n, 1))
	if b.tokens >= need {
		b.tokens -= float64(n)
		return true, 0
	}
	return false, time.Duration((need - b.tokens) / b.rate * float64(time.Second))
}

// give returns n tokens taken for a batch that Kafka did not take: a refused batch does not
// count against the tenant, whose retry would otherwise find the bucket empty.
func (b *bucket) give(n int) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tokens = math.Min(b.burst, b.tokens+float64(n))
}

// limits holds one bucket per tenant of the catalogue (nil: no limit), built once: the tenants
// are bounded by the catalogue, never by what clients send.
type limits map[string]*bucket

// newLimits gives every tenant of c the default limit, or its catalogue's ingest_limit when that
// sets events_per_second or burst (one giving only max_inflight keeps the default rate). A rate
// of 0 is no limit; a burst of 0 is two seconds of the rate, and at least one full batch.
func newLimits(c *tenant.Catalog, def tenant.IngestLimit, maxEvents int, now time.Time) limits {
	l := make(limits, len(c.Tenants))
	for _, t := range c.Tenants {
		lim := def
		if t.IngestLimit != nil && t.IngestLimit.SetsRate() {
			lim = *t.IngestLimit
		}
		if lim.EventsPerSecond <= 0 {
			continue
		}
		burst := lim.Burst
		if burst <= 0 {
			burst = int(math.Min(2*lim.EventsPerSecond, 1e9))
		}
		l[t.ID] = newBucket(lim.EventsPerSecond, max(burst, maxEvents), now)
	}
	return l
}

// tenantSlots counts the requests of one tenant in flight on the gateway. Safe for concurrent
// use.
type tenantSlots struct {
	max int64
	n   atomic.Int64
}

// acquire takes a slot when one is free, without waiting.
func (s *tenantSlots) acquire() bool {
	if s.n.Add(1) > s.max {
		s.n.Add(-1)
		return false
	}
	return true
}

func (s *tenantSlots) release() { s.n.Add(-1) }

// slots holds the in-flight slots of every tenant of the catalogue, built once, and one group
// shared by the tenants a reloaded key names but the catalogue the gateway started with does
// not know (their events are refused as unknown_tenant; they still must not take every slot).
type slots struct {
	tenants map[string]*tenantSlots
	unknown *tenantSlots
}

// newSlots gives every tenant def slots, or its catalogue's ingest_limit.max_inflight, never
// more than the gateway's total.
func newSlots(c *tenant.Catalog, def, total int) slots {
	s := slots{tenants: make(map[string]*tenantSlots, len(c.Tenants)), unknown: &tenantSlots{max: int64(def)}}
	for _, t := range c.Tenants {
		n := def
		if t.IngestLimit != nil && t.IngestLimit.MaxInFlight > 0 {
			n = min(t.IngestLimit.MaxInFlight, total)
		}
		s.tenants[t.ID] = &tenantSlots{max: int64(n)}
	}
	return s
}

func (s slots) of(tenantID string) *tenantSlots {
	if ts, ok := s.tenants[tenantID]; ok {
		return ts
	}
	return s.unknown
}
