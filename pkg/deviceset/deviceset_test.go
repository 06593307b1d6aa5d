package deviceset

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/maumeter/maumeter/pkg/event"
)

func TestSetCountsDistinctKeys(t *testing.T) {
	s := New(0)
	for round := range 3 {
		for i := range 1000 {
			k := event.KeyOf("t", "a", fmt.Sprint(i))
			if got, want := s.Add(k), round == 0; got != want {
				t.Fatalf("round %d: Add(%d) = %v, want %v", round, i, got, want)
			}
			if !s.Has(k) {
				t.Fatalf("Has(%d) = false after Add", i)
			}
		}
	}
	if s.Len() != 1000 {
		t.Errorf("Len = %d, want 1000", s.Len())
	}
	if s.Has(event.KeyOf("t", "a", "1000")) {
		t.Error("Has reports a key never added")
	}
	checkInvariants(t, s)
}

// key builds a device key from its two little-endian halves; lo is the set's hash.
func key(lo, hi uint64) event.DeviceKey {
	var k event.DeviceKey
	binary.LittleEndian.PutUint64(k[:8], lo)
	binary.LittleEndian.PutUint64(k[8:], hi)
	return k
}

// TestSetEdgeKeys covers keys the table treats specially: the all-zero key (the empty-slot
// marker), keys with a zero hash or a zero second half, and keys that share their hash.
func TestSetEdgeKeys(t *testing.T) {
	f := func(name string, keys []event.DeviceKey, absent []event.DeviceKey) {
		t.Helper()
		s := New(0)
		want := map[event.DeviceKey]bool{}
		for _, k := range keys {
			if got := s.Add(k); got != !want[k] {
				t.Errorf("%s: Add(%v) = %v, want %v", name, k, got, !want[k])
			}
			want[k] = true
		}
		for _, k := range keys {
			if !s.Has(k) {
				t.Errorf("%s: Has(%v) = false, want true", name, k)
			}
		}
		for _, k := range absent {
			if s.Has(k) {
				t.Errorf("%s: Has(%v) = true for a key never added", name, k)
			}
		}
		if s.Len() != len(want) {
			t.Errorf("%s: Len = %d, want %d", name, s.Len(), len(want))
		}
		got := map[event.DeviceKey]bool{}
		for k := range s.All() {
			if got[k] {
				t.Errorf("%s: All yields %v twice", name, k)
			}
			got[k] = true
		}
		if len(got) != len(want) {
			t.Errorf("%s: All yields %d keys, want %d", name, len(got), len(want))
		}
	}
	zero := event.DeviceKey{}
	f("empty", nil, []event.DeviceKey{zero, key(1, 0)})
	f("zero key", []event.DeviceKey{zero, zero}, []event.DeviceKey{key(0, 1), key(1, 0)})
	f("zero hash", []event.DeviceKey{key(0, 1), key(0, 2)}, []event.DeviceKey{zero, key(0, 3)})
	f("zero second half", []event.DeviceKey{key(1, 0), key(^uint64(0), 0)}, []event.DeviceKey{zero, key(2, 0)})
	f("zero key among others", []event.DeviceKey{key(5, 5), zero, key(0, 5), key(5, 0)}, []event.DeviceKey{key(5, 6)})
	var same []event.DeviceKey // 100 keys with one hash: one long probe run that wraps around
	for i := range 100 {
		same = append(same, key(^uint64(0), uint64(i)))
	}
	f("shared hash", same, []event.DeviceKey{key(^uint64(0), 100), key(^uint64(0)-1, 0)})
}

