// Package sketch holds the HyperLogLog sketches of a tenant-month: distinct devices over the
// month (a cross-check of the exact count), per app, per mini program and per day (DAU). Exact
// sets would cost too much for those dimensions; the month's billed MAU never comes from here.
//
// Sketches are kept per partition and merged for reads, and they are stored in rollup rows, so a
// Month merges and serializes, and both are deterministic: the same devices, in any order, any
// number of times, over any partitioning, give the same estimates and the same bytes.
//
// Each sketch is exact while it has seen at most 1,536 distinct devices (a table of their 64-bit
// hashes), then a dense github.com/axiomhq/hyperloglog sketch of precision 14: 16,384 registers,
// 16 KiB, a standard error of 1.04/sqrt(2^14) = 0.81%. So a sketch never holds more than about
// 16 KiB, and a Month holds at most MaxMiniPrograms mini-program sketches.
//
// The package does no I/O. A Month is not safe for concurrent use; its read methods (Estimate,
// Apps, ..., MarshalBinary) may run concurrently with each other, not with Add, Merge or
// UnmarshalBinary.
package sketch

import (
	"encoding/binary"
	"errors"
	"slices"

	"github.com/maumeter/maumeter/pkg/event"
)

// Precision is the HyperLogLog precision p of every sketch: 2^p registers.
const Precision = 14

// MaxMiniPrograms bounds the mini-program sketches of a Month, and so its memory: about
// 16 KiB each once dense. Beyond it, the devices of the mini programs whose ids sort last are
// counted together (OtherMiniPrograms). Keeping the smallest ids, rather than the first seen,
// makes the result independent of event order and of how partitions are merged.
const MaxMiniPrograms = 10_000

// ErrEncoding is returned, wrapped, by UnmarshalBinary for bytes that are not a Month.
var ErrEncoding = errors.New("sketch: invalid encoding")

// Month holds the sketches of one tenant-month. Create one with NewMonth (or UnmarshalBinary into a
// zero Month). Reads may run concurrently with each other; Add, Merge and UnmarshalBinary need the
// Month to themselves.
type Month struct {
	all   *hll
	apps  map[string]*hll
	days  map[string]*hll
	minis map[string]*hll
	// names is a max-heap of the keys of minis, so that the largest can make room.
	names nameHeap
	// other counts the mini programs beyond the cap; nil until the cap is reached.
	other    *hll
	maxMinis int // MaxMiniPrograms, except in tests
}

// NewMonth returns an empty Month.
func NewMonth() *Month { return newMonth(MaxMiniPrograms) }

func newMonth(maxMinis int) *Month {
	return &Month{
		all:      newSketch(),
		apps:     map[string]*hll{},
		days:     map[string]*hll{},
		minis:    map[string]*hll{},
		maxMinis: maxMinis,
	}
}

func newSketch() *hll { return &hll{} }

// hash is the 64-bit hash of a device key: its first 8 bytes, big-endian. Keys are SHA-256
// prefixes and already uniform, so they are not hashed again. The encoding depends on this.
// (pkg/deviceset uses the same bytes; the two never meet, so that correlation is harmless.)
func hash(k event.DeviceKey) uint64 { return binary.BigEndian.Uint64(k[:8]) }

// Add records an event of device k in app, mini program and day (YYYY-MM-DD in the tenant's
// zone). An empty app, mini program or day is not recorded in that dimension; the month always is.
func (m *Month) Add(k event.DeviceKey, app, miniProgram, day string) {
	h := hash(k)
	m.all.insert(h)
	if app != "" {
		sketchOf(m.apps, app).insert(h)
	}
	if miniProgram != "" {
		m.mini(miniProgram).insert(h)
	}
	if day != "" {
		sketchOf(m.days, day).insert(h)
	}
}

func sketchOf(sks map[string]*hll, name string) *hll {
	sk := sks[name]
	if sk == nil {
		sk = newSketch()
		sks[name] = sk
	}
	return sk
}

