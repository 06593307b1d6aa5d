package tenant

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestWatch: the first check applies the file, an unchanged file is not applied again, a change
// is, an invalid file reports its error, and the parse options (a plan catalogue's ids) apply.
func TestWatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tenants.yaml")
	write := func(plan string) {
		t.Helper()
		data := "tenants:\n  - {id: acme, plan: " + plan + ", purchased: 2026-01-01, apps: [a]}\n"
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
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
		t.Fatalf("first check = %+v, want the file with plan gold", r)
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
