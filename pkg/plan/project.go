package plan

import (
	"fmt"
	"math"
	"math/big"
	"slices"
	"strings"
	"time"

	"github.com/maumeter/maumeter/pkg/calendar"
)

// ProjectionMethod says, in the API's words, how Horizon.Project carries a month to its end.
// Horizon.Project appends what each read actually used (its bases).
const ProjectionMethod = "returning-device model per app on the devices first seen each day of the month in the tenant's zone: " +
	"each device returns on a day with its own probability, beta-distributed across devices (the beta-geometric reach curve), " +
	"fitted on the complete days; low = that curve alone (the month's population saturates), high = the curve plus a constant " +
	"flow of new devices fitted with it, point = their geometric mean, the range at least ±25 % of the devices still to come " +
	"(more for small tenants); with fewer than 4 complete days, month end = day 1's devices × 4 (2–8.3: DAU/MAU 0.5–0.12), " +
	"without daily counts that prior scaled to the MAU so far; blended with the previous month's MAU per app when known " +
	"(weighted by each estimate's spread); never below today's MAU nor above the busiest complete day carried over every day " +
	"left; priced like the bill, with the plan in force"

// Model constants, with their reasons (docs/ARCHITECTURE.md "Projection").
const (
	// MinFitDays is the fewest complete days the curve is fitted on: the beta-geometric
	// curve plus a flow has 4 parameters: on 3 days it fits anything (the backtest misses its
	// own range at day 4 in 8 runs of 12 for a sticky tenant), on 4 it holds.
	MinFitDays = 4
	// Prior month-end multipliers of day 1's devices (DAU on day 1) when fewer days are
	// complete: MAU/DAU of consumer apps, whose DAU/MAU spans about 0.12–0.5 (0.2–0.25 is
	// typical). Wide on purpose: it is the day-2 range.
	priorLow, priorPoint, priorHigh = 2.0, 4.0, 8.3
	// prevSpread is how far (log) a steady tenant's month-end MAU strays from its previous
	// month's, one sigma: 15 %.
	prevSpread = 0.15
	// tailSpread is the least relative spread of the devices still to come once the curve is
	// fitted: the backtest's fitted tails stray by up to about 0.2 at day 7 (a sticky tenant).
	tailSpread = 0.25
	// noiseSpread/√(devices first seen after day 1) is the relative spread that Poisson noise
	// gives the devices still to come: small tenants' curves are fitted on few devices (±40 %
	// of the rest of the month at day 7 for 2,000 devices in the backtest).
	noiseSpread = 14.0
	// minSpread keeps a fit whose low and high agree from silencing the previous month.
	minSpread = 0.03
	// tailPerDay is the share of a month's MAU first seen on each of its last days, used to
	// carry a previous month of another length to this one's (about 1 % a day in the
	// backtest's steady shapes at day 30).
	tailPerDay = 0.01
)

// Horizon is where an open month stands at an instant, in the tenant's zone: which day it is,
// how much of that day has passed, how long this month and the previous one are.
type Horizon struct {
	Day      int     // day of the month, 1-based
	Days     int     // days in the month (28–31)
	PrevDays int     // days in the previous month
	Elapsed  float64 // fraction of today passed, [0, 1), to its own length (23 or 25 hours across DST)
	// HistoryDays are the complete days of the month before today (Day − 1), [From, To):
	// the month's first midnight to today's, in the tenant's zone.
	HistoryDays int
	From, To    time.Time
	// Ahead is how many days the month still has after now: what is left of today as a
	// fraction of today's own length, plus the whole days after it. Exact.
	Ahead *big.Rat
}

