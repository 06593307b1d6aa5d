package tenant

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// writeAtomic replaces path with data as a writer of a watched file should: a temporary file
// in the same directory renamed over it, so a reader sees the old content or the new, whole.
func writeAtomic(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestWatch: the first content is applied, an unchanged file is not applied again, a change
// is, an invalid file reports its error, and the parse options (a plan catalogue's ids) apply.
func TestWatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tenants.yaml")
	write := func(plan string) {
		t.Helper()
		writeAtomic(t, path, []byte("tenants:\n  - {id: acme, plan: "+plan+", purchased: 2026-01-01, apps: [a]}\n"))
	}
	write("gold")
	type result struct {
		plan string
		err  error
	}
	got := make(chan result, 16)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go Watch(ctx, path, 10*time.Millisecond, func(c *Catalog, err error) {
		if err != nil {
			got <- result{err: err}
			return
		}
		got <- result{plan: c.Tenants[0].Plan}
	}, KnownPlans("gold", "silver"))
	next := func() result {
		t.Helper()
		select {
		case r := <-got:
			return r
		case <-time.After(5 * time.Second):
			t.Fatal("nothing applied within 5 s")
			return result{}
		}
	}
	if r := next(); r.err != nil || r.plan != "gold" {
		t.Fatalf("first content = %+v, want the file with plan gold", r)
	}
	time.Sleep(50 * time.Millisecond)
	select {
	case r := <-got:
		t.Fatalf("unchanged file applied again: %+v", r)
	default:
	}
	write("silver")
	if r := next(); r.err != nil || r.plan != "silver" {
		t.Fatalf("after a change = %+v, want plan silver", r)
	}
	write("pro") // not among the known plans
	if r := next(); r.err == nil {
		t.Fatalf("a plan outside the known ones was applied: %+v", r)
	}
}

// A content is applied once two checks in a row read it and it is not the one in force: a
// half-written file read once (a writer between its truncate and its write) is never applied.
func TestWatchSettled(t *testing.T) {
	const a, b, torn = "tenants: [a]", "tenants: [b]", "tenants: ["
	var s settled
	for i, c := range []struct {
		read  string
		apply bool
	}{
		{a, false}, {a, true}, {a, false}, // the first content, on the second check; then in force
		{"", false}, {b, false}, {b, true}, // a truncated file read once, then b twice
		{torn, false}, {b, false}, {b, false}, // torn once, back to b, which is in force
		{torn, false}, {a, false}, {torn, false}, {a, false}, {a, true}, // a only once read twice in a row
		{b, false}, {a, false}, {a, false}, // b never twice: a stays in force, nothing applied
	} {
		if got := s.read([]byte(c.read)); got != c.apply {
			t.Errorf("check %d reads %q: apply %v, want %v", i, c.read, got, c.apply)
		}
	}
}
