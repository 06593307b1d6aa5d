package deviceset

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/maumeter/maumeter/pkg/event"
)

var sizes = []int{1e3, 1e4, 1e5, 1e6, 1e7}

// randomKeys returns n uniform keys, as SHA-256 prefixes are, without paying for SHA-256.
func randomKeys(n int) []event.DeviceKey {
	r := rand.New(rand.NewPCG(uint64(n), 7))
	keys := make([]event.DeviceKey, n)
	for i := range keys {
		keys[i] = key(r.Uint64(), r.Uint64())
	}
	return keys
}

// BenchmarkAdd fills an empty set (New(0): every growth step is paid) with n new keys; ns/add is
// the time per key. The Go map is the baseline. From 1e6 keys on it also measures the live heap by
// the runtime's account (HeapAlloc after a GC, before and after the fill, timer stopped):
// B/device. max-B/device is the worst Bytes()/Len() seen while the set grew, sampled every 1,000
// keys past the first 1%: the peak right after segments grow or split.
func BenchmarkAdd(b *testing.B) {
	for _, n := range sizes {
		keys := randomKeys(n)
		measure := n >= 1e6
		b.Run(fmt.Sprintf("set/n=%d", n), func(b *testing.B) {
			var perDevice, worst float64
			for b.Loop() {
				before := heapAlloc(b, measure)
				s := New(0)
				worst = 0
				for i, k := range keys {
					s.Add(k)
					if measure && i%1000 == 0 && i >= n/100 {
						worst = max(worst, float64(s.Bytes())/float64(s.Len()))
					}
				}
				perDevice = float64(heapAlloc(b, measure)-before) / float64(n)
				runtime.KeepAlive(s)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/add")
			if measure {
				b.ReportMetric(perDevice, "B/device")
				b.ReportMetric(worst, "max-B/device")
			}
		})
		b.Run(fmt.Sprintf("map/n=%d", n), func(b *testing.B) {
			var perDevice float64
			for b.Loop() {
				before := heapAlloc(b, measure)
				m := map[event.DeviceKey]struct{}{}
				for _, k := range keys {
					if _, ok := m[k]; !ok {
						m[k] = struct{}{}
					}
				}
				perDevice = float64(heapAlloc(b, measure)-before) / float64(n)
				runtime.KeepAlive(m)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/add")
			if measure {
				b.ReportMetric(perDevice, "B/device")
			}
		})
	}
}

// BenchmarkAddExisting adds keys already in a set of n: the common case, a device's second and
// later events of the month.
func BenchmarkAddExisting(b *testing.B) {
	for _, n := range sizes {
		keys := randomKeys(n)
		s := New(0)
		for _, k := range keys {
			s.Add(k)
		}
		// Visit the keys in another order than they were added, read sequentially so that the
		// benchmark's own reads do not miss the cache.
		rand.New(rand.NewPCG(1, 1)).Shuffle(n, func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			i := 0
			for b.Loop() {
				if s.Add(keys[i]) {
					b.Fatal("Add of a present key reported it new")
				}
				if i++; i == n {
					i = 0
				}
			}
		})
	}
}

// heapAlloc returns the live heap, timer stopped; 0 when !measure.
func heapAlloc(b *testing.B, measure bool) uint64 {
	if !measure {
		return 0
	}
	b.StopTimer()
	defer b.StartTimer()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
