package deviceset

import (
	"fmt"
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
}