// NewHorizon is the horizon of month m at instant now, days in loc (the tenant's billing zone).
// ok is false when now is not in m (a closed or a future month has nothing to project) or is on
// m's first day (no complete day yet).
func NewHorizon(now time.Time, loc *time.Location, m calendar.Month) (h Horizon, ok bool) {
	local := now.In(loc)
	y, mo, d := local.Date()
	if (calendar.Month{Year: y, Month: mo}) != m || d == 1 {
		return Horizon{}, false
	}
	today := time.Date(y, mo, d, 0, 0, 0, 0, loc)
	tomorrow := time.Date(y, mo, d+1, 0, 0, 0, 0, loc) // the month's end on its last day
	h.Day, h.Days, h.PrevDays = d, daysIn(m), daysIn(m.Prev())
	h.HistoryDays = d - 1
	h.From, h.To = m.Start(loc), today
	h.Elapsed = float64(now.Sub(today)) / float64(tomorrow.Sub(today))
	// Nanoseconds: a day's length fits an int64 and the ratio stays exact.
	h.Ahead = new(big.Rat).SetFrac64(int64(tomorrow.Sub(now)), int64(tomorrow.Sub(today)))
	h.Ahead.Add(h.Ahead, new(big.Rat).SetInt64(int64(h.Days-d)))
	return h, true
}

func daysIn(m calendar.Month) int {
	return time.Date(m.Year, m.Month+1, 0, 12, 0, 0, 0, time.UTC).Day()
}

// Range is a projected month-end MAU: a point and the range around it, Low ≤ Point ≤ High.
type Range struct{ Low, Point, High uint64 }

// Basis names what a projection of one app rested on; Horizon.Project lists them in its method.
type Basis string

const (
	BasisFit   Basis = "fitted on the complete days"
	BasisPrior Basis = "fewer than 4 complete days: the prior multiple of day 1"
	BasisMAU   Basis = "no daily counts: the prior curve scaled to the MAU so far"
	BasisPrev  Basis = "blended with the previous month"
	BasisNone  Basis = "no devices yet"
)

// ProjectApp carries one app's month to its end. mau is its exact MAU so far; newByDay its
// devices first seen on each day of the month (index 0 = day 1) up to and including today,
// len(newByDay) == h.Day (anything else is taken as no daily counts); prev its previous
// month's exact MAU when known (hasPrev), 0 for an app absent then (not blended: it is new).
func (h Horizon) ProjectApp(mau uint64, newByDay []uint64, prev uint64, hasPrev bool) (Range, []Basis) {
	seen := float64(mau)
	var sum float64
	for _, n := range newByDay {
		sum += float64(n)
	}
	seen = math.Max(seen, sum)
	var low, point, high float64
	var bases []Basis
	daily := len(newByDay) == h.Day && h.Day >= 2
	k := h.Day - 1
	switch {
	case seen == 0: // nothing to scale, and an app of last month silent so far is not coming back on a guess
		return Range{}, []Basis{BasisNone}
	case daily && k >= MinFitDays:
		low, high = h.fit(newByDay, seen)
		point = math.Sqrt(low * high)
		// However well the two curves agree, the devices still to come are uncertain by at
		// least tailSpread, and by the Poisson noise of the counts after day 1 that shape them.
		var tail float64
		for _, n := range newByDay[1:k] {
			tail += float64(n)
		}
		rel := math.Hypot(tailSpread, noiseSpread/math.Sqrt(math.Max(tail, 1)))
		low = math.Min(low, seen+(point-seen)*(1-rel))
		high = math.Max(high, seen+(point-seen)*(1+rel))
		bases = append(bases, BasisFit)
	case daily:
		n1 := float64(newByDay[0])
		low, point, high = n1*priorLow, n1*priorPoint, n1*priorHigh
		bases = append(bases, BasisPrior)
	default:
		// The prior as a share of the month seen by now: day 1 is 1/priorPoint of it, each
		// later day adds the prior's tail evenly.
		x := float64(h.Day-1) + h.Elapsed
		share := func(mult float64) float64 {
			if x <= 1 {
				return x / mult
			}
			return (1 + (mult-1)*(x-1)/float64(h.Days-1)) / mult
		}
		low, point, high = seen/share(priorLow), seen/share(priorPoint), seen/share(priorHigh)
		if low > high {
			low, high = high, low
		}
		bases = append(bases, BasisMAU)
	}
	low, point, high = math.Max(low, seen), math.Max(point, seen), math.Max(high, seen)
	if hasPrev && prev > 0 {
		low, point, high = h.blend(low, point, high, seen, float64(prev))
		bases = append(bases, BasisPrev)
	}
	// Never below what is seen; never above the busiest complete day every day left.
	ceil := math.Inf(1)
	if daily {
		var busiest float64
		for _, n := range newByDay[:k] {
			busiest = math.Max(busiest, float64(n))
		}
		ahead, _ := h.Ahead.Float64()
		ceil = seen + busiest*ahead
	}
	clamp := func(v float64) uint64 {
		v = math.Min(math.Max(v, seen), ceil)
		if v >= math.MaxUint64 {
			return math.MaxUint64
		}
		return uint64(math.Round(v))
	}
	r := Range{clamp(low), clamp(point), clamp(high)}
	r.Low, r.High = min(r.Low, r.Point), max(r.High, r.Point)
	return r, bases
}

