package calendar

import (
	"testing"
	"time"
)

func TestMonthOf(t *testing.T) {
	shanghai, _ := time.LoadLocation("Asia/Shanghai")
	newYork, _ := time.LoadLocation("America/New_York")
	f := func(instant string, loc *time.Location, want string) {
		t.Helper()
		ts, err := time.Parse(time.RFC3339Nano, instant)
		if err != nil {
			t.Fatal(err)
		}
		if got := MonthOf(ts, loc).String(); got != want {
			t.Errorf("MonthOf(%s, %s) = %s, want %s", instant, loc, got, want)
		}
	}
	f("2026-10-31T23:59:59.999Z", time.UTC, "2026-10")
	f("2026-11-01T00:00:00Z", time.UTC, "2026-11")
	// 16:00Z on the 31st is already November in Shanghai (+08:00)...
	f("2026-10-31T16:00:00Z", shanghai, "2026-11")
	f("2026-10-31T15:59:59.999999999Z", shanghai, "2026-10")
	// ...and still October in New York (-04:00 until the DST change on 2026-11-01).
	f("2026-11-01T03:59:59Z", newYork, "2026-10")
	f("2026-11-01T04:00:00Z", newYork, "2026-11")
	// New York is on EST (-05:00) at the end of November.
	f("2026-12-01T04:59:59Z", newYork, "2026-11")
	f("2026-12-01T05:00:00Z", newYork, "2026-12")
	// The offset the SDK sent does not matter, only the instant.
	f("2027-01-01T07:59:59+08:00", time.UTC, "2026-12")
	f("2027-01-01T00:00:00+00:00", time.UTC, "2027-01")
}

func TestMonthArithmetic(t *testing.T) {
	m, err := ParseMonth("2026-12")
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Next().String(); got != "2027-01" {
		t.Errorf("Next = %s, want 2027-01", got)
	}
	if got := m.Next().Prev(); got != m {
		t.Errorf("Next().Prev() = %v, want %v", got, m)
	}
	if got, want := m.End(time.UTC), time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC); !got.Equal(want) {
		t.Errorf("End = %s, want %s", got, want)
	}
	if !m.Before(m.Next()) || m.Next().Before(m) || m.Before(m) {
		t.Error("Before is not a strict order")
	}
	for _, bad := range []string{"", "2026-13", "2026-1", "26-01", "2026-01-01", "2026/01"} {
		if _, err := ParseMonth(bad); err == nil {
			t.Errorf("ParseMonth(%q) accepted", bad)
		}
	}
}

func TestMonthString(t *testing.T) {
	f := func(m Month, want string) {
		t.Helper()
		if got := m.String(); got != want {
			t.Errorf("%#v.String() = %q, want %q", m, got, want)
		}
	}
	f(Month{2026, time.October}, "2026-10")
	f(Month{2027, time.January}, "2027-01")
	f(Month{999, time.December}, "0999-12")
	f(Month{12345, time.March}, "12345-03")
}
