package sketch

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/maumeter/maumeter/pkg/event"
)

// benchEvent is an event with its dimensions as indexes into the names below: the benchmark's
// own data holds no pointers, so the collector does not scan it while Add runs.
type benchEvent struct {
	k              event.DeviceKey
	app, mini, day uint16
}

var (
	benchApps  = names("app-%d", 3)
	benchMinis = names("mp-%03d", 200)
	benchDays  = names("2025-03-%02d", 31)
)

func names(format string, n int) []string {
	s := make([]string, n)
	for i := range s {
		s[i] = fmt.Sprintf(format, i+1)
	}
	return s
}

// benchStream is n events of n/4 devices (four events each on average) over 3 apps, 200 mini
// programs (a few popular, most not) and 31 days, in random order: a month of traffic on one
// partition.
func benchStream(n int) []benchEvent {
	r := rand.New(rand.NewPCG(uint64(n), 5))
	devices := make([]event.DeviceKey, max(n/4, 1))
	for i := range devices {
		binary.LittleEndian.PutUint64(devices[i][:8], r.Uint64())
		binary.LittleEndian.PutUint64(devices[i][8:], r.Uint64())
	}
	evs := make([]benchEvent, n)
	for i := range evs {
		d := r.IntN(len(devices))
		mini := min(int(r.ExpFloat64()*20), len(benchMinis)-1)
		evs[i] = benchEvent{devices[d], uint16(d % 3), uint16(mini), uint16(r.IntN(31))}
	}
	return evs
}

func (e benchEvent) addTo(m *Month) {
	m.Add(e.k, benchApps[e.app], benchMinis[e.mini], benchDays[e.day])
}

// BenchmarkAdd records n events into an empty Month; ns/event is the time per Add. B/device is
// the live heap of the Month per distinct device, by the runtime's account (the timer stopped);
// Bytes()/device is the Month's own account of it.
func BenchmarkAdd(b *testing.B) {
	for _, n := range []int{1e3, 1e4, 1e5, 1e6, 1e7} {
		b.Run(fmt.Sprintf("events=%d", n), func(b *testing.B) {
			evs := benchStream(n)
			var perDevice, accounted float64
			for b.Loop() {
				b.StopTimer()
				before := heapAlloc()
				b.StartTimer()
				m := NewMonth()
				for _, e := range evs {
					e.addTo(m)
				}
				b.StopTimer()
				perDevice = float64(heapAlloc()-before) / float64(n/4)
				accounted = float64(m.Bytes()) / float64(n/4)
				b.StartTimer()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
			b.ReportMetric(perDevice, "B/device")
			b.ReportMetric(accounted, "Bytes()/device")
		})
	}
}

// BenchmarkMergeMarshal merges 8 partitions' Months of 1e6 events in all, as a read of the
// month does, and encodes the result, as a rollup does.
func BenchmarkMergeMarshal(b *testing.B) {
	evs := benchStream(1e6)
	parts := make([]*Month, 8)
	for i := range parts {
		parts[i] = NewMonth()
	}
	for _, e := range evs {
		e.addTo(parts[e.k[0]%8])
	}
	var size int
	for b.Loop() {
		m := NewMonth()
		for _, p := range parts {
			if err := m.Merge(p); err != nil {
				b.Fatal(err)
			}
		}
		enc, err := m.MarshalBinary()
		if err != nil {
			b.Fatal(err)
		}
		size = len(enc)
	}
	b.ReportMetric(float64(size), "encoded-B")
}

func heapAlloc() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
