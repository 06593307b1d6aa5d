package clock

import (
	"strings"
	"testing"
	"time"
)

func TestFromEnv(t *testing.T) {
	start := time.Now().Add(-time.Hour) // the process started an hour ago
	f := func(env map[string]string, want time.Time, wantErr string) {
		t.Helper()
		now, err := fromEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }, start)
		if wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), wantErr) {
				t.Errorf("%v: error %v, want one with %q", env, err, wantErr)
			}
			return
		}
		if err != nil {
			t.Fatalf("%v: %v", env, err)
		}
		// The clock advances with real time: a reading lies within a second after want.
		if got := now(); got.Before(want) || got.After(want.Add(time.Second)) {
			t.Errorf("%v: now() = %s, want %s (within a second after)", env, got, want)
		}
	}
	fake := time.Date(2029, 7, 15, 10, 0, 0, 0, time.UTC)
	f(nil, time.Now(), "")
	f(map[string]string{Env: ""}, time.Now(), "")
	// Since the process start, an hour ago.
	f(map[string]string{Env: "2029-07-15T10:00:00Z"}, fake.Add(time.Hour), "")
	// Pinned to a real instant two hours ago: every process given it reads the same.
	at := time.Now().Add(-2 * time.Hour).Format(time.RFC3339Nano)
	f(map[string]string{Env: "2029-07-15T12:00:00+02:00", EnvAt: at}, fake.Add(2*time.Hour), "")
	f(map[string]string{Env: "2029-07-15"}, time.Time{}, "MAUMETER_FAKE_NOW=\"2029-07-15\": want an RFC 3339 instant")
	f(map[string]string{Env: "2029-07-15T10:00:00Z", EnvAt: "yesterday"}, time.Time{}, "MAUMETER_FAKE_NOW_AT=\"yesterday\"")
}

// Durations between readings of an offset clock are real durations.
func TestOffsetAdvances(t *testing.T) {
	now := Offset(time.Date(2029, 7, 15, 10, 0, 0, 0, time.UTC), time.Now())
	a := now()
	time.Sleep(20 * time.Millisecond)
	if d := now().Sub(a); d < 20*time.Millisecond || d > 5*time.Second {
		t.Errorf("20 ms later the clock moved %s", d)
	}
	if a.Year() != 2029 {
		t.Errorf("now() = %s, want 2029-07-15", a)
	}
}
