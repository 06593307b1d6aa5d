package event

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// diffEvent says how got differs from want, or returns "" when they are the same event: every
// field equal, ts the same instant in the same UTC offset. (== on Event would compare
// *time.Location pointers, which differ between Parse and Decode.)
func diffEvent(got, want Event) string {
	var d []string
	cmp := func(name, g, w string) {
		if g != w {
			d = append(d, fmt.Sprintf("%s: got %q, want %q", name, g, w))
		}
	}
	cmp("event_id", got.EventID, want.EventID)
	cmp("tenant_id", got.TenantID, want.TenantID)
	cmp("app_id", got.AppID, want.AppID)
	cmp("guid", got.GUID, want.GUID)
	cmp("mini_program_id", got.MiniProgramID, want.MiniProgramID)
	if got.Type != want.Type {
		d = append(d, fmt.Sprintf("event: got %s, want %s", got.Type, want.Type))
	}
	_, gotOff := got.TS.Zone()
	_, wantOff := want.TS.Zone()
	if !got.TS.Equal(want.TS) || gotOff != wantOff {
		d = append(d, fmt.Sprintf("ts: got %s (offset %ds), want %s (offset %ds)",
			got.TS.Format(time.RFC3339Nano), gotOff, want.TS.Format(time.RFC3339Nano), wantOff))
	}
	return strings.Join(d, "; ")
}

func encode(t testing.TB, e Event) []byte {
	t.Helper()
	b, err := e.AppendBinary(nil)
	if err != nil {
		t.Fatalf("AppendBinary(%+v): %v", e, err)
	}
	return b
}

func TestWireRoundTrip(t *testing.T) {
	f := func(b Bounds, in string) {
		t.Helper()
		e, r := Parse([]byte(in), now, b)
		if r != nil {
			t.Fatalf("Parse(%s): %v", in, r)
		}
		got, err := Decode(encode(t, e))
		if err != nil {
			t.Errorf("Decode(AppendBinary(Parse(%s))): %v", in, err)
			return
		}
		if d := diffEvent(got, e); d != "" {
			t.Errorf("Decode(AppendBinary(Parse(%s))): %s", in, d)
		}
	}
	d := DefaultBounds
	f(d, ev())
	f(d, ev("event", `"search"`, "mini_program_id", absent, "event_id", absent))
	f(d, ev("event", `"search"`, "mini_program_id", `"mp-1"`))
	f(d, ev("event", `"pre_download"`))
	f(d, ev("guid", q(strings.Repeat("~", 128)), "mini_program_id", q(strings.Repeat(" ", 128)), "event_id", q(strings.Repeat("e", 64))))
	for _, ts := range []string{
		"2026-10-03T12:00:00Z",
		"2026-10-03T12:00:00+00:00",
		"2026-10-03T12:00:00.000000001Z",
		"2026-10-03T12:00:00.999999999Z",
		"2026-10-03T20:00:00.123+08:00",
		"2026-10-03T06:30:00-05:30",
		"2026-10-03T17:45:00+05:45",
		"2026-10-04T02:00:00+14:00",
		"2026-10-03T00:00:00-12:00",
		"2026-10-04T06:00:00+18:00",
		"2026-10-02T18:00:00-18:00",
	} {
		f(d, ev("ts", q(ts)))
	}
	for _, ts := range []string{
		"1970-01-01T00:00:00Z",
		"1970-01-01T08:00:00+08:00",
		"1969-12-31T23:59:59.999999999Z",
		"1900-01-01T00:00:00-03:00",
		"1677-09-21T00:12:43.145224192Z",
		"2262-04-11T23:47:16.854775807Z",
	} {
		f(Bounds{}, ev("ts", q(ts)))
	}
}

