package plan

import (
	"maps"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/maumeter/maumeter/pkg/calendar"
)

func TestHorizon(t *testing.T) {
	zone := func(name string) *time.Location {
		t.Helper()
		loc, err := time.LoadLocation(name)
		if err != nil {
			t.Fatal(err)
		}
		return loc
	}
	utc, ny, berlin, shanghai := time.UTC, zone("America/New_York"), zone("Europe/Berlin"), zone("Asia/Shanghai")
	at := func(s string) time.Time {
		t.Helper()
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	type want struct {
		day, days, prevDays int
		elapsed             float64
		from, to, ahead     string
	}
	f := func(name string, now time.Time, loc *time.Location, month string, wantOK bool, w want) {
		t.Helper()
		m, err := calendar.ParseMonth(month)
		if err != nil {
			t.Fatal(err)
		}
		h, ok := NewHorizon(now, loc, m)
		if ok != wantOK {
			t.Fatalf("%s: ok %v, want %v (%+v)", name, ok, wantOK, h)
		}
		if !ok {
			return
		}
		if h.Day != w.day || h.Days != w.days || h.PrevDays != w.prevDays || h.HistoryDays != w.day-1 ||
			math.Abs(h.Elapsed-w.elapsed) > 1e-12 || !h.From.Equal(at(w.from)) || !h.To.Equal(at(w.to)) || h.Ahead.RatString() != w.ahead {
			t.Errorf("%s: day %d of %d (previous %d), %d complete, %v of today passed, [%s, %s) ahead %s; want %+v", name,
				h.Day, h.Days, h.PrevDays, h.HistoryDays, h.Elapsed, h.From.UTC().Format(time.RFC3339), h.To.UTC().Format(time.RFC3339),
				h.Ahead.RatString(), w)
		}
	}
	f("day 15 noon", at("2026-11-15T12:00:00Z"), utc, "2026-11", true,
		want{15, 30, 31, 0.5, "2026-11-01T00:00:00Z", "2026-11-15T00:00:00Z", "31/2"})
	f("day 2 at midnight", at("2026-11-02T00:00:00Z"), utc, "2026-11", true,
		want{2, 30, 31, 0, "2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z", "29"})
	// Day 1 has no complete day: no projection.
	f("day 1", at("2026-11-01T23:59:59Z"), utc, "2026-11", false, want{})
	// 16:30Z on Oct 31 is Nov 1 in Shanghai: day 1 of November there, and October is over.
	f("day 1 in the zone", at("2026-10-31T16:30:00Z"), shanghai, "2026-11", false, want{})
	f("closed in the zone", at("2026-10-31T16:30:00Z"), shanghai, "2026-10", false, want{})
	f("closed month", at("2026-12-02T00:00:00Z"), utc, "2026-11", false, want{})
	f("future month", at("2026-11-20T00:00:00Z"), utc, "2026-12", false, want{})
	// 15:00Z on Nov 30 is 23:00 in Shanghai: 23 hours of the month's last day there have passed.
	f("last day in the zone", at("2026-11-30T15:00:00Z"), shanghai, "2026-11", true,
		want{30, 30, 31, 23.0 / 24, "2026-10-31T16:00:00Z", "2026-11-29T16:00:00Z", "1/24"})
	// DST starts on Sunday March 8 2026 in New York: a 23-hour day. At 12:00 EDT, 11 of its
	// hours have passed and 12 are left, plus the 23 days after; February had 28 days.
	f("DST start, New York", at("2026-03-08T16:00:00Z"), ny, "2026-03", true,
		want{8, 31, 28, 11.0 / 23, "2026-03-01T05:00:00Z", "2026-03-08T05:00:00Z", "541/23"})
	// DST ends on October 25 2026 in Berlin: a 25-hour day. 12:00 CET is 13 of its 25 hours.
	f("DST end, Berlin", at("2026-10-25T11:00:00Z"), berlin, "2026-10", true,
		want{25, 31, 30, 13.0 / 25, "2026-09-30T22:00:00Z", "2026-10-24T22:00:00Z", "162/25"})
	// Leap years: February 2028 has 29 days after a January of 31; March 2028 follows 29.
	f("leap February", at("2028-02-29T06:00:00Z"), utc, "2028-02", true,
		want{29, 29, 31, 0.25, "2028-02-01T00:00:00Z", "2028-02-29T00:00:00Z", "3/4"})
	f("March after a leap February", at("2028-03-02T18:00:00Z"), utc, "2028-03", true,
		want{2, 31, 29, 0.75, "2028-03-01T00:00:00Z", "2028-03-02T00:00:00Z", "117/4"})
	f("January after December", at("2027-01-10T00:00:00Z"), utc, "2027-01", true,
		want{10, 31, 31, 0, "2027-01-01T00:00:00Z", "2027-01-10T00:00:00Z", "22"})
}

// horizonAt is the horizon of now's month in UTC.
func horizonAt(t *testing.T, now time.Time) Horizon {
	t.Helper()
	h, ok := NewHorizon(now, time.UTC, calendar.MonthOf(now, time.UTC))
	if !ok {
		t.Fatalf("no horizon at %s", now)
	}
	return h
}

// betaCurve is n_t = N·q_t(α, β) + C for t = 1..days: the model's own curve.
func betaCurve(alpha, beta, n, c float64, days int) []float64 {
	q := make([]float64, days)
	shares(alpha, beta, q)
	for i := range q {
		q[i] = n*q[i] + c
	}
	return q
}

func TestProjectApp(t *testing.T) {
	type app struct {
		mau      uint64
		newByDay []uint64
		prev     uint64
		hasPrev  bool
	}
	f := func(name string, h Horizon, a app, check func(r Range) bool, wantBases ...Basis) {
		t.Helper()
		r, bases := h.ProjectApp(a.mau, a.newByDay, a.prev, a.hasPrev)
		if !slices.Equal(bases, wantBases) || r.Low > r.Point || r.Point > r.High || !check(r) {
			t.Errorf("%s: %+v %v; want bases %v", name, r, bases, wantBases)
		}
	}
	is := func(want Range) func(Range) bool { return func(r Range) bool { return r == want } }
	noon2 := horizonAt(t, time.Date(2026, 11, 2, 12, 0, 0, 0, time.UTC))

	// Day 2: one complete day, the prior multiple of it. The old constant rate carried 1.5 M
	// MAU on day 2 to 33.1 M (22×); day 1's devices × 2 / 4 / 8.3 cannot.
	f("day 2, prior", noon2, app{1_500_000, []uint64{1_000_000, 500_000}, 0, false},
		is(Range{2_000_000, 4_000_000, 8_300_000}), BasisPrior)
	// The previous month weighs most while the curve is a prior: November after October's
	// 1.5 M (one day longer, carried −1 %) lands within 1 % of it, inside its own ±15 %.
	f("day 2, previous month", noon2, app{700_000, []uint64{450_000, 250_000}, 1_500_000, true}, func(r Range) bool {
		p := 1_500_000 * (1 - tailPerDay)
		return math.Abs(float64(r.Point)/p-1) < 0.01 && float64(r.Low) > p*0.8 && float64(r.High) < p*1.25
	}, BasisPrior, BasisPrev)
	// An app absent last month is new: nothing to blend.
	f("day 2, new app", noon2, app{1500, []uint64{1000, 500}, 0, true}, is(Range{2000, 4000, 8300}), BasisPrior)
	f("nothing yet", noon2, app{0, []uint64{0, 0}, 5000, true}, is(Range{}), BasisNone)
	// Never below what is seen: a day 1 of 10 devices and 100 today.
	f("seen floor", noon2, app{110, []uint64{10, 100}, 0, false}, func(r Range) bool { return r.Low == 110 && r.Point == 110 && r.High == 110 }, BasisPrior)
	// A previous month far outside what the curve allows (2,500× the prior) is discounted by
	// its disagreement: a launch or a loss, not a steady month.
	f("previous month far off", noon2, app{1500, []uint64{1000, 500}, 10_000_000, true},
		func(r Range) bool { return r.Point < 5000 && r.High < 10_000 }, BasisPrior, BasisPrev)

	// Saturation, not wrap: 2^63 devices on day 1 carried 4× is past uint64.
	f("huge", noon2, app{1 << 63, []uint64{1 << 63, 0}, 0, false},
		is(Range{math.MaxUint64, math.MaxUint64, math.MaxUint64}), BasisPrior)

	// No daily counts: the prior curve scaled to the MAU so far. Day 16 at noon of 30 days is
	// 15.5 days in: day 1 plus half the prior's tail, 1/2.5 of the month at 4× → 1000 / 0.625.
	noon16 := horizonAt(t, time.Date(2026, 11, 16, 12, 0, 0, 0, time.UTC))
	f("no daily counts", noon16, app{1000, nil, 0, false}, is(Range{1333, 1600, 1785}), BasisMAU)
	f("daily counts of another length", noon16, app{1000, []uint64{500, 500}, 0, false}, is(Range{1333, 1600, 1785}), BasisMAU)

	// The fit brackets its own curve. Midnight of day 11: 10 complete days, nothing of today.
	// The point is the geometric mean of the fits without and with a flow, so a curve that is
	// exactly one of them sits at an end of the range: within 10 %.
	mid11 := horizonAt(t, time.Date(2026, 11, 11, 0, 0, 0, 0, time.UTC))
	for _, c := range []struct {
		name              string
		alpha, beta, n, c float64
	}{
		{"mixed population and a flow", 0.3, 1.5, 100_000, 500},
		{"sticky, no flow", 2, 1, 100_000, 0},
		{"casual and a flow", 0.1, 2, 200_000, 1000},
	} {
		curve := betaCurve(c.alpha, c.beta, c.n, c.c, 30)
		byDay := make([]uint64, 11)
		var seen, truth float64
		for i, v := range curve {
			truth += v
			if i < 10 {
				byDay[i] = uint64(math.Round(v))
				seen += float64(byDay[i])
			}
		}
		f(c.name, mid11, app{uint64(seen), byDay, 0, false}, func(r Range) bool {
			return math.Abs(float64(r.Point)/truth-1) < 0.10 && float64(r.Low) <= truth && float64(r.High) >= truth
		}, BasisFit)
	}
	// Everyone on day 1 and nobody since: nothing more is coming.
	f("saturated", mid11, app{5000, []uint64{5000, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 0, false},
		func(r Range) bool { return r.High <= 5010 }, BasisFit)
	// A steady tenant's previous month pulls a fitted curve, less than a prior.
	steady := betaCurve(0.3, 1.5, 100_000, 500, 30)
	byDay := make([]uint64, 11)
	var seen float64
	for i := range 10 {
		byDay[i] = uint64(math.Round(steady[i]))
		seen += float64(byDay[i])
	}
	alone, _ := mid11.ProjectApp(uint64(seen), byDay, 0, false)
	blended, _ := mid11.ProjectApp(uint64(seen), byDay, uint64(float64(alone.Point)*1.1), true)
	if blended.Point <= alone.Point || float64(blended.Point) >= float64(alone.Point)*1.1*(1+tailPerDay) {
		t.Errorf("previous month 10 %% above the fit %d: blended %d, want strictly between", alone.Point, blended.Point)
	}
}

func TestProject(t *testing.T) {
	m := calendar.Month{Year: 2026, Month: time.November}
	h, ok := NewHorizon(time.Date(2026, 11, 2, 12, 0, 0, 0, time.UTC), time.UTC, m)
	if !ok {
		t.Fatal("no horizon")
	}
	u := Usage{Month: m, MAUByApp: map[string]uint64{"a": 1500, "qa": 15, "quiet": 5}, MiniPrograms: 3}
	newByDay := map[string][]uint64{"a": {1000, 500}, "qa": {10, 5}, "quiet": {5, 0}, "stray": {7, 0}}
	got := h.Project(u, newByDay, map[string]uint64{"qa": 12})
	// a: the prior on day 1; qa: blended with its 12 of October; quiet: the prior; stray (a
	// device is in its month's MAU, but stay total): the prior on its 7.
	if want := map[string]uint64{"a": 2000, "quiet": 10, "stray": 14}; !maps.Equal(pick(got.Low.MAUByApp, "a", "quiet", "stray"), want) {
		t.Errorf("low %v, want %v", got.Low.MAUByApp, want)
	}
	if want := map[string]uint64{"a": 4000, "quiet": 20, "stray": 28}; !maps.Equal(pick(got.Point.MAUByApp, "a", "quiet", "stray"), want) {
		t.Errorf("point %v, want %v", got.Point.MAUByApp, want)
	}
	if qa := got.Point.MAUByApp["qa"]; qa < 15 || qa > 16 { // 12 carried −1 % is below the 15 seen
		t.Errorf("qa point %d, want the 15 seen (its previous month is below it)", qa)
	}
	for _, p := range []Usage{got.Low, got.Point, got.High} {
		if p.Month != m || p.MiniPrograms != 3 || len(p.MAUByApp) != 4 {
			t.Errorf("projected usage %+v, want month, mini programs and 4 apps", p)
		}
	}
	if u.MAUByApp["a"] != 1500 || len(u.MAUByApp) != 3 {
		t.Errorf("Project changed its input: %v", u.MAUByApp)
	}
	for _, s := range []string{ProjectionMethod, string(BasisPrior) + " (4 of 4 apps)", string(BasisPrev) + " (1 of 4 apps)"} {
		if !strings.Contains(got.Method, s) {
			t.Errorf("method %q does not say %q", got.Method, s)
		}
	}
}

func pick(m map[string]uint64, keys ...string) map[string]uint64 {
	out := map[string]uint64{}
	for _, k := range keys {
		out[k] = m[k]
	}
	return out
}
