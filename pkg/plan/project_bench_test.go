package plan

import (
	"fmt"
	"testing"
	"time"

	"github.com/maumeter/maumeter/pkg/calendar"
	"github.com/maumeter/maumeter/pkg/population"
)

// BenchmarkProjectApp is one app's projection in the MAU read (the grid fit of the curve
// dominates), at days 2, 7, 15 and 31 of a month.
func BenchmarkProjectApp(b *testing.B) {
	m := calendar.Month{Year: 2026, Month: time.March}
	shape := population.Shape{Devices: 100_000, Segments: population.Typical, InstallsPerDay: 100_000.0 / 180, ChurnPerDay: 1.0 / 180, Growth: 1}
	prev, cur := shape.Simulate(1, 28, 31)
	for _, day := range []int{2, 7, 15, 31} {
		h, ok := NewHorizon(time.Date(2026, 3, day, 12, 0, 0, 0, time.UTC), time.UTC, m)
		if !ok {
			b.Fatal("no horizon")
		}
		byDay := cur.NewByDay[:day]
		var mau uint64
		for _, n := range byDay {
			mau += n
		}
		b.Run(fmt.Sprintf("day=%d", day), func(b *testing.B) {
			for b.Loop() {
				h.ProjectApp(mau, byDay, prev.MAU(), true)
			}
		})
	}
}