// TestWireFormat pins the encoding to the field numbers and types of
// schemas/events/v1/event.proto, written out here independently of wire.go.
func TestWireFormat(t *testing.T) {
	f := func(e Event, want []byte) {
		t.Helper()
		got := encode(t, e)
		if !bytes.Equal(got, want) {
			t.Errorf("AppendBinary(%+v)\ngot  %x\nwant %x", e, got, want)
		}
		dec, err := Decode(want)
		if err != nil {
			t.Errorf("Decode(%x): %v", want, err)
		} else if d := diffEvent(dec, e); d != "" {
			t.Errorf("Decode(%x): %s", want, d)
		}
	}
	str := func(b []byte, num protowire.Number, s string) []byte {
		return protowire.AppendString(protowire.AppendTag(b, num, protowire.BytesType), s)
	}
	varint := func(b []byte, num protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(protowire.AppendTag(b, num, protowire.VarintType), v)
	}
	ts := time.Date(2026, 10, 3, 20, 0, 0, 123, time.FixedZone("CST", 8*3600))

	var w []byte
	w = str(w, 1, "e-1")
	w = str(w, 2, "acme")
	w = str(w, 3, "acme-super")
	w = str(w, 4, "guid-1")
	w = varint(w, 5, 3) // EVENT_TYPE_OPEN
	w = str(w, 6, "mp-42")
	w = varint(w, 7, uint64(ts.UnixNano()))
	w = varint(w, 8, protowire.EncodeZigZag(8*3600)) // sint32
	f(Event{EventID: "e-1", TenantID: "acme", AppID: "acme-super", GUID: "guid-1", Type: Open, MiniProgramID: "mp-42", TS: ts}, w)

	// Empty strings and a zero offset are left out, as proto3 does for default values.
	w = nil
	w = str(w, 2, "t")
	w = str(w, 3, "a")
	w = str(w, 4, "g")
	w = varint(w, 5, 1) // EVENT_TYPE_SEARCH
	w = varint(w, 7, uint64(now.UnixNano()))
	f(Event{TenantID: "t", AppID: "a", GUID: "g", Type: Search, TS: now}, w)

	// Before 1970 ts_unix_nano is negative: an int64 varint of ten bytes.
	old := time.Date(1900, 1, 1, 0, 0, 0, 0, time.FixedZone("", -3*3600))
	w = nil
	w = str(w, 2, "t")
	w = str(w, 3, "a")
	w = str(w, 4, "g")
	w = varint(w, 5, 2) // EVENT_TYPE_PRE_DOWNLOAD
	w = str(w, 6, "m")
	w = varint(w, 7, uint64(old.UnixNano()))
	w = varint(w, 8, protowire.EncodeZigZag(-3*3600))
	f(Event{TenantID: "t", AppID: "a", GUID: "g", Type: PreDownload, MiniProgramID: "m", TS: old}, w)

	// AppendBinary appends.
	e := Event{TenantID: "t", AppID: "a", GUID: "g", Type: Search, TS: now}
	got, err := e.AppendBinary([]byte("prefix"))
	if want := append([]byte("prefix"), encode(t, e)...); err != nil || !bytes.Equal(got, want) {
		t.Errorf("AppendBinary(prefix)\ngot  %x, %v\nwant %x", got, err, want)
	}
}

func TestDecodeUnknownFields(t *testing.T) {
	e, r := Parse([]byte(ev()), now, DefaultBounds)
	if r != nil {
		t.Fatal(r)
	}
	base := encode(t, e)
	f := func(name string, b []byte) {
		t.Helper()
		got, err := Decode(b)
		if err != nil {
			t.Errorf("Decode(%s: %x): %v", name, b, err)
		} else if d := diffEvent(got, e); d != "" {
			t.Errorf("Decode(%s: %x): %s", name, b, d)
		}
	}
	var unknown []byte
	unknown = protowire.AppendVarint(protowire.AppendTag(unknown, 99, protowire.VarintType), 1<<40)
	unknown = protowire.AppendString(protowire.AppendTag(unknown, 99, protowire.BytesType), "a later field")
	unknown = protowire.AppendFixed32(protowire.AppendTag(unknown, 100, protowire.Fixed32Type), 7)
	unknown = protowire.AppendFixed64(protowire.AppendTag(unknown, 101, protowire.Fixed64Type), 7)
	unknown = protowire.AppendTag(unknown, 102, protowire.StartGroupType)
	unknown = protowire.AppendVarint(protowire.AppendTag(unknown, 1, protowire.VarintType), 5)
	unknown = protowire.AppendTag(unknown, 102, protowire.EndGroupType)
	unknown = protowire.AppendVarint(protowire.AppendTag(unknown, protowire.MaxValidNumber, protowire.VarintType), 0)

	f("field 99 appended", protowire.AppendVarint(protowire.AppendTag(bytes.Clone(base), 99, protowire.VarintType), 42))
	f("unknown fields appended", append(bytes.Clone(base), unknown...))
	f("unknown fields first", append(bytes.Clone(unknown), base...))
	// A known number with another wire type is skipped like an unknown field.
	f("event_id as varint", append(bytes.Clone(base), protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 1)...))
	f("event as bytes", append(bytes.Clone(base), protowire.AppendString(protowire.AppendTag(nil, 5, protowire.BytesType), "x")...))
}

