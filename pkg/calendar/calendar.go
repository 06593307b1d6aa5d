// Package calendar is the billing calendar: which calendar month an instant belongs to in a
// tenant's billing time zone, and where months begin and end. It does no I/O.
package calendar

import (
	"errors"
	"fmt"
	"time"
)

// ErrBadMonth is returned by ParseMonth for anything but YYYY-MM.
var ErrBadMonth = errors.New("month must be YYYY-MM")

// Month is a calendar month. The zero value is not a valid month.
type Month struct {
	Year  int
	Month time.Month
}

// MonthOf returns the calendar month that t falls in, in loc.
func MonthOf(t time.Time, loc *time.Location) Month {
	y, m, _ := t.In(loc).Date()
	return Month{y, m}
}

// ParseMonth parses YYYY-MM.
func ParseMonth(s string) (Month, error) {
	t, err := time.Parse("2006-01", s)
	if err != nil || len(s) != 7 {
		return Month{}, fmt.Errorf("%w: %q", ErrBadMonth, s)
	}
	return Month{t.Year(), t.Month()}, nil
}

// String formats m as YYYY-MM, the form used in the API and in ClickHouse.
func (m Month) String() string {
	if m.Year < 0 || m.Year > 9999 {
		return fmt.Sprintf("%04d-%02d", m.Year, int(m.Month))
	}
	// The counter formats a month per event: no fmt on this path.
	y, mo := m.Year, int(m.Month)
	return string([]byte{byte('0' + y/1000), byte('0' + y/100%10), byte('0' + y/10%10), byte('0' + y%10), '-',
		byte('0' + mo/10), byte('0' + mo%10)})
}

// IsZero reports whether m is the zero Month.
func (m Month) IsZero() bool { return m.Year == 0 && m.Month == 0 }

// Start is the first instant of m in loc.
func (m Month) Start(loc *time.Location) time.Time {
	return time.Date(m.Year, m.Month, 1, 0, 0, 0, 0, loc)
}

// End is the first instant after m in loc (the start of the next month).
func (m Month) End(loc *time.Location) time.Time { return m.Next().Start(loc) }

// Next is the month after m.
func (m Month) Next() Month {
	if m.Month == time.December {
		return Month{m.Year + 1, time.January}
	}
	return Month{m.Year, m.Month + 1}
}

// Prev is the month before m.
func (m Month) Prev() Month {
	if m.Month == time.January {
		return Month{m.Year - 1, time.December}
	}
	return Month{m.Year, m.Month - 1}
}

// Before reports whether m is earlier than o.
func (m Month) Before(o Month) bool {
	return m.Year < o.Year || m.Year == o.Year && m.Month < o.Month
}
