// Package clock is the one clock of a maumeter process and of the tests that start maumeter
// processes: the wall clock, or, for tests, the wall clock shifted to another date.
//
// Everything that decides with the calendar reads it: which month an event or a read falls in,
// the ingest ts window, when a month has ended and closes, the POC cap months, when an invoice
// is rated and whether it is overdue, the dates keys are created. Durations, timeouts, deadlines
// and metrics keep time.Now and time.Since: a shifted clock advances at the real rate, so they
// would not change, and they must never depend on the date. ClickHouse (the now64() defaults of
// inserted_at and written_at) and Kafka (record timestamps) stay on the real clock; nothing may
// compare their times with this clock.
//
// MAUMETER_FAKE_NOW=2029-07-15T10:00:00Z (RFC 3339) makes the clock read that instant when the
// process reads the variable, at its start, and advance with real time from there. Processes
// started at different times would then disagree; MAUMETER_FAKE_NOW_AT (RFC 3339, a real
// instant) pins the fake instant to that real instant instead, so every process given both
// variables reads the same clock. Pin sets it for the processes a test starts.
package clock

import (
	"fmt"
	"os"
	"time"
)

const (
	// Env sets the process clock to another instant (RFC 3339).
	Env = "MAUMETER_FAKE_NOW"
	// EnvAt is the real instant (RFC 3339) at which the clock read Env; default the process
	// start.
	EnvAt = "MAUMETER_FAKE_NOW_AT"
)

// Offset returns a clock that reads fake at the real instant at and advances with real time.
// Its readings keep time.Now's monotonic reading, so durations between them are exact.
func Offset(fake, at time.Time) func() time.Time {
	d := fake.Sub(at)
	return func() time.Time { return time.Now().Add(d) }
}

// FromEnv returns the process clock: time.Now, or an offset clock when MAUMETER_FAKE_NOW is
// set. Call it once, at the start of the process.
func FromEnv() (func() time.Time, error) {
	return fromEnv(os.LookupEnv, time.Now())
}

func fromEnv(lookup func(string) (string, bool), start time.Time) (func() time.Time, error) {
	v, ok := lookup(Env)
	if !ok || v == "" {
		return time.Now, nil
	}
	fake, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return nil, fmt.Errorf("%s=%q: want an RFC 3339 instant such as 2029-07-15T10:00:00Z", Env, v)
	}
	at := start
	if v, ok := lookup(EnvAt); ok && v != "" {
		if at, err = time.Parse(time.RFC3339Nano, v); err != nil {
			return nil, fmt.Errorf("%s=%q: want an RFC 3339 instant", EnvAt, v)
		}
	}
	return Offset(fake, at), nil
}

// Pin sets MAUMETER_FAKE_NOW_AT to the real now when MAUMETER_FAKE_NOW is set without it, so
// that the processes this one starts afterwards (which inherit its environment) read the same
// clock as it, whenever they start, and it returns that clock. A test harness that starts
// maumeter processes calls it before anything else.
func Pin() (func() time.Time, error) {
	if v, ok := os.LookupEnv(Env); ok && v != "" {
		if at, ok := os.LookupEnv(EnvAt); !ok || at == "" {
			if err := os.Setenv(EnvAt, time.Now().Format(time.RFC3339Nano)); err != nil {
				return nil, err
			}
		}
	}
	return FromEnv()
}

// ForTest is FromEnv for a test: an invalid variable fails it.
func ForTest(tb interface {
	Helper()
	Fatal(args ...any)
}) func() time.Time {
	tb.Helper()
	now, err := FromEnv()
	if err != nil {
		tb.Fatal(err)
	}
	return now
}