func TestDecodeErrors(t *testing.T) {
	f := func(name string, b []byte) {
		t.Helper()
		e, err := Decode(b)
		if err == nil {
			t.Errorf("Decode(%s: %x)\ngot  %+v\nwant an error", name, b, e)
		} else if !errors.Is(err, ErrDecode) {
			t.Errorf("Decode(%s: %x): error %v does not wrap ErrDecode", name, b, err)
		}
	}
	str := func(b []byte, num protowire.Number, s string) []byte {
		return protowire.AppendString(protowire.AppendTag(b, num, protowire.BytesType), s)
	}
	varint := func(b []byte, num protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(protowire.AppendTag(b, num, protowire.VarintType), v)
	}
	// build encodes a search event without the fields in skip, with extra appended.
	build := func(skip string, extra ...[]byte) []byte {
		var b []byte
		if !strings.Contains(skip, "tenant") {
			b = str(b, 2, "t")
		}
		if !strings.Contains(skip, "app") {
			b = str(b, 3, "a")
		}
		if !strings.Contains(skip, "guid") {
			b = str(b, 4, "g")
		}
		if !strings.Contains(skip, "type") {
			b = varint(b, 5, 1)
		}
		if !strings.Contains(skip, "ts") {
			b = varint(b, 7, uint64(now.UnixNano()))
		}
		for _, x := range extra {
			b = append(b, x...)
		}
		return b
	}
	if _, err := Decode(build("")); err != nil {
		t.Fatalf("Decode(build()): %v; the cases below would prove nothing", err)
	}

	f("empty", nil)
	f("no tenant_id", build("tenant"))
	f("no app_id", build("app"))
	f("no guid", build("guid"))
	f("no event", build("type"))
	f("no ts", build("ts"))
	f("empty tenant_id", build("tenant", str(nil, 2, "")))
	f("empty guid", build("guid", str(nil, 4, "")))
	f("event 0", build("", varint(nil, 5, 0)))
	f("event 4", build("", varint(nil, 5, 4)))
	f("event 255", build("", varint(nil, 5, 255)))
	f("event 256", build("", varint(nil, 5, 256)))
	f("event 1<<32+1", build("", varint(nil, 5, 1<<32+1)))
	f("event -1", build("", varint(nil, 5, ^uint64(0))))
	f("offset +18:00:01", build("", varint(nil, 8, protowire.EncodeZigZag(18*3600+1))))
	f("offset -18:00:01", build("", varint(nil, 8, protowire.EncodeZigZag(-18*3600-1))))
	f("offset 2^40", build("", varint(nil, 8, protowire.EncodeZigZag(1<<40))))
	f("field number 0", build("", []byte{0x00, 0x01}))
	f("wire type 6", build("", []byte{0x0e, 0x01}))
	f("unterminated group", build("", protowire.AppendTag(nil, 99, protowire.StartGroupType)))
	f("stray end group", build("", protowire.AppendTag(nil, 99, protowire.EndGroupType)))
	f("string longer than input", build("", []byte{0x0a, 0x05, 'a'}))
	f("varint overflow", build("", append([]byte{0x28}, bytes.Repeat([]byte{0xff}, 10)...)))
	f("JSON", []byte(ev()))

	// The offset edges themselves are fine.
	for _, off := range []int64{-18 * 3600, 18 * 3600} {
		b := build("", varint(nil, 8, protowire.EncodeZigZag(off)))
		if e, err := Decode(b); err != nil {
			t.Errorf("Decode(offset %ds): %v", off, err)
		} else if _, got := e.TS.Zone(); int64(got) != off || !e.TS.Equal(now) {
			t.Errorf("Decode(offset %ds): got ts %s", off, e.TS)
		}
	}

	// Every strict prefix of an event is an error when ts is its last field (a UTC ts has no
	// offset field); when the offset follows, only cutting it off entirely goes unnoticed.
	for _, in := range []string{ev("ts", `"2026-10-03T12:00:00Z"`), ev("event", `"search"`, "mini_program_id", absent, "event_id", absent, "ts", `"2026-10-03T12:00:00Z"`)} {
		e, r := Parse([]byte(in), now, DefaultBounds)
		if r != nil {
			t.Fatal(r)
		}
		b := encode(t, e)
		for n := range len(b) {
			f(fmt.Sprintf("%d of %d bytes", n, len(b)), b[:n])
		}
	}
	e, r := Parse([]byte(ev()), now, DefaultBounds)
	if r != nil {
		t.Fatal(r)
	}
	b := encode(t, e)
	offField := varint(nil, 8, protowire.EncodeZigZag(8*3600))
	if !bytes.HasSuffix(b, offField) {
		t.Fatalf("AppendBinary(%+v) = %x, want it to end with the offset field %x", e, b, offField)
	}
	for n := range len(b) - len(offField) {
		f(fmt.Sprintf("%d of %d bytes", n, len(b)), b[:n])
	}
	for n := len(b) - len(offField) + 1; n < len(b); n++ {
		f(fmt.Sprintf("%d of %d bytes", n, len(b)), b[:n])
	}
}

