package event

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// now is the receiving clock of the tests: DefaultBounds admit ts in
// [2026-08-29T12:00:00Z, 2026-10-03T12:10:00Z].
var now = time.Date(2026, 10, 3, 12, 0, 0, 0, time.UTC)

// absent, as a value for ev, leaves the field out.
const absent = "\x00absent"

// baseFields is a valid open event, as key and raw JSON value pairs.
var baseFields = []string{
	"event_id", `"e-1"`,
	"tenant_id", `"acme"`,
	"app_id", `"acme-super"`,
	"guid", `"guid-1"`,
	"event", `"open"`,
	"mini_program_id", `"mp-42"`,
	"ts", `"2026-10-03T19:59:00.123+08:00"`,
}

// ev returns the JSON of the base event with fields replaced by raw JSON values (key, value
// pairs). A value of absent leaves the field out; a key the base lacks is appended.
func ev(kv ...string) string {
	fields := append([]string(nil), baseFields...)
	for i := 0; i < len(kv); i += 2 {
		found := false
		for j := 0; j < len(fields); j += 2 {
			if fields[j] == kv[i] {
				fields[j+1], found = kv[i+1], true
			}
		}
		if !found {
			fields = append(fields, kv[i], kv[i+1])
		}
	}
	var b strings.Builder
	b.WriteByte('{')
	for i := 0; i < len(fields); i += 2 {
		if fields[i+1] == absent {
			continue
		}
		if b.Len() > 1 {
			b.WriteByte(',')
		}
		b.WriteString(q(fields[i]) + ":" + fields[i+1])
	}
	b.WriteByte('}')
	return b.String()
}

