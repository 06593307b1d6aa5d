package plan

import (
	"math/big"
	"time"

	"github.com/maumeter/maumeter/pkg/calendar"
)

// ProjectionDays is how many complete days of the month the projection of an open month looks
// back at (fewer early in the month).
const ProjectionDays = 7

// ProjectionMethod says, in the API's words, how Horizon.Project carries a month to its end.
const ProjectionMethod = "new devices per day over the last complete days of the month (at most 7) in the tenant's zone, " +
	"counted exactly from mau_devices.first_seen_at per app, carried at that rate to the end of the month " +
	"(the rest of today pro rata) and rounded half-up per app; priced like the bill, with the plan in force"

// Horizon is what carries an open month's usage to its end: the rate at which new devices
// arrived over the month's last complete days, applied to the days still ahead.
//
// Why this rate: MAU only grows, and it grows by the devices first seen each day, so the month's
// end is today's MAU plus the devices still to come. The last days' first sightings are the
// freshest exact measure of that flow (mau_devices records them), a week covers each weekday
// once, and the arithmetic is exact rationals. First sightings thin out as a month goes on
// (returning devices are counted already), so a constant rate leans high: an early warning of
// the quota and the bill, never a bill.
type Horizon struct {
	// HistoryDays are the complete days of the month before today that the rate is taken
	// over: min(ProjectionDays, day of month − 1).
	HistoryDays int
	// From and To bound those days, [From, To): midnight to midnight in the tenant's zone (a
	// day may last 23 or 25 hours across a DST change).
	From, To time.Time
	// Ahead is how many days the month still has after now: what is left of today as a
	// fraction of today's own length, plus the whole days after it. Exact.
	Ahead *big.Rat
}

// NewHorizon is the horizon of month m at instant now, days in loc (the tenant's billing zone),
// looking back at most maxDays complete days. ok is false when now is not in m (a closed or a
// future month has nothing to project) or is on m's first day (no complete day yet).
func NewHorizon(now time.Time, loc *time.Location, m calendar.Month, maxDays int) (h Horizon, ok bool) {
	local := now.In(loc)
	y, mo, d := local.Date()
	if (calendar.Month{Year: y, Month: mo}) != m || d == 1 || maxDays <= 0 {
		return Horizon{}, false
	}
	today := time.Date(y, mo, d, 0, 0, 0, 0, loc)
	tomorrow := time.Date(y, mo, d+1, 0, 0, 0, 0, loc) // the month's end on its last day
	last := time.Date(y, mo+1, 0, 12, 0, 0, 0, time.UTC).Day()
	h.HistoryDays = min(maxDays, d-1)
	h.From, h.To = time.Date(y, mo, d-h.HistoryDays, 0, 0, 0, 0, loc), today
	// Nanoseconds: a day's length fits an int64 and the ratio stays exact.
	h.Ahead = new(big.Rat).SetFrac64(int64(tomorrow.Sub(now)), int64(tomorrow.Sub(today)))
	h.Ahead.Add(h.Ahead, new(big.Rat).SetInt64(int64(last-d)))
	return h, true
}

// Carry is mau plus recent new devices (those of the HistoryDays) at the same daily rate over
// the days Ahead: mau + recent × Ahead / HistoryDays, rounded half-up to a device.
func (h Horizon) Carry(mau, recent uint64) uint64 {
	if h.HistoryDays <= 0 || h.Ahead == nil || recent == 0 {
		return mau
	}
	q := new(big.Rat).SetFrac(new(big.Int).SetUint64(recent), big.NewInt(int64(h.HistoryDays)))
	q.Mul(q, h.Ahead)
	// floor(q + 1/2) = (2·num + den) div (2·den); q ≥ 0.
	num := new(big.Int).Lsh(q.Num(), 1)
	num.Add(num, q.Denom())
	num.Quo(num, new(big.Int).Lsh(q.Denom(), 1))
	if !num.IsUint64() {
		return ^uint64(0)
	}
	return addSat(mau, num.Uint64())
}

// Project carries every app of u to the end of its month (Carry), with recentByApp the devices
// of each app first seen in the HistoryDays. Each app keeps its own rate, so pricing the result
// (Price) sorts billable from testing apps exactly as for the month to date.
func (h Horizon) Project(u Usage, recentByApp map[string]uint64) Usage {
	out := Usage{Month: u.Month, MiniPrograms: u.MiniPrograms, MAUByApp: make(map[string]uint64, len(u.MAUByApp))}
	for app, n := range u.MAUByApp {
		out.MAUByApp[app] = h.Carry(n, recentByApp[app])
	}
	for app, r := range recentByApp { // a device is in its month's MAU, but stay total
		if _, ok := u.MAUByApp[app]; !ok {
			out.MAUByApp[app] = h.Carry(0, r)
		}
	}
	return out
}