// TestSetMatchesMap is the property test: random streams with repeats, against a Go map.
func TestSetMatchesMap(t *testing.T) {
	for _, tc := range []struct {
		name     string
		hint, n  int
		distinct int
		mask     uint64 // applied to the hash: keys that share their top bits
		maxSeg   int
		maxDepth uint8
	}{
		{"small", 0, 2_000, 500, ^uint64(0), maxSegSlots, maxDepth},
		{"hinted", 50_000, 60_000, 40_000, ^uint64(0), maxSegSlots, maxDepth},
		{"splits", 0, 100_000, 60_000, ^uint64(0), maxSegSlots, maxDepth},
		{"small segments", 5_000, 100_000, 60_000, ^uint64(0), 64, 10},
		// Segments outgrow their size bound once the directory is at its depth bound.
		{"depth bound", 0, 100_000, 60_000, ^uint64(0), 64, 4},
		// Top bit clear: the first split sends every key to one side. (Keys that share top bits
		// also crowd part of their segment: slow, but correct.)
		{"skewed split", 0, 20_000, 10_000, ^uint64(0) >> 1, 64, 10},
		// Top 20 bits equal: every split is one-sided until the depth bound.
		{"shared top bits", 0, 4_000, 2_000, ^uint64(0) >> 20, 64, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, uint64(tc.n)))
			pool := make([]event.DeviceKey, tc.distinct)
			for i := range pool {
				pool[i] = key(r.Uint64()&tc.mask, r.Uint64())
			}
			s, want := newSet(tc.hint, tc.maxSeg, tc.maxDepth), map[event.DeviceKey]bool{}
			for i := range tc.n {
				k := pool[r.IntN(len(pool))]
				if got := s.Add(k); got != !want[k] {
					t.Fatalf("Add #%d = %v, want %v", i, got, !want[k])
				}
				want[k] = true
				if s.Len() != len(want) {
					t.Fatalf("after Add #%d: Len = %d, want %d", i, s.Len(), len(want))
				}
			}
			for _, k := range pool {
				if s.Has(k) != want[k] {
					t.Fatalf("Has(%v) = %v, want %v", k, s.Has(k), want[k])
				}
			}
			for range 1000 {
				if k := key(r.Uint64()&tc.mask, r.Uint64()); s.Has(k) != want[k] {
					t.Fatalf("Has(%v) = %v, want %v", k, s.Has(k), want[k])
				}
			}
			n := 0
			for k := range s.All() {
				if !want[k] {
					t.Fatalf("All yields %v, never added", k)
				}
				n++
			}
			if n != len(want) {
				t.Errorf("All yields %d keys, want %d", n, len(want))
			}
			checkInvariants(t, s)
			if tc.maxSeg < maxSegSlots && s.depth != tc.maxDepth {
				t.Errorf("directory depth %d, want the bound %d", s.depth, tc.maxDepth)
			}
		})
	}
}

func TestSetAllStopsEarly(t *testing.T) {
	s := New(0)
	s.Add(event.DeviceKey{})
	for i := range 100 {
		s.Add(event.KeyOf("t", "a", fmt.Sprint(i)))
	}
	n := 0
	for range s.All() {
		if n++; n == 10 {
			break
		}
	}
	if n != 10 {
		t.Errorf("loop ran %d times, want 10", n)
	}
}

// TestSetBytesPerDevice checks the accounted heap stays under the 40 bytes per device of issue 5
// at every size, including right after segments grow or split. The heap figures measured by the
// runtime are in the benchmarks.
func TestSetBytesPerDevice(t *testing.T) {
	s := New(0)
	r := rand.New(rand.NewPCG(2, 2))
	worst, at := 0.0, 0
	for i := 1; i <= 400_000; i++ {
		s.Add(key(r.Uint64(), r.Uint64()))
		if i < 1000 {
			continue // a small set is dominated by its minimum size
		}
		if b := float64(s.Bytes()) / float64(s.Len()); b > worst {
			worst, at = b, i
		}
	}
	if worst >= 40 {
		t.Errorf("Bytes/Len = %.1f at %d devices, want < 40", worst, at)
	}
	t.Logf("worst Bytes/Len %.1f at %d devices; %.1f at %d", worst, at, float64(s.Bytes())/float64(s.Len()), s.Len())
}

// checkInvariants checks the directory and every segment against the set's counters.
func checkInvariants(t *testing.T, s *Set) {
	t.Helper()
	if len(s.dir) != 1<<s.depth {
		t.Fatalf("directory has %d entries at depth %d", len(s.dir), s.depth)
	}
	n, nseg, slots := 0, 0, 0
	for d := 0; d < len(s.dir); {
		g := s.dir[d]
		span := 1 << (s.depth - g.depth)
		if g.depth > s.depth || d%span != 0 {
			t.Fatalf("segment of depth %d at directory index %d (depth %d)", g.depth, d, s.depth)
		}
		for i := d; i < d+span; i++ {
			if s.dir[i] != g {
				t.Fatalf("directory index %d: not the segment of index %d", i, d)
			}
		}
		held := 0
		for _, k := range g.slots {
			if k == (slot{}) {
				continue
			}
			held++
			if got := s.segmentOf(k.lo) &^ (span - 1); got != d {
				t.Fatalf("key %x in segment %d, belongs in %d", k.lo, d, got)
			}
		}
		if held != g.n || g.n > g.limit || g.limit >= len(g.slots) {
			t.Fatalf("segment %d: holds %d keys, n %d, limit %d, %d slots", d, held, g.n, g.limit, len(g.slots))
		}
		n, nseg, slots = n+held, nseg+1, slots+len(g.slots)
		d += span
	}
	if n != s.n || nseg != s.nseg || slots != s.slots {
		t.Fatalf("set counts %d keys, %d segments, %d slots; tables hold %d, %d, %d", s.n, s.nseg, s.slots, n, nseg, slots)
	}
}
