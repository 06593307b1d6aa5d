package main

import (
	"bytes"
	"context"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestVersion runs `maumeter version` unstamped and stamped as `make build` stamps it
// (-X main.version=...), and checks the lines it prints.
func TestVersion(t *testing.T) {
	f := func(stamp, wantFirst string) {
		t.Helper()
		old := version
		version = stamp
		defer func() { version = old }()
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), time.Now, []string{"version"}, &stdout, &stderr); code != 0 {
			t.Fatalf("version %q: exit %d, stderr %q", stamp, code, stderr.String())
		}
		lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
		wantGo := "go " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH
		if len(lines) < 2 || lines[0] != wantFirst || lines[1] != wantGo {
			t.Errorf("version %q printed %q, want first lines %q and %q", stamp, stdout.String(), wantFirst, wantGo)
		}
		for _, l := range lines[2:] {
			if !strings.HasPrefix(l, "vcs") {
				t.Errorf("version %q: line %q is not a vcs setting", stamp, l)
			}
		}
	}
	f("v1.2.3-4-gabcdef0-dirty", "maumeter v1.2.3-4-gabcdef0-dirty")
	// Unstamped, the test binary's module version: go test records "(devel)".
	f("", "maumeter (devel)")

	var stderr bytes.Buffer
	if code := run(context.Background(), time.Now, []string{"version", "extra"}, &bytes.Buffer{}, &stderr); code != 2 {
		t.Errorf("version extra: exit %d, want 2 (usage); stderr %q", code, stderr.String())
	}
}
