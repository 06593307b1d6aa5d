// Package population simulates the devices of one app over a previous month and a current one:
// a returning population with heterogeneous daily return probabilities (daily users, weekly,
// occasional, one-off), a flow of new installs that may grow, churn, and an optional launch
// spike. It is deterministic from a seed and does no I/O: the projection backtest (pkg/plan)
// reads its per-day first-seen counts, and the load generator (pipeline/loadgen) its events.
//
// Each device has a daily return probability p (its segment's) and a lifetime [born, dies)
// in days. On each day of its lifetime it is active with probability p, independently, except
// on the day it is installed, when it is active for certain (an install opens the app). The
// first day a device is active in a month is a geometric draw, so a month's first-seen counts
// cost one draw per device, not one per device-day.
package population

import (
	"math"
	"math/rand/v2"
)

// Segment is a share of the returning population with one daily return probability.
type Segment struct {
	Name  string
	Share float64 // of Shape.Devices; shares are normalised to sum to 1
	P     float64 // probability of being active on a given day, (0, 1]
}

// Typical is a super app's mix (stated, not fitted): a core of daily users, frequent users,
// weekly users, occasional (about monthly) users and rare ones. Its DAU/MAU is about 0.27,
// inside the 0.1–0.5 that consumer apps report (0.2 is commonly called good).
var Typical = []Segment{
	{"daily", 0.10, 0.85},
	{"frequent", 0.15, 0.45},
	{"weekly", 0.25, 0.14},
	{"occasional", 0.30, 0.035},
	{"rare", 0.20, 0.008},
}

// Sticky is a mix dominated by daily and frequent users (DAU/MAU about 0.5).
var Sticky = []Segment{
	{"daily", 0.35, 0.9},
	{"frequent", 0.30, 0.5},
	{"weekly", 0.20, 0.14},
	{"occasional", 0.15, 0.035},
}

// Casual is a mix dominated by occasional and rare users (DAU/MAU about 0.12).
var Casual = []Segment{
	{"daily", 0.04, 0.8},
	{"frequent", 0.06, 0.4},
	{"weekly", 0.20, 0.14},
	{"occasional", 0.40, 0.035},
	{"rare", 0.30, 0.01},
}

// Shape is one app's traffic.
type Shape struct {
	Devices  int       // returning population alive on the first day of the previous month
	Segments []Segment // return probabilities of both the population and new installs
	// InstallsPerDay new devices arrive on the previous month's first day, multiplied by
	// Growth each day after (1: steady).
	InstallsPerDay float64
	Growth         float64
	ChurnPerDay    float64 // probability that a device leaves for good on a given day
	// LaunchDay (a day of the current month, 1-based; 0: none) brings LaunchDevices installs
	// at once, who then return like the rest.
	LaunchDay     int
	LaunchDevices int
}

// Month is what a simulation saw of one month.
type Month struct {
	Days int
	// NewByDay are the devices first active on each day of the month (index 0 = day 1); their
	// sum is the month's distinct devices (its MAU).
	NewByDay []uint64
}

// MAU is the month's distinct devices.
func (m Month) MAU() uint64 {
	var n uint64
	for _, v := range m.NewByDay {
		n += v
	}
	return n
}

// Device is one simulated device: its return probability and lifetime, in days from the first
// day of the previous month (day 0).
type Device struct {
	P          float64
	Born, Dies int // Born < 0: alive before the simulation starts
	installDay bool
}

// Simulate runs s over a previous month of prevDays and a current month of curDays (calendar
// month lengths: 28–31), returning what each month saw, deterministically from seed.
func (s Shape) Simulate(seed uint64, prevDays, curDays int) (prev, cur Month) {
	prev = Month{Days: prevDays, NewByDay: make([]uint64, prevDays)}
	cur = Month{Days: curDays, NewByDay: make([]uint64, curDays)}
	s.Each(seed, prevDays, curDays, func(d Device, rng *rand.Rand) {
		if day, ok := firstActive(d, 0, prevDays, rng); ok {
			prev.NewByDay[day]++
		}
		if day, ok := firstActive(d, prevDays, prevDays+curDays, rng); ok {
			cur.NewByDay[day-prevDays]++
		}
	})
	return prev, cur
}

// Each calls fn with every device of the simulation, in a deterministic order, and the
// generator to draw its activity from.
func (s Shape) Each(seed uint64, prevDays, curDays int, fn func(Device, *rand.Rand)) {
	rng := rand.New(rand.NewPCG(seed, 0x706f70))
	total := prevDays + curDays
	cum := cumulative(s.Segments)
	pick := func() float64 {
		u := rng.Float64()
		for i, c := range cum {
			if u < c {
				return s.Segments[i].P
			}
		}
		return s.Segments[len(s.Segments)-1].P
	}
	life := func(from int) int { // the day the device leaves, from day `from` on
		if s.ChurnPerDay <= 0 {
			return math.MaxInt32
		}
		return from + geometric(rng, s.ChurnPerDay)
	}
	for range s.Devices {
		fn(Device{P: pick(), Born: -1, Dies: life(0)}, rng)
	}
	rate := s.InstallsPerDay
	growth := s.Growth
	if growth <= 0 {
		growth = 1
	}
	for day := range total {
		n := int(rate)
		if rng.Float64() < rate-float64(n) {
			n++
		}
		if s.LaunchDay > 0 && day == prevDays+s.LaunchDay-1 {
			n += s.LaunchDevices
		}
		for range n {
			fn(Device{P: pick(), Born: day, Dies: life(day + 1), installDay: true}, rng)
		}
		rate *= growth
	}
}

// Active reports the days in [from, to) on which d is active, drawing each day (for events;
// the first-seen counts do not need them).
func (d Device) Active(from, to int, rng *rand.Rand, fn func(day int)) {
	for day := max(from, d.Born); day < min(to, d.Dies); day++ {
		if (d.installDay && day == d.Born) || rng.Float64() < d.P {
			fn(day)
		}
	}
}

// firstActive is the first day in [from, to) on which d is active.
func firstActive(d Device, from, to int, rng *rand.Rand) (int, bool) {
	end := min(to, d.Dies)
	start := max(from, d.Born)
	if start >= end {
		return 0, false
	}
	if d.installDay && start == d.Born {
		return start, true
	}
	day := start + geometric(rng, d.P)
	return day, day < end
}

// geometric draws the number of failures before the first success of probability p.
func geometric(rng *rand.Rand, p float64) int {
	if p >= 1 {
		return 0
	}
	u := 1 - rng.Float64() // (0, 1]
	g := math.Floor(math.Log(u) / math.Log1p(-p))
	if g > math.MaxInt32 {
		return math.MaxInt32
	}
	return int(g)
}

func cumulative(segs []Segment) []float64 {
	var sum float64
	for _, s := range segs {
		sum += s.Share
	}
	out := make([]float64, len(segs))
	var c float64
	for i, s := range segs {
		c += s.Share / sum
		out[i] = c
	}
	return out
}
