package sketch

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/axiomhq/hyperloglog"

	"github.com/maumeter/maumeter/pkg/event"
)

// ev is one event as Month.Add takes it.
type ev struct {
	k              event.DeviceKey
	app, mini, day string
}

// stream generates events of n distinct devices, each seen 1 to 3 times, spread over apps, mini
// programs and days; the device key's app is fixed, as in event.KeyOf.
func stream(seed uint64, n, minis int) []ev {
	r := rand.New(rand.NewPCG(seed, 9))
	var evs []ev
	for i := range n {
		var k event.DeviceKey
		binary.LittleEndian.PutUint64(k[:8], r.Uint64())
		binary.LittleEndian.PutUint64(k[8:], r.Uint64())
		app := fmt.Sprintf("app-%d", i%3)
		for range 1 + r.IntN(3) {
			mini := ""
			if x := r.IntN(minis + 1); x < minis { // some events have no mini program
				mini = fmt.Sprintf("mp-%04d", x)
			}
			evs = append(evs, ev{k, app, mini, fmt.Sprintf("2025-03-%02d", 1+r.IntN(31))})
		}
	}
	return evs
}

func build(maxMinis int, evs []ev) *Month {
	m := newMonth(maxMinis)
	for _, e := range evs {
		m.Add(e.k, e.app, e.mini, e.day)
	}
	return m
}

func encode(t *testing.T, m *Month) []byte {
	t.Helper()
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatalf("MarshalBinary: %v", err)
	}
	return b
}

func TestRelativeError(t *testing.T) {
	if got, want := NewMonth().RelativeError(), 1.04/math.Sqrt(1<<Precision); got != want {
		t.Errorf("RelativeError = %v, want %v", got, want)
	}
	// Dense sketches are built with hyperloglog.NewNoSparse: their encoding carries the precision.
	var sk hll
	for i := range exactMax + 1 {
		sk.insert(uint64(i) << 40)
	}
	b, err := sk.appendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	if b[0] != kindDense || b[2] != Precision {
		t.Errorf("dense encoding % x: want kind %d and precision %d", b[:4], kindDense, Precision)
	}
}

// TestEstimateWithinBound checks the estimate is within 3 sigma of the truth. The sketches are
// deterministic, so this is a fixed sample; it passes with a large margin (see the log).
func TestEstimateWithinBound(t *testing.T) {
	for _, n := range []int{1_000, 2_000, 5_000, 10_000, 100_000, 1_000_000} {
		r := rand.New(rand.NewPCG(uint64(n), 3))
		m := NewMonth()
		for range n {
			var k event.DeviceKey
			binary.LittleEndian.PutUint64(k[:8], r.Uint64())
			binary.LittleEndian.PutUint64(k[8:], r.Uint64())
			m.Add(k, "app", "", "")
		}
		got := m.Estimate()
		rel := (float64(got) - float64(n)) / float64(n)
		if math.Abs(rel) > 3*m.RelativeError() {
			t.Errorf("n=%d: Estimate = %d (%+.3f%%), beyond 3 sigma = %.3f%%", n, got, 100*rel, 300*m.RelativeError())
		}
		if app := m.Apps()["app"]; app != got {
			t.Errorf("n=%d: app estimate %d, month %d: same devices", n, app, got)
		}
		t.Logf("n=%d: estimate %d, error %+.3f%% (3 sigma %.2f%%)", n, got, 100*rel, 300*m.RelativeError())
	}
}

