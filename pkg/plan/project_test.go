package plan

import (
	"maps"
	"testing"
	"time"

	"github.com/maumeter/maumeter/pkg/calendar"
)

func TestHorizon(t *testing.T) {
	zone := func(name string) *time.Location {
		t.Helper()
		loc, err := time.LoadLocation(name)
		if err != nil {
			t.Fatal(err)
		}
		return loc
	}
	utc, ny, berlin, shanghai := time.UTC, zone("America/New_York"), zone("Europe/Berlin"), zone("Asia/Shanghai")
	at := func(s string) time.Time {
		t.Helper()
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	type carry struct{ mau, recent, want uint64 }
	f := func(name string, now time.Time, loc *time.Location, month string, maxDays int,
		wantOK bool, wantDays int, wantFrom, wantTo, wantAhead string, carries ...carry) {
		t.Helper()
		m, err := calendar.ParseMonth(month)
		if err != nil {
			t.Fatal(err)
		}
		h, ok := NewHorizon(now, loc, m, maxDays)
		if ok != wantOK {
			t.Fatalf("%s: ok %v, want %v (%+v)", name, ok, wantOK, h)
		}
		if !ok {
			return
		}
		if h.HistoryDays != wantDays || !h.From.Equal(at(wantFrom)) || !h.To.Equal(at(wantTo)) || h.Ahead.RatString() != wantAhead {
			t.Errorf("%s: %d days [%s, %s) ahead %s, want %d days [%s, %s) ahead %s", name,
				h.HistoryDays, h.From.UTC().Format(time.RFC3339), h.To.UTC().Format(time.RFC3339), h.Ahead.RatString(),
				wantDays, wantFrom, wantTo, wantAhead)
		}
		for _, c := range carries {
			if got := h.Carry(c.mau, c.recent); got != c.want {
				t.Errorf("%s: Carry(%d, %d) = %d, want %d", name, c.mau, c.recent, got, c.want)
			}
		}
	}
	// Mid-month: 7 days back, 15 days and half of today ahead: 70 new in 7 days → +155.
	f("day 15 noon", at("2026-11-15T12:00:00Z"), utc, "2026-11", 7, true, 7,
		"2026-11-08T00:00:00Z", "2026-11-15T00:00:00Z", "31/2",
		carry{1000, 70, 1155}, carry{1000, 0, 1000}, carry{0, 7, 16}) // 15.5 rounds half-up
	f("day 15, 3 days asked", at("2026-11-15T12:00:00Z"), utc, "2026-11", 3, true, 3,
		"2026-11-12T00:00:00Z", "2026-11-15T00:00:00Z", "31/2", carry{1000, 30, 1155})
	// Early in the month: the two complete days there are.
	f("day 3", at("2026-11-03T06:00:00Z"), utc, "2026-11", 7, true, 2,
		"2026-11-01T00:00:00Z", "2026-11-03T00:00:00Z", "111/4", carry{100, 10, 239}) // 138.75
	f("day 2 at midnight", at("2026-11-02T00:00:00Z"), utc, "2026-11", 7, true, 1,
		"2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z", "29", carry{5, 2, 63})
	// Day 1 has no complete day: no projection.
	f("day 1", at("2026-11-01T23:59:59Z"), utc, "2026-11", 7, false, 0, "", "", "")
	// 16:30Z on Oct 31 is Nov 1 in Shanghai: day 1 of November there, and October is over.
	f("day 1 in the zone", at("2026-10-31T16:30:00Z"), shanghai, "2026-11", 7, false, 0, "", "", "")
	f("closed in the zone", at("2026-10-31T16:30:00Z"), shanghai, "2026-10", 7, false, 0, "", "", "")
	f("closed month", at("2026-12-02T00:00:00Z"), utc, "2026-11", 7, false, 0, "", "", "")
	f("future month", at("2026-11-20T00:00:00Z"), utc, "2026-12", 7, false, 0, "", "", "")
	// Last day: only the rest of today is ahead; 0.25 device rounds to none, 0.5 to one.
	f("last day", at("2026-11-30T18:00:00Z"), utc, "2026-11", 7, true, 7,
		"2026-11-23T00:00:00Z", "2026-11-30T00:00:00Z", "1/4", carry{1000, 7, 1000}, carry{1000, 14, 1001})
	f("last instant", at("2026-11-30T23:59:59Z"), utc, "2026-11", 7, true, 7,
		"2026-11-23T00:00:00Z", "2026-11-30T00:00:00Z", "1/86400", carry{1000, 7_000_000, 1012})
	// DST starts on Sunday March 8 2026 in New York: a 23-hour day. At 12:00 EDT, 11 hours of it
	// have passed and 12 are left: 12/23 of it, plus the 23 days after. The 7 days before start
	// at midnight EST.
	f("DST start, New York", at("2026-03-08T16:00:00Z"), ny, "2026-03", 7, true, 7,
		"2026-03-01T05:00:00Z", "2026-03-08T05:00:00Z", "541/23", carry{0, 161, 541})
	// The day after: history spans the short day, whole days in the zone.
	f("after DST start, New York", at("2026-03-09T04:00:00Z"), ny, "2026-03", 7, true, 7,
		"2026-03-02T05:00:00Z", "2026-03-09T04:00:00Z", "23")
	// DST ends on October 25 2026 in Berlin: a 25-hour day. 12:00 CET leaves 12 of its 25 hours.
	f("DST end, Berlin", at("2026-10-25T11:00:00Z"), berlin, "2026-10", 7, true, 7,
		"2026-10-17T22:00:00Z", "2026-10-24T22:00:00Z", "162/25", carry{100, 175, 262}) // 162
	// Saturation, not wrap.
	f("huge", at("2026-11-15T12:00:00Z"), utc, "2026-11", 7, true, 7,
		"2026-11-08T00:00:00Z", "2026-11-15T00:00:00Z", "31/2", carry{^uint64(0) - 1, 7, ^uint64(0)})
}

func TestHorizonProject(t *testing.T) {
	m := calendar.Month{Year: 2026, Month: time.November}
	h, ok := NewHorizon(time.Date(2026, 11, 15, 12, 0, 0, 0, time.UTC), time.UTC, m, ProjectionDays)
	if !ok {
		t.Fatal("no horizon")
	}
	u := Usage{Month: m, MAUByApp: map[string]uint64{"a": 1000, "qa": 10, "quiet": 5}, MiniPrograms: 3}
	got := h.Project(u, map[string]uint64{"a": 70, "qa": 7, "stray": 14})
	// a: +70×15.5/7 = 155; qa: +15.5 → 16; quiet: no new devices; stray: +31.
	want := map[string]uint64{"a": 1155, "qa": 26, "quiet": 5, "stray": 31}
	if !maps.Equal(got.MAUByApp, want) || got.Month != m || got.MiniPrograms != 3 {
		t.Errorf("Project = %+v, want %v", got, want)
	}
	if u.MAUByApp["a"] != 1000 {
		t.Errorf("Project changed its input: %v", u.MAUByApp)
	}
}
