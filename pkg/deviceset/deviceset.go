// Package deviceset holds exact sets of 128-bit device keys: the data structure MAU is counted
// with. A Set is not safe for concurrent use; the counter gives each partition its own.
package deviceset

import "github.com/maumeter/maumeter/pkg/event"

// Set is an exact set of device keys.
type Set struct {
	m map[event.DeviceKey]struct{}
}

// New returns an empty set sized for about n keys.
func New(n int) *Set { return &Set{m: make(map[event.DeviceKey]struct{}, n)} }

// Add inserts k and reports whether it was new.
func (s *Set) Add(k event.DeviceKey) bool {
	if _, ok := s.m[k]; ok {
		return false
	}
	s.m[k] = struct{}{}
	return true
}

// Has reports whether k is in the set.
func (s *Set) Has(k event.DeviceKey) bool {
	_, ok := s.m[k]
	return ok
}

// Len is the number of distinct keys.
func (s *Set) Len() int { return len(s.m) }