func TestDimensions(t *testing.T) {
	m := NewMonth()
	k := func(i int) event.DeviceKey { return event.KeyOf("t", "a", fmt.Sprint(i)) }
	for i := range 100 {
		m.Add(k(i), "a", "mp1", "2025-03-01")
	}
	for i := range 50 {
		m.Add(k(i), "a", "mp2", "2025-03-02")
	}
	m.Add(k(1000), "b", "", "")
	f := func(what string, got, want map[string]uint64) {
		t.Helper()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s = %v, want %v", what, got, want)
		}
	}
	// Small counts are exact.
	if got := m.Estimate(); got != 101 {
		t.Errorf("Estimate = %d, want 101", got)
	}
	f("Apps", m.Apps(), map[string]uint64{"a": 100, "b": 1})
	f("MiniPrograms", m.MiniPrograms(), map[string]uint64{"mp1": 100, "mp2": 50})
	f("Days", m.Days(), map[string]uint64{"2025-03-01": 100, "2025-03-02": 50})
	if got := m.OtherMiniPrograms(); got != 0 {
		t.Errorf("OtherMiniPrograms = %d, want 0", got)
	}
}

// TestMiniProgramCap checks the cap keeps the smallest ids and folds the rest into other, in any
// order.
func TestMiniProgramCap(t *testing.T) {
	m := newMonth(3)
	for i, mp := range []string{"e", "d", "a", "c", "b", "e", "a"} {
		m.Add(event.KeyOf("t", "a", fmt.Sprint(i)), "a", mp, "")
	}
	if got, want := fmt.Sprint(m.MiniPrograms()), fmt.Sprint(map[string]uint64{"a": 2, "b": 1, "c": 1}); got != want {
		t.Errorf("MiniPrograms = %s, want %s", got, want)
	}
	if got := m.OtherMiniPrograms(); got != 3 { // devices 0, 1, 5 in "d" and "e"
		t.Errorf("OtherMiniPrograms = %d, want 3", got)
	}
}

// TestOrderAndDuplicates is the property a meter needs: any permutation or duplication of the
// events, and any partitioning merged in any order, gives the same bytes. It crosses the cap and
// the exact-to-dense switch of the sketches.
func TestOrderAndDuplicates(t *testing.T) {
	for _, tc := range []struct {
		name            string
		devices, minis  int
		maxMinis, parts int
	}{
		{"exact", 500, 20, MaxMiniPrograms, 3},
		{"dense", 8_000, 50, MaxMiniPrograms, 4},
		{"capped", 3_000, 40, 10, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			evs := stream(1, tc.devices, tc.minis)
			want := encode(t, build(tc.maxMinis, evs))
			r := rand.New(rand.NewPCG(2, 2))
			for round := range 3 {
				// Shuffled, with a third of the events replayed.
				shuffled := append([]ev(nil), evs...)
				shuffled = append(shuffled, evs[:len(evs)/3]...)
				r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
				if got := encode(t, build(tc.maxMinis, shuffled)); !bytes.Equal(got, want) {
					t.Fatalf("round %d: shuffled and duplicated events encode differently", round)
				}
				// Partitioned at random, each part in its own Month, merged in random order,
				// some through an encoding round trip.
				parts := make([]*Month, tc.parts)
				for i := range parts {
					parts[i] = newMonth(tc.maxMinis)
				}
				for _, e := range shuffled {
					parts[r.IntN(len(parts))].Add(e.k, e.app, e.mini, e.day)
				}
				merged := newMonth(tc.maxMinis)
				for _, i := range r.Perm(len(parts)) {
					p := parts[i]
					if r.IntN(2) == 0 {
						p = newMonth(tc.maxMinis)
						if err := p.UnmarshalBinary(encode(t, parts[i])); err != nil {
							t.Fatalf("UnmarshalBinary: %v", err)
						}
						p.maxMinis = tc.maxMinis
					}
					if err := merged.Merge(p); err != nil {
						t.Fatalf("Merge: %v", err)
					}
				}
				if got := encode(t, merged); !bytes.Equal(got, want) {
					t.Fatalf("round %d: merged partitions encode differently from the whole", round)
				}
			}
		})
	}
}