func TestDeviceKey(t *testing.T) {
	// Computed once and pinned: MAU device sets are stored by this key, so changing the
	// derivation would count every device of a month twice.
	const golden = "764f2db7c4fb96ef90a1d851bdc0aac4"
	k := KeyOf("acme", "acme-super", "guid-1")
	if got := k.String(); got != golden {
		t.Errorf("KeyOf(acme, acme-super, guid-1)\ngot  %s\nwant %s", got, golden)
	}
	if KeyOf("acme", "acme-super", "guid-1") != k {
		t.Errorf("KeyOf is not deterministic")
	}
	e := Event{TenantID: "acme", AppID: "acme-super", GUID: "guid-1", Type: Open, MiniProgramID: "mp", TS: now}
	if got := e.Key(); got != k {
		t.Errorf("Event.Key() = %s, want KeyOf = %s", got, k)
	}
	// Only tenant, app and guid make the key.
	e2 := Event{EventID: "x", TenantID: "acme", AppID: "acme-super", GUID: "guid-1", Type: Search, TS: now.Add(time.Hour)}
	if got := e2.Key(); got != k {
		t.Errorf("Key of another event of the same device = %s, want %s", got, k)
	}

	distinct := [][3]string{
		{"acme", "acme-super", "guid-1"},
		{"acme2", "acme-super", "guid-1"},
		{"acme", "acme-super2", "guid-1"},
		{"acme", "acme-super", "guid-2"},
		{"Acme", "acme-super", "guid-1"},
		{"acme", "acme-super", "guid-1 "},
		{"a", "bc", "d"},
		{"ab", "c", "d"},
		{"a", "b", "cd"},
		{"a", "bcd", ""},
		{"abc", "d", ""},
		{"", "", "abcd"},
		{"a", "b", "c/d"},
		{"a", "b/c", "d"},
		{"a", "b", "c"},
		{"b", "a", "c"},
		{"c", "b", "a"},
	}
	seen := map[DeviceKey][3]string{}
	for _, d := range distinct {
		k := KeyOf(d[0], d[1], d[2])
		if prev, ok := seen[k]; ok {
			t.Errorf("KeyOf%q = KeyOf%q = %s, want distinct keys", d, prev, k)
		}
		seen[k] = d
		if s := k.String(); len(s) != 32 || strings.Trim(s, "0123456789abcdef") != "" {
			t.Errorf("KeyOf%q.String() = %q, want 32 lower-case hex digits", d, s)
		}
	}
}

func TestPartitionKey(t *testing.T) {
	f := func(tenant, app, guid, want string) {
		t.Helper()
		e := Event{TenantID: tenant, AppID: app, GUID: guid}
		if got := string(e.PartitionKey()); got != want {
			t.Errorf("PartitionKey(%q, %q, %q) = %q, want %q", tenant, app, guid, got, want)
		}
	}
	f("acme", "acme-super", "guid-1", "acme/acme-super/guid-1")
	f("a", "b", "c/d", "a/b/c/d") // a GUID may hold '/', ids cannot
	f("a", "b", "", "a/b/")
}

func TestType(t *testing.T) {
	f := func(typ Type, name string, valid bool) {
		t.Helper()
		if got := typ.String(); got != name {
			t.Errorf("Type(%d).String() = %q, want %q", uint8(typ), got, name)
		}
		if got := typ.Valid(); got != valid {
			t.Errorf("Type(%d).Valid() = %v, want %v", uint8(typ), got, valid)
		}
		got, ok := ParseType(name)
		if ok != valid || valid && got != typ {
			t.Errorf("ParseType(%q) = %d, %v; want %d, %v", name, got, ok, typ, valid)
		}
	}
	f(0, "Type(0)", false)
	f(Search, "search", true)
	f(PreDownload, "pre_download", true)
	f(Open, "open", true)
	f(4, "Type(4)", false)
	f(255, "Type(255)", false)
	if Search != 1 || PreDownload != 2 || Open != 3 {
		t.Errorf("Type values %d %d %d must match EventType of event.proto (1 2 3)", Search, PreDownload, Open)
	}
	for _, s := range []string{"", "Search", "OPEN", "pre-download", "open\x00"} {
		if got, ok := ParseType(s); ok {
			t.Errorf("ParseType(%q) = %s, want not ok", s, got)
		}
	}
}
