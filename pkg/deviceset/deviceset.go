// Package deviceset holds exact sets of 128-bit device keys: the data structure MAU is counted
// with, so it must never lose a key nor count one twice, and it must stay small, because the
// counter keeps one set per partition and open tenant-month in memory.
//
// A Set is an open-addressing hash table with linear probing, split into segments by the top bits
// of the key (extendible hashing). A full segment grows by 1.5x or splits in two on its own, so
// growth is incremental: there is never a moment when the whole set is copied, and the heap holds
// 16 bytes per slot at a load between 0.53 and 0.8, 20 to 30 bytes per device plus a directory of
// 8 bytes per segment. Device keys are prefixes of SHA-256 and therefore already uniform: the first
// 8 bytes are the hash, nothing is rehashed.
//
// The package does no I/O. A Set is not safe for concurrent use; the counter gives each partition
// its own.
package deviceset

import (
	"encoding/binary"
	"iter"
	"math/bits"
	"slices"
	"unsafe"

	"github.com/maumeter/maumeter/pkg/event"
)

const (
	// A segment grows when it would exceed a load of loadNum/loadDen. Linear probing at 0.8 reads
	// about 13 slots (208 bytes, contiguous) to insert a new key and 3 to find a present one.
	loadNum, loadDen = 4, 5
	// minSlots is the smallest segment.
	minSlots = 8
	// maxSegSlots bounds a segment (256 KiB): a fuller segment splits instead of growing, so one
	// growth step copies at most this many keys and holds at most 640 KiB of old and new slots.
	maxSegSlots = 1 << 14
	// maxDepth bounds the directory at 2^16 entries (512 KiB). Beyond it (2^30 keys, or keys
	// crafted to share their top bits) segments grow without splitting.
	maxDepth = 16
)

// slot holds a device key as two little-endian words; lo is also the hash. The all-zero slot is
// empty, which is why the all-zero key is kept outside the table.
type slot struct{ lo, hi uint64 }

func slotOf(k event.DeviceKey) slot {
	return slot{binary.LittleEndian.Uint64(k[:8]), binary.LittleEndian.Uint64(k[8:])}
}

func (s slot) key() event.DeviceKey {
	var k event.DeviceKey
	binary.LittleEndian.PutUint64(k[:8], s.lo)
	binary.LittleEndian.PutUint64(k[8:], s.hi)
	return k
}

// segment is one linear-probing table. It holds the keys whose top depth bits select it; a key's
// home slot comes from the bits below those (lo << depth), mapped onto the table by
// multiply-shift, so sizes need not be powers of two.
type segment struct {
	slots []slot
	n     int // keys held
	limit int // n may not exceed it
	depth uint8
}

func newSegment(n int, depth uint8) *segment {
	n = max(n, minSlots)
	// Round up to the allocator's size class: the rounding is allocated anyway.
	slots := slices.Grow([]slot(nil), n)
	slots = slots[:cap(slots)]
	return &segment{slots: slots, limit: len(slots) * loadNum / loadDen, depth: depth}
}

// find returns the slot of k, or the empty slot where k belongs.
func (g *segment) find(k slot) (int, bool) {
	slots := g.slots
	hi, _ := bits.Mul64(k.lo<<g.depth, uint64(len(slots)))
	i := int(hi)
	for {
		switch slots[i] {
		case k:
			return i, true
		case slot{}:
			return i, false
		}
		if i++; i == len(slots) {
			i = 0
		}
	}
}

// put stores k, known to be absent, without checking the limit.
func (g *segment) put(k slot) {
	i, _ := g.find(k)
	g.slots[i] = k
	g.n++
}

// Set is an exact set of device keys. Create one with New. Not safe for concurrent use.
type Set struct {
	dir   []*segment // 1<<depth entries; a segment of local depth d fills 1<<(depth-d) in a row
	depth uint8
	n     int // keys in the table (the zero key is not there)
	zero  bool
	nseg  int
	slots int // total slots over all segments

	maxSegSlots int   // maxSegSlots, except in tests
	maxDepth    uint8 // maxDepth, except in tests
}

// New returns an empty set sized for about n keys; n is a hint, a Set grows as needed.
func New(n int) *Set { return newSet(n, maxSegSlots, maxDepth) }

func newSet(n, maxSegSlots int, maxDepth uint8) *Set {
	s := &Set{maxSegSlots: maxSegSlots, maxDepth: maxDepth}
	// Slack of 1/8 so that a set filled to its hint does not start growing around it.
	need := max(n, 0) * loadDen / loadNum
	need += need / 8
	for need>>s.depth > maxSegSlots && s.depth < maxDepth {
		s.depth++
	}
	s.dir = make([]*segment, 1<<s.depth)
	for i := range s.dir {
		s.dir[i] = newSegment(need>>s.depth, s.depth)
		s.slots += len(s.dir[i].slots)
	}
	s.nseg = len(s.dir)
	return s
}