// fit returns the low and high month-end MAU of the beta-geometric curve fitted on the
// complete days of newByDay: without and with a constant flow of new devices.
func (h Horizon) fit(newByDay []uint64, seen float64) (low, high float64) {
	k := h.Day - 1
	n := make([]float64, k)
	for i := range n {
		n[i] = float64(newByDay[i])
	}
	carry := func(c curve) float64 {
		// What is left of today at the curve's rate for today, then every later day.
		left := (1 - h.Elapsed) * c.at(k)
		for t := k + 1; t < h.Days; t++ {
			left += c.at(t)
		}
		return seen + left
	}
	saturating, withFlow := fitCurves(n)
	low, high = carry(saturating), carry(withFlow)
	if low > high {
		low, high = high, low
	}
	return low, high
}

// blend combines the model's range with the previous month's MAU, in logs, each weighted by
// the inverse of its variance: the model's from its own range, the previous month's a steady
// tenant's month-to-month spread, widened by how far the model, when sure, disagrees with it
// (a launch or a decline this month). The previous month is carried to this month's length.
func (h Horizon) blend(low, point, high, seen, prev float64) (float64, float64, float64) {
	p := prev * (1 + tailPerDay*float64(h.Days-h.PrevDays))
	p = math.Max(p, seen)
	sm := math.Max(minSpread, math.Log(high/low)/2)
	d := math.Abs(math.Log(point / p))
	sp := math.Hypot(prevSpread, math.Max(0, d-2*sm))
	wm, wp := 1/(sm*sm), 1/(sp*sp)
	mix := func(m, q float64) float64 { return math.Exp((wm*math.Log(m) + wp*math.Log(q)) / (wm + wp)) }
	return mix(low, p*math.Exp(-sp)), mix(point, p), mix(high, p*math.Exp(sp))
}

// Projected is a tenant's month carried to its end, per app, three ways.
type Projected struct {
	Low, Point, High Usage
	Method           string
}

// Project carries every app of u to the end of its month (ProjectApp), with newByDay the
// devices of each app first seen on each day so far and prevByApp the previous month's MAU
// per app (nil: unknown). Each app keeps its own curve, so pricing the results (Price) sorts
// billable from testing apps exactly as for the month to date.
func (h Horizon) Project(u Usage, newByDay map[string][]uint64, prevByApp map[string]uint64) Projected {
	out := Projected{}
	for _, p := range []*Usage{&out.Low, &out.Point, &out.High} {
		*p = Usage{Month: u.Month, MiniPrograms: u.MiniPrograms, MAUByApp: make(map[string]uint64, len(u.MAUByApp))}
	}
	apps := map[string]bool{}
	for app := range u.MAUByApp {
		apps[app] = true
	}
	for app := range newByDay { // a device is in its month's MAU, but stay total
		apps[app] = true
	}
	used := map[Basis]int{}
	for app := range apps {
		prev, known := prevByApp[app]
		r, bases := h.ProjectApp(u.MAUByApp[app], newByDay[app], prev, prevByApp != nil && known)
		out.Low.MAUByApp[app], out.Point.MAUByApp[app], out.High.MAUByApp[app] = r.Low, r.Point, r.High
		for _, b := range bases {
			used[b]++
		}
	}
	var notes []string
	for b, n := range used {
		notes = append(notes, fmt.Sprintf("%s (%d of %d apps)", b, n, len(apps)))
	}
	slices.Sort(notes)
	out.Method = ProjectionMethod
	if len(notes) > 0 {
		out.Method += "; this read: " + strings.Join(notes, "; ")
	}
	return out
}
