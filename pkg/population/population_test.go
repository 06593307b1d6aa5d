package population

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestSimulate(t *testing.T) {
	steady := Shape{Devices: 100_000, Segments: Typical, InstallsPerDay: 100_000.0 / 180, ChurnPerDay: 1.0 / 180, Growth: 1}
	prev, cur := steady.Simulate(7, 28, 31)
	if len(prev.NewByDay) != 28 || len(cur.NewByDay) != 31 || prev.Days != 28 || cur.Days != 31 {
		t.Fatalf("months of %d and %d days, want 28 and 31", len(prev.NewByDay), len(cur.NewByDay))
	}
	// Deterministic from the seed, and the seed matters.
	if p2, c2 := steady.Simulate(7, 28, 31); !slices.Equal(p2.NewByDay, prev.NewByDay) || !slices.Equal(c2.NewByDay, cur.NewByDay) {
		t.Error("same seed, different months")
	}
	if _, c3 := steady.Simulate(8, 28, 31); slices.Equal(c3.NewByDay, cur.NewByDay) {
		t.Error("another seed, same month")
	}
	// Steady: installs replace churn, so a month of 31 days sees about what one of 28 did plus
	// three days of tail; first sightings thin out over the month.
	if r := float64(cur.MAU()) / float64(prev.MAU()); r < 1 || r > 1.08 {
		t.Errorf("steady: MAU %d after %d (×%.3f), want a little more (3 more days)", cur.MAU(), prev.MAU(), r)
	}
	if n := cur.NewByDay; !(n[0] > 2*n[1] && n[1] > n[6] && n[6] > n[29]) {
		t.Errorf("first sightings do not thin out: %v", n)
	}
	// Typical's DAU/MAU: day 1's devices are its DAU, about 0.2–0.3 of the month.
	if s := float64(cur.NewByDay[0]) / float64(cur.MAU()); s < 0.2 || s > 0.3 {
		t.Errorf("Typical DAU/MAU %.3f, want 0.2–0.3", s)
	}
	// A launch brings its devices on its day.
	launch := steady
	launch.LaunchDay, launch.LaunchDevices = 10, 50_000
	_, l := launch.Simulate(7, 28, 31)
	if d := int(l.NewByDay[9]) - int(cur.NewByDay[9]); d < 49_000 || d > 51_500 {
		t.Errorf("launch day: %d more first sightings, want about 50,000", d)
	}
	// Growth: more installs each day, more devices than the steady month.
	growing := steady
	growing.Growth = 1.02
	if _, g := growing.Simulate(7, 28, 31); g.MAU() < cur.MAU()*11/10 {
		t.Errorf("growing MAU %d, steady %d: want well above", g.MAU(), cur.MAU())
	}
}

// TestActiveAgreesWithFirstSightings: the events a device sends (Active, a draw per day) and
// its first sighting in a month (one geometric draw) follow the same law: their first-seen
// counts agree within sampling noise.
func TestActiveAgreesWithFirstSightings(t *testing.T) {
	s := Shape{Devices: 20_000, Segments: Typical, InstallsPerDay: 100, ChurnPerDay: 1.0 / 90, Growth: 1}
	_, cur := s.Simulate(3, 30, 30)
	byEvents := make([]uint64, 30)
	s.Each(4, 30, 30, func(d Device, rng *rand.Rand) {
		first := -1
		d.Active(30, 60, rng, func(day int) {
			if first < 0 {
				first = day
			}
		})
		if first >= 0 {
			byEvents[first-30]++
		}
	})
	var total uint64
	for _, n := range byEvents {
		total += n
	}
	if r := float64(total) / float64(cur.MAU()); math.Abs(r-1) > 0.02 {
		t.Errorf("MAU %d from events, %d from first sightings", total, cur.MAU())
	}
	for _, day := range []int{0, 1, 6, 20} {
		a, b := float64(byEvents[day]), float64(cur.NewByDay[day])
		if math.Abs(a-b) > 5*math.Sqrt(a+b)+0.02*b {
			t.Errorf("day %d: %v first seen from events, %v from first sightings", day+1, a, b)
		}
	}
}