// mini returns the sketch that counts mini program name: its own, or other once the cap is
// reached and name sorts after the kept ones. A kept name that loses its place to a smaller one
// is merged into other.
func (m *Month) mini(name string) *hll {
	if sk := m.minis[name]; sk != nil {
		return sk
	}
	if len(m.minis) >= m.maxMinis {
		if m.other == nil {
			m.other = newSketch()
		}
		if len(m.names) == 0 || name > m.names[0] {
			return m.other
		}
		largest := m.names.pop()
		m.other.merge(m.minis[largest])
		delete(m.minis, largest)
	}
	sk := newSketch()
	m.minis[name] = sk
	m.names.push(name)
	return sk
}

// Estimate is the estimated number of distinct devices in the month.
func (m *Month) Estimate() uint64 { return m.all.estimate() }

// Apps returns the estimated distinct devices per app.
func (m *Month) Apps() map[string]uint64 { return estimates(m.apps) }

// MiniPrograms returns the estimated distinct devices per mini program, for the mini programs
// that have a sketch of their own; see OtherMiniPrograms.
func (m *Month) MiniPrograms() map[string]uint64 { return estimates(m.minis) }

// OtherMiniPrograms is the estimated number of distinct devices that used a mini program beyond
// the MaxMiniPrograms kept ones (zero while there are not more). It is not in MiniPrograms,
// where it could collide with a real mini program id.
func (m *Month) OtherMiniPrograms() uint64 {
	if m.other == nil {
		return 0
	}
	return m.other.estimate()
}

// Days returns the estimated distinct devices per day (DAU).
func (m *Month) Days() map[string]uint64 { return estimates(m.days) }

func estimates(sks map[string]*hll) map[string]uint64 {
	est := make(map[string]uint64, len(sks))
	for name, sk := range sks {
		est[name] = sk.estimate()
	}
	return est
}

// RelativeError is the relative standard error of an estimate: 1.04/sqrt(2^Precision) = 0.8125%.
// A caller comparing an estimate e with an exact count n treats |e-n| > 3*RelativeError()*n as a
// disagreement: an honest sketch exceeds 3 sigma in 0.3% of comparisons.
func (m *Month) RelativeError() float64 { return relativeError }

const relativeError = 1.04 / 128 // 1.04/sqrt(2^Precision), checked by a test

// Merge adds the devices of other to m; other is not changed. The result is the Month that one
// stream of both months' events would have built. The error is always nil today; it is there for
// a later encoding version whose sketches cannot merge with these (another precision).
func (m *Month) Merge(other *Month) error {
	if other == nil {
		return nil
	}
	m.all.merge(other.all)
	for name, sk := range other.apps {
		sketchOf(m.apps, name).merge(sk)
	}
	for name, sk := range other.days {
		sketchOf(m.days, name).merge(sk)
	}
	for name, sk := range other.minis {
		m.mini(name).merge(sk)
	}
	if other.other != nil {
		if m.other == nil {
			m.other = newSketch()
		}
		m.other.merge(other.other)
	}
	return nil
}

// Bytes is the heap m holds, roughly: its sketches and maps.
func (m *Month) Bytes() int {
	const perName = 64 // map entry, name header and heap slot: a rough figure
	n := 200 + m.all.bytes()
	for _, sks := range []map[string]*hll{m.apps, m.days, m.minis} {
		for name, sk := range sks {
			n += perName + len(name) + sk.bytes()
		}
	}
	if m.other != nil {
		n += m.other.bytes()
	}
	return n
}

// nameHeap is a max-heap of strings.
type nameHeap []string

func (h *nameHeap) push(s string) {
	*h = append(*h, s)
	a := *h
	for i := len(a) - 1; i > 0; {
		p := (i - 1) / 2
		if a[p] >= a[i] {
			break
		}
		a[p], a[i] = a[i], a[p]
		i = p
	}
}

func (h *nameHeap) pop() string {
	a := *h
	top := a[0]
	n := len(a) - 1
	a[0] = a[n]
	a = a[:n]
	for i := 0; ; {
		l, big := 2*i+1, i
		if l < n && a[l] > a[big] {
			big = l
		}
		if r := l + 1; r < n && a[r] > a[big] {
			big = r
		}
		if big == i {
			break
		}
		a[i], a[big] = a[big], a[i]
		i = big
	}
	*h = a
	return top
}

// sortedNames returns the keys of sks in ascending order.
func sortedNames(sks map[string]*hll) []string {
	names := make([]string, 0, len(sks))
	for name := range sks {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}