func TestMergeEqualsUnion(t *testing.T) {
	evs := stream(3, 20_000, 30)
	whole := build(MaxMiniPrograms, evs)
	a, b := build(MaxMiniPrograms, evs[:len(evs)/2]), build(MaxMiniPrograms, evs[len(evs)/2:])
	if err := a.Merge(b); err != nil {
		t.Fatal(err)
	}
	if err := a.Merge(nil); err != nil {
		t.Fatal(err)
	}
	f := func(what string, got, want any) {
		t.Helper()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: merged %v, whole %v", what, got, want)
		}
	}
	f("Estimate", a.Estimate(), whole.Estimate())
	f("Apps", a.Apps(), whole.Apps())
	f("MiniPrograms", a.MiniPrograms(), whole.MiniPrograms())
	f("Days", a.Days(), whole.Days())
	if got := b.Estimate(); got >= a.Estimate() {
		t.Errorf("merged into a, b estimate %d, a %d: b must be unchanged", got, a.Estimate())
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    *Month
	}{
		{"empty", NewMonth()},
		{"exact", build(MaxMiniPrograms, stream(4, 300, 5))},
		{"dense", build(MaxMiniPrograms, stream(5, 40_000, 5))},
		{"capped", build(2, stream(6, 1_000, 5))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := encode(t, tc.m)
			var got Month
			if err := got.UnmarshalBinary(b); err != nil {
				t.Fatalf("UnmarshalBinary: %v", err)
			}
			if again := encode(t, &got); !bytes.Equal(again, b) {
				t.Errorf("re-encoding differs:\n got % x\nwant % x", again[:min(len(again), 64)], b[:min(len(b), 64)])
			}
			for _, c := range []struct {
				what      string
				got, want any
			}{
				{"Estimate", got.Estimate(), tc.m.Estimate()},
				{"Apps", got.Apps(), tc.m.Apps()},
				{"MiniPrograms", got.MiniPrograms(), tc.m.MiniPrograms()},
				{"OtherMiniPrograms", got.OtherMiniPrograms(), tc.m.OtherMiniPrograms()},
				{"Days", got.Days(), tc.m.Days()},
			} {
				if fmt.Sprint(c.got) != fmt.Sprint(c.want) {
					t.Errorf("%s = %v after a round trip, want %v", c.what, c.got, c.want)
				}
			}
			// The decoded Month keeps counting.
			got.Add(event.KeyOf("t", "new", "device"), "new", "new", "2025-03-31")
			if got.Apps()["new"] != 1 {
				t.Errorf("Add after UnmarshalBinary: Apps = %v", got.Apps())
			}
		})
	}
}

func TestUnmarshalRejects(t *testing.T) {
	valid := encode(t, build(MaxMiniPrograms, stream(7, 50, 3)))
	sketchless := append([]byte(magic), version, Precision)
	f := func(name string, data []byte) {
		t.Helper()
		m := build(MaxMiniPrograms, stream(8, 10, 1))
		before := encode(t, m)
		err := m.UnmarshalBinary(data)
		if !errors.Is(err, ErrEncoding) {
			t.Errorf("%s: err = %v, want ErrEncoding", name, err)
		}
		if after := encode(t, m); !bytes.Equal(after, before) {
			t.Errorf("%s: the Month changed on a failed UnmarshalBinary", name)
		}
	}
	f("nil", nil)
	f("bad magic", append([]byte("XXXX"), valid[4:]...))
	f("version 2", append(append([]byte(magic), 2), valid[5:]...))
	f("precision 16", append(append([]byte(magic), version, 16), valid[6:]...))
	f("no month sketch", sketchless)
	f("truncated", valid[:len(valid)-1])
	f("trailing byte", append(append([]byte(nil), valid...), 0))
	f("sketch length past the end", append(append([]byte(nil), sketchless...), 0xff, 0x01))
	f("garbage sketch", append(append([]byte(nil), sketchless...), 3, 2, Precision, 0))
	f("sketch of precision 16", append(append([]byte(nil), sketchless...), 5, kindDense, 2, 16, 0, 0))
	f("sparse sketch", append(append([]byte(nil), sketchless...), 5, kindDense, 2, Precision, 0, 1))
	f("short dense sketch", append(append([]byte(nil), sketchless...), 9, kindDense, 2, Precision, 0, 0, 0, 0, 0x40, 0))
	f("exact sketch too long", append(append([]byte(nil), sketchless...), 11, kindExact, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9))
	f("exact sketch not ascending", append(append([]byte(nil), sketchless...), 18, kindExact, 2, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1))
	f("exact sketch too large", binary.AppendUvarint(append(append([]byte(nil), sketchless...), 3, kindExact), exactMax+1))

	// Sections with bad names: rebuild an encoding by hand from one empty sketch.
	empty, err := NewMonth().MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	sk := empty[len(sketchless):]
	sk = sk[:len(sk)-4] // the empty month sketch, without the three empty sections and other
	enc := func(names ...string) []byte {
		b := append(append([]byte(nil), sketchless...), sk...)
		b = binary.AppendUvarint(b, uint64(len(names)))
		for _, n := range names {
			b = binary.AppendUvarint(b, uint64(len(n)))
			b = append(b, n...)
			b = append(b, sk...)
		}
		return append(b, 0, 0, 0) // days, mini programs, other
	}
	var m Month
	if err := m.UnmarshalBinary(enc("a", "b")); err != nil {
		t.Fatalf("hand-built encoding: %v", err)
	}
	f("names not ascending", enc("b", "a"))
	f("duplicate name", enc("a", "a"))
	f("empty name", enc(""))
}