// segmentOf returns the directory index of a hash.
func (s *Set) segmentOf(h uint64) int { return int(h >> (64 - uint(s.depth))) } // h>>64 == 0

// Add inserts k and reports whether it was new.
func (s *Set) Add(k event.DeviceKey) bool {
	sk := slotOf(k)
	if sk == (slot{}) {
		added := !s.zero
		s.zero = true
		return added
	}
	for {
		d := s.segmentOf(sk.lo)
		g := s.dir[d]
		i, ok := g.find(sk)
		if ok {
			return false
		}
		if g.n < g.limit {
			g.slots[i] = sk
			g.n++
			s.n++
			return true
		}
		s.grow(d, g)
	}
}

// Has reports whether k is in the set.
func (s *Set) Has(k event.DeviceKey) bool {
	sk := slotOf(k)
	if sk == (slot{}) {
		return s.zero
	}
	_, ok := s.dir[s.segmentOf(sk.lo)].find(sk)
	return ok
}

// Len is the number of distinct keys.
func (s *Set) Len() int {
	if s.zero {
		return s.n + 1
	}
	return s.n
}

// Bytes is the heap the set holds, in bytes: its slots, segments and directory. It counts what
// the set allocated, not garbage it left for the collector (at most one outgrown segment).
func (s *Set) Bytes() int {
	return int(unsafe.Sizeof(*s)) + len(s.dir)*int(unsafe.Sizeof(s.dir[0])) +
		s.nseg*int(unsafe.Sizeof(segment{})) + s.slots*int(unsafe.Sizeof(slot{}))
}

// All yields every key once, in no particular order. The set must not be changed while the
// iteration runs.
func (s *Set) All() iter.Seq[event.DeviceKey] {
	return func(yield func(event.DeviceKey) bool) {
		if s.zero && !yield(event.DeviceKey{}) {
			return
		}
		var prev *segment
		for _, g := range s.dir {
			if g == prev { // a segment's directory entries are adjacent
				continue
			}
			prev = g
			for _, k := range g.slots {
				if k != (slot{}) && !yield(k.key()) {
					return
				}
			}
		}
	}
}

// grow makes room in g, found at directory index d: it splits g in two when g is at its size
// bound, and otherwise replaces it by a table 1.5 times larger. Either way the keys of g end at a
// load of about 0.53.
func (s *Set) grow(d int, g *segment) {
	size := len(g.slots) + len(g.slots)/2
	if size <= s.maxSegSlots || g.depth >= s.maxDepth {
		ng := newSegment(size, g.depth)
		s.rehash(g, ng, ng, 0)
		s.replace(d, g, ng, ng)
		return
	}
	if g.depth == s.depth {
		dir := make([]*segment, 2*len(s.dir))
		for i := range dir {
			dir[i] = s.dir[i/2]
		}
		s.dir = dir
		s.depth++
		d *= 2
	}
	// Uniform keys split about evenly; keys crafted to share bits may not, so size each half
	// for what it will hold.
	bit := 63 - uint(g.depth)
	nb := 0
	for _, k := range g.slots {
		nb += int(k.lo >> bit & 1)
	}
	na := g.n - nb
	a := newSegment(max(size/2, na*loadDen/loadNum+1), g.depth+1)
	b := newSegment(max(size/2, nb*loadDen/loadNum+1), g.depth+1)
	s.rehash(g, a, b, bit)
	s.replace(d, g, a, b)
}

// rehash moves the keys of g into a (bit 'bit' of the hash clear) or b (set).
func (s *Set) rehash(g, a, b *segment, bit uint) {
	for _, k := range g.slots {
		switch {
		case k == slot{}:
		case k.lo>>bit&1 == 0 || a == b:
			a.put(k)
		default:
			b.put(k)
		}
	}
	s.slots += len(a.slots) - len(g.slots)
	if a != b {
		s.slots += len(b.slots)
		s.nseg++
	}
}

// replace points the directory entries of g, one of which is d, at a (first half) and b.
func (s *Set) replace(d int, g, a, b *segment) {
	span := 1 << (s.depth - g.depth)
	start := d &^ (span - 1)
	for i := range span {
		if i < span/2 || a == b {
			s.dir[start+i] = a
		} else {
			s.dir[start+i] = b
		}
	}
}