// q quotes s as a JSON string. s must be valid UTF-8.
func q(s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func TestParseReasons(t *testing.T) {
	// f parses in under DefaultBounds; wantReason "" means in must be accepted.
	f := func(in string, wantReason Reason, wantField string) {
		t.Helper()
		e, r := Parse([]byte(in), now, DefaultBounds)
		if wantReason == "" {
			if r != nil {
				t.Errorf("Parse(%s)\ngot  rejected %s (%s): %s\nwant accepted", in, r.Reason, r.Field, r.Message)
			} else if !e.Type.Valid() || !ValidID(e.TenantID) || !ValidID(e.AppID) || e.GUID == "" || e.TS.IsZero() {
				t.Errorf("Parse(%s)\ngot  accepted %+v, not a valid event", in, e)
			}
			return
		}
		if r == nil {
			t.Errorf("Parse(%s)\ngot  accepted %+v\nwant rejected %s (%s)", in, e, wantReason, wantField)
			return
		}
		if r.Reason != wantReason || r.Field != wantField {
			t.Errorf("Parse(%s)\ngot  rejected %s (%s): %s\nwant rejected %s (%s)", in, r.Reason, r.Field, r.Message, wantReason, wantField)
		}
		if r.Message == "" || r.Index != 0 {
			t.Errorf("Parse(%s): rejection %+v needs a message and index 0", in, *r)
		}
		if e != (Event{}) {
			t.Errorf("Parse(%s): rejected, but returned event %+v, want the zero Event", in, e)
		}
	}

	// Accepted: each event type, with and without the optional fields.
	f(ev(), "", "")
	f(ev("event", `"search"`), "", "")
	f(ev("event", `"pre_download"`), "", "")
	f(ev("event", `"search"`, "mini_program_id", absent), "", "")
	f(ev("event", `"search"`, "mini_program_id", `""`), "", "")
	f(ev("event", `"search"`, "mini_program_id", `null`), "", "")
	f(ev("event_id", absent), "", "")
	f(ev("event_id", `""`), "", "")
	f(ev("event_id", `null`), "", "")
	f(" \t\r\n"+ev()+"\r\n ", "", "")

	// Not a JSON object.
	f(``, ReasonBadJSON, "")
	f(" \n\t", ReasonBadJSON, "")
	f(`[]`, ReasonBadJSON, "")
	f(`[`+ev()+`]`, ReasonBadJSON, "")
	f(`42`, ReasonBadJSON, "")
	f(`-1e999`, ReasonBadJSON, "")
	f(`"open"`, ReasonBadJSON, "")
	f(`null`, ReasonBadJSON, "")
	f(`true`, ReasonBadJSON, "")
	f("\ufeff"+ev(), ReasonBadJSON, "") // a byte-order mark is not JSON
	// Broken objects.
	f(`{`, ReasonBadJSON, "")
	f(ev()[:len(ev())/2], ReasonBadJSON, "")
	f(ev()+`x`, ReasonBadJSON, "")
	f(ev()+ev(), ReasonBadJSON, "")
	f(`{"tenant_id":"acme",}`, ReasonBadJSON, "")
	f(`{'tenant_id':'acme'}`, ReasonBadJSON, "")
	f(ev("guid", "\"guid\x01\""), ReasonBadJSON, "") // raw control character in a string
	f(ev("guid", `"guid\x"`), ReasonBadJSON, "")     // bad escape

	// Invalid UTF-8 anywhere, even in an unknown field, fails the event.
	f(ev("guid", "\"g\xffuid\""), ReasonBadJSON, "")
	f(ev("tenant_id", "\"ac\xc3me\""), ReasonBadJSON, "")
	f(ev("sdk", "\"v\xed\xa0\x80\""), ReasonBadJSON, "") // encoded surrogate
	f("{\"x\xfe\":1,"+ev()[1:], ReasonBadJSON, "")

	// Required fields: absent, null and empty are all missing.
	for _, field := range []string{"tenant_id", "app_id", "guid", "event", "ts"} {
		f(ev(field, absent), ReasonMissingField, field)
		f(ev(field, `null`), ReasonMissingField, field)
		f(ev(field, `""`), ReasonMissingField, field)
	}
	f(`{}`, ReasonMissingField, "tenant_id")
	for _, typ := range []string{`"open"`, `"pre_download"`} {
		f(ev("event", typ, "mini_program_id", absent), ReasonMissingField, "mini_program_id")
		f(ev("event", typ, "mini_program_id", `null`), ReasonMissingField, "mini_program_id")
		f(ev("event", typ, "mini_program_id", `""`), ReasonMissingField, "mini_program_id")
	}

	// Wrong JSON types for each string field; null is absent, so only a required field misses it.
	for _, field := range []string{"event_id", "tenant_id", "app_id", "guid", "event", "mini_program_id", "ts"} {
		for _, v := range []string{`42`, `-1.5e300`, `1e999`, `true`, `false`, `{}`, `{"s":"x"}`, `[]`, `["x"]`} {
			f(ev(field, v), ReasonBadField, field)
		}
	}

	// event.
	f(ev("event", `"click"`), ReasonBadEventType, "event")
	f(ev("event", `"Open"`), ReasonBadEventType, "event")
	f(ev("event", `"open "`), ReasonBadEventType, "event")
	f(ev("event", `"predownload"`), ReasonBadEventType, "event")
	f(ev("event", `"pre-download"`), ReasonBadEventType, "event")
	f(ev("event", q(strings.Repeat("x", 10000))), ReasonBadEventType, "event")

	// tenant_id and app_id: 1–64 of [A-Za-z0-9._-].
	for _, field := range []string{"tenant_id", "app_id"} {
		f(ev(field, `"a"`), "", "")
		f(ev(field, `"AZaz09._-"`), "", "")
		f(ev(field, q(strings.Repeat("x", 64))), "", "")
		f(ev(field, q(strings.Repeat("x", 65))), ReasonBadField, field)
		for _, bad := range []string{"a b", "a/b", "a:b", "a@b", "a+b", "a~b", "é", `a\u0000b`, `a\nb`, `a\"b`, `\ud800`} {
			f(ev(field, `"`+bad+`"`), ReasonBadField, field)
		}
	}

	// guid: 1–128 printable ASCII.
	f(ev("guid", `"x"`), "", "")
	f(ev("guid", q(strings.Repeat("g", 128))), "", "")
	f(ev("guid", q(strings.Repeat("g", 129))), ReasonBadField, "guid")
	f(ev("guid", q(" !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")), "", "") // every printable punctuation
	f(ev("guid", `"\u0041\/"`), "", "")                             // escapes that decode to printable ASCII
	for _, bad := range []string{`\u0000`, `\u001f`, `\u007f`, "\x7f", `\t`, `\n`, `\r`, "é", "设备", `\u00e9`, `\ud800`, `\ud83d\ude00`} {
		f(ev("guid", `"g`+bad+`"`), ReasonBadField, "guid")
	}

	// mini_program_id: 1–128 printable ASCII when given, for every type.
	for _, typ := range []string{`"search"`, `"pre_download"`, `"open"`} {
		f(ev("event", typ, "mini_program_id", q(strings.Repeat("m", 128))), "", "")
		f(ev("event", typ, "mini_program_id", q(strings.Repeat("m", 129))), ReasonBadField, "mini_program_id")
		f(ev("event", typ, "mini_program_id", `"mp\u0001"`), ReasonBadField, "mini_program_id")
		f(ev("event", typ, "mini_program_id", `42`), ReasonBadField, "mini_program_id")
	}

	// event_id: optional, at most 64 printable ASCII.
	f(ev("event_id", q(strings.Repeat("e", 64))), "", "")
	f(ev("event_id", q(strings.Repeat("e", 65))), ReasonBadField, "event_id")
	f(ev("event_id", q("0b0e6a1c-8f1e-4e4e-9d7e-3c2b1a0f9e8d")), "", "")
	f(ev("event_id", `"e\u007f"`), ReasonBadField, "event_id")
	f(ev("event_id", `"é"`), ReasonBadField, "event_id")

	// ts: RFC 3339 with an offset that the wire encoding can carry.
	for _, ts := range []string{
		"2026-10-03T12:00:00Z",
		"2026-10-03T12:00:00+00:00",
		"2026-10-03T20:00:00+08:00",
		"2026-10-03T06:30:00-05:30",
		"2026-10-04T02:00:00+14:00",
		"2026-10-03T00:00:00-12:00",
		"2026-10-04T06:00:00+18:00",
		"2026-10-02T18:00:00-18:00",
		"2026-10-03T12:00:00.1Z",
		"2026-10-03T12:00:00.123456789Z",
		"2026-10-03T20:00:00.000000001+08:00",
	} {
		f(ev("ts", q(ts)), "", "")
	}
	for _, ts := range []string{
		"2026-10-03T12:00:00",        // no offset
		"2026-10-03T12:00:00.123",    // no offset
		"2026-10-03 12:00:00Z",       // space for T
		"2026-10-03T12:00:00+0800",   // offset without colon
		"2026-10-03T12:00:00+08",     // offset without minutes
		"2026-10-03T12:00:00 +08:00", // space before offset
		"2026-10-03",
		"12:00:00Z",
		"2026-10-03T12:00Z",
		"2026-10-03T24:00:00Z",
		"2026-13-03T12:00:00Z",
		"2026-02-30T12:00:00Z",
		"2026-10-03T12:00:60Z",
		"2026-10-03T12:00:00.Z",
		"2026-10-03T12:00:00Z ",
		"1759492800",
		"Sat, 03 Oct 2026 12:00:00 GMT",
		"2026-10-04T07:00:00+19:00", // beyond the ±18:00 the wire carries
		"2026-10-03T12:00:00-23:59",
	} {
		f(ev("ts", q(ts)), ReasonBadField, "ts")
	}
	f(ev("ts", `1759492800`), ReasonBadField, "ts")
	f(ev("ts", `"2026-08-29T11:59:59Z"`), ReasonTSTooOld, "ts")
	f(ev("ts", `"2026-10-03T12:10:01Z"`), ReasonTSInFuture, "ts")

	// Unknown fields are ignored, whatever their type; nesting does not confuse the decoder.
	f(ev("sdk", `"maumeter-js/1.2"`, "extra", `{"tenant_id":42,"event":["x"]}`, "n", `1e999`, "nil", `null`), "", "")

	// The first problem wins, in field order; a type error beats everything but bad JSON.
	f(ev("tenant_id", absent, "guid", `"g\u0001"`), ReasonMissingField, "tenant_id")
	f(ev("guid", `"g\u0001"`, "event", `"click"`), ReasonBadField, "guid")
	f(ev("event", `"click"`, "ts", `"yesterday"`), ReasonBadEventType, "event")
	f(ev("tenant_id", absent, "ts", `42`), ReasonBadField, "ts")
	f(ev("ts", `42`)+"}", ReasonBadJSON, "")
}

// TestParseEvent checks what accepted events hold.
func TestParseEvent(t *testing.T) {
	f := func(in string, want Event) {
		t.Helper()
		got, r := Parse([]byte(in), now, DefaultBounds)
		if r != nil {
			t.Errorf("Parse(%s)\ngot  rejected %s (%s): %s\nwant %+v", in, r.Reason, r.Field, r.Message, want)
			return
		}
		if d := diffEvent(got, want); d != "" {
			t.Errorf("Parse(%s): %s", in, d)
		}
	}
	cst := time.FixedZone("", 8*3600)
	f(ev(), Event{
		EventID: "e-1", TenantID: "acme", AppID: "acme-super", GUID: "guid-1", Type: Open,
		MiniProgramID: "mp-42", TS: time.Date(2026, 10, 3, 19, 59, 0, 123e6, cst),
	})
	f(ev("event_id", absent, "event", `"search"`, "mini_program_id", absent, "ts", `"2026-10-03T12:00:00Z"`), Event{
		TenantID: "acme", AppID: "acme-super", GUID: "guid-1", Type: Search, TS: now,
	})
	f(ev("event", `"search"`, "mini_program_id", `""`, "event_id", `""`), Event{
		TenantID: "acme", AppID: "acme-super", GUID: "guid-1", Type: Search, TS: time.Date(2026, 10, 3, 19, 59, 0, 123e6, cst),
	})
	f(ev("event", `"search"`, "mini_program_id", `"mp-1"`), Event{
		EventID: "e-1", TenantID: "acme", AppID: "acme-super", GUID: "guid-1", Type: Search,
		MiniProgramID: "mp-1", TS: time.Date(2026, 10, 3, 19, 59, 0, 123e6, cst),
	})
	f(ev("event", `"pre_download"`, "guid", `"\u0041 \"\\/"`, "ts", `"2026-10-03T06:15:00.000000001-05:45"`), Event{
		EventID: "e-1", TenantID: "acme", AppID: "acme-super", GUID: `A "\/`, Type: PreDownload,
		MiniProgramID: "mp-42", TS: time.Date(2026, 10, 3, 6, 15, 0, 1, time.FixedZone("", -(5*3600+45*60))),
	})
	// Keys are matched as encoding/json does: a later duplicate wins.
	dup := ev("guid", `"first"`)
	f(dup[:len(dup)-1]+`,"guid":"second"}`, Event{
		EventID: "e-1", TenantID: "acme", AppID: "acme-super", GUID: "second", Type: Open,
		MiniProgramID: "mp-42", TS: time.Date(2026, 10, 3, 19, 59, 0, 123e6, cst),
	})
}

// TestParseBounds checks the time bounds at their edges, whatever the offset ts is written in.
func TestParseBounds(t *testing.T) {
	f := func(b Bounds, ts string, wantReason Reason) {
		t.Helper()
		e, r := Parse([]byte(ev("ts", q(ts))), now, b)
		switch {
		case wantReason == "" && r != nil:
			t.Errorf("Parse(ts=%s, %+v)\ngot  rejected %s (%s): %s\nwant accepted", ts, b, r.Reason, r.Field, r.Message)
		case wantReason == "" && e.TS.Format(time.RFC3339Nano) != ts:
			t.Errorf("Parse(ts=%s, %+v)\ngot  ts %s\nwant ts %s", ts, b, e.TS.Format(time.RFC3339Nano), ts)
		case wantReason != "" && r == nil:
			t.Errorf("Parse(ts=%s, %+v)\ngot  accepted\nwant rejected %s (ts)", ts, b, wantReason)
		case wantReason != "" && (r.Reason != wantReason || r.Field != "ts"):
			t.Errorf("Parse(ts=%s, %+v)\ngot  rejected %s (%s): %s\nwant rejected %s (ts)", ts, b, r.Reason, r.Field, r.Message, wantReason)
		}
	}
	d := DefaultBounds
	if d.MaxAge != 35*24*time.Hour || d.MaxFuture != 10*time.Minute {
		t.Fatalf("DefaultBounds = %+v, want the contract's 35 days and 10 minutes", d)
	}
	// now − 35 days is 2026-08-29T12:00:00Z; now + 10 minutes is 2026-10-03T12:10:00Z.
	f(d, "2026-08-29T12:00:00Z", "")
	f(d, "2026-08-29T20:00:00+08:00", "")
	f(d, "2026-08-29T11:59:59.999999999Z", ReasonTSTooOld)
	f(d, "2026-08-29T06:29:59.999999999-05:30", ReasonTSTooOld)
	f(d, "2025-10-03T12:00:00Z", ReasonTSTooOld)
	f(d, "1970-01-01T00:00:00Z", ReasonTSTooOld)
	f(d, "2026-10-03T12:10:00Z", "")
	f(d, "2026-10-04T06:10:00+18:00", "")
	f(d, "2026-10-03T12:10:00.000000001Z", ReasonTSInFuture)
	f(d, "2026-10-03T20:10:00.000000001+08:00", ReasonTSInFuture)
	f(d, "2027-10-03T12:00:00Z", ReasonTSInFuture)
	f(d, "2026-10-03T12:00:00Z", "")

	// A zero bound is no bound: the admin import path takes historical events.
	f(Bounds{}, "2026-08-29T11:59:59.999999999Z", "")
	f(Bounds{}, "2026-10-03T12:10:00.000000001Z", "")
	f(Bounds{}, "1970-01-01T00:00:00Z", "")
	f(Bounds{}, "1969-12-31T23:59:59.999999999Z", "")
	f(Bounds{}, "2200-01-01T00:00:00Z", "")
	f(Bounds{MaxAge: d.MaxAge}, "2026-08-29T11:59:59.999999999Z", ReasonTSTooOld)
	f(Bounds{MaxAge: d.MaxAge}, "2200-01-01T00:00:00Z", "")
	f(Bounds{MaxFuture: d.MaxFuture}, "2026-10-03T12:10:00.000000001Z", ReasonTSInFuture)
	f(Bounds{MaxFuture: d.MaxFuture}, "1970-01-01T00:00:00Z", "")
	f(Bounds{MaxAge: time.Nanosecond, MaxFuture: time.Nanosecond}, "2026-10-03T12:00:00.000000001Z", "")
	f(Bounds{MaxAge: time.Nanosecond, MaxFuture: time.Nanosecond}, "2026-10-03T12:00:00.000000002Z", ReasonTSInFuture)
	f(Bounds{MaxAge: time.Nanosecond, MaxFuture: time.Nanosecond}, "2026-10-03T11:59:59.999999998Z", ReasonTSTooOld)

	// Even unbounded, ts must fit the wire's int64 nanoseconds since the epoch.
	f(Bounds{}, "1677-09-21T00:12:43.145224192Z", "")
	f(Bounds{}, "1677-09-21T00:12:43.145224191Z", ReasonBadField)
	f(Bounds{}, "2262-04-11T23:47:16.854775807Z", "")
	f(Bounds{}, "2262-04-11T23:47:16.854775808Z", ReasonBadField)
	f(Bounds{}, "0001-01-01T00:00:00Z", ReasonBadField)
	f(Bounds{}, "9999-12-31T23:59:59Z", ReasonBadField)
	f(d, "9999-12-31T23:59:59Z", ReasonBadField)
}

func TestRejectionError(t *testing.T) {
	f := func(r Rejection, want string) {
		t.Helper()
		if got := r.Error(); got != want {
			t.Errorf("Rejection%+v.Error()\ngot  %q\nwant %q", r, got, want)
		}
	}
	f(Rejection{Index: 3, Reason: ReasonBadField, Field: "guid", Message: "too long"}, "event 3: bad_field (guid): too long")
	f(Rejection{Index: 0, Reason: ReasonBadJSON, Message: "event must be a JSON object"}, "event 0: bad_json: event must be a JSON object")

	b, err := json.Marshal(Rejection{Index: 7, Reason: ReasonBadJSON, Message: "m"})
	if got, want := string(b), `{"index":7,"reason":"bad_json","message":"m"}`; err != nil || got != want {
		t.Errorf("json.Marshal(Rejection)\ngot  %s, %v\nwant %s", got, err, want)
	}
}

func TestValidID(t *testing.T) {
	f := func(s string, want bool) {
		t.Helper()
		if got := ValidID(s); got != want {
			t.Errorf("ValidID(%q) = %v, want %v", s, got, want)
		}
	}
	f("", false)
	f("a", true)
	f("acme-super", true)
	f("A.b_c-0.9", true)
	f("...", true)
	f(strings.Repeat("x", 64), true)
	f(strings.Repeat("x", 65), false)
	for _, c := range " /:@+~\x00\x7f\"'\\\té" {
		f("a"+string(c)+"b", false)
	}
	f("a\xffb", false)
}