// TestHLLSwitch checks the switch from exact to dense at exactMax distinct hashes, with the hash 0
// (the empty-slot marker) among them, and that the bytes do not depend on which side of the
// switch a hash was inserted or merged.
func TestHLLSwitch(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	hashes := []uint64{0}
	for len(hashes) < exactMax+50 {
		hashes = append(hashes, r.Uint64())
	}
	enc := func(s *hll) []byte {
		b, err := s.appendBinary(nil)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, n := range []int{1, exactMax - 1, exactMax, exactMax + 1, len(hashes)} {
		var want hll
		for _, h := range hashes[:n] {
			want.insert(h)
			want.insert(h)
		}
		if dense := want.dense != nil; dense != (n > exactMax) {
			t.Errorf("n=%d: dense = %v", n, dense)
		}
		if n <= exactMax && want.estimate() != uint64(n) {
			t.Errorf("n=%d: estimate %d, want exact", n, want.estimate())
		}
		if n > exactMax { // the registers are those of a sketch that was always dense
			ref := hyperloglog.NewNoSparse()
			for _, h := range hashes[:n] {
				ref.InsertHash(h)
			}
			b, err := ref.AppendBinary([]byte{kindDense})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(enc(&want), b) {
				t.Errorf("n=%d: registers differ from a sketch that was always dense", n)
			}
		}
		for round := range 5 {
			hs := append([]uint64(nil), hashes[:n]...)
			r.Shuffle(len(hs), func(i, j int) { hs[i], hs[j] = hs[j], hs[i] })
			var a, b hll
			cut := r.IntN(len(hs) + 1)
			for _, h := range hs[:cut] {
				a.insert(h)
			}
			for _, h := range hs[cut/2:] {
				b.insert(h)
			}
			if round%2 == 0 {
				a, b = b, a
			}
			a.merge(&b)
			if !bytes.Equal(enc(&a), enc(&want)) {
				t.Fatalf("n=%d round %d: merged halves encode differently from one stream", n, round)
			}
		}
	}
}

func TestNameHeap(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 4))
	var h nameHeap
	var all []string
	for range 500 {
		s := fmt.Sprint(r.IntN(300))
		h.push(s)
		all = append(all, s)
	}
	slices.Sort(all)
	for i := len(all) - 1; i >= 0; i-- {
		if got := h.pop(); got != all[i] {
			t.Fatalf("pop #%d = %q, want %q", len(all)-1-i, got, all[i])
		}
	}
}
