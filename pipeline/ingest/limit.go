package ingest

import (
	"math"
	"sync"
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

// limits holds one bucket per tenant of the catalogue (nil: no limit), built once: the tenants
// are bounded by the catalogue, never by what clients send.
type limits map[string]*bucket

// newLimits gives every tenant of c the default limit, or its catalogue's ingest_limit. A rate
// of 0 is no limit; a burst of 0 is two seconds of the rate, and at least one full batch.
func newLimits(c *tenant.Catalog, def tenant.IngestLimit, maxEvents int, now time.Time) limits {
	l := make(limits, len(c.Tenants))
	for _, t := range c.Tenants {
		lim := def
		if t.IngestLimit != nil {
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
