package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// Seed corpora beyond the f.Add seeds below live in testdata/fuzz/<FuzzName>/.

var reasons = map[Reason]bool{
	ReasonBadJSON: true, ReasonMissingField: true, ReasonBadField: true, ReasonBadEventType: true,
	ReasonTSTooOld: true, ReasonTSInFuture: true,
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		ev(),
		ev("event", `"search"`, "mini_program_id", absent, "event_id", absent),
		ev("event", `"pre_download"`, "ts", `"2026-10-03T12:00:00.123456789Z"`),
		ev("ts", `"1677-09-21T00:12:43.145224192Z"`),
		ev("ts", `"2026-10-04T06:00:00+18:00"`),
		ev("guid", `"\u0041\ud83d\ude00"`),
		ev("guid", "\"g\xff\""),
		ev("tenant_id", `1e999`),
		ev("extra", `{"a":[1,2,{"b":null}]}`),
		ev()[:40],
		`[` + ev() + `]`,
		`{}`, `null`, `"x"`, `-0`, ``,
		// The hand decoder's edges: case variants, repeats, escapes, unknown fields, spacing.
		`{"TENANT_ID":"acme","tenant_id":"x"}`, `{"guid":"a","guid":"b"}`, `{"guid":"a\u0062"}`,
		`{"colour":"red","guid":"g"}`, " {\t\"guid\" :\r\n\"g\" , \"ts\":\"x\"}\n", `{"guid":"g"}}`, `{"guid":"g",}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		// Whatever the hand decoder takes, encoding/json decodes the same way.
		var flat, slow jsonEvent
		if trimmed := bytes.TrimSpace(raw); flat.decodeFlat(trimmed) {
			if err := json.Unmarshal(trimmed, &slow); err != nil || !utf8.Valid(trimmed) || !sameJSON(flat, slow) {
				t.Fatalf("decodeFlat(%q) = %s; json.Unmarshal = %s, %v", trimmed, showJSON(flat), showJSON(slow), err)
			}
		}
		unbounded, ru := Parse(raw, now, Bounds{})
		e, r := Parse(raw, now, DefaultBounds)

		// Bounds only ever add ts_too_old or ts_in_future to what Parse decides without them.
		switch {
		case ru != nil && (r == nil || *r != *ru):
			t.Fatalf("Parse(%q): unbounded %+v, bounded %+v; want the same rejection", raw, *ru, r)
		case ru == nil && r != nil && r.Reason != ReasonTSTooOld && r.Reason != ReasonTSInFuture:
			t.Fatalf("Parse(%q): accepted unbounded, rejected bounded with %+v", raw, *r)
		case ru == nil && r == nil && diffEvent(e, unbounded) != "":
			t.Fatalf("Parse(%q): bounded and unbounded events differ: %s", raw, diffEvent(e, unbounded))
		}
		if ru != nil {
			if !reasons[ru.Reason] || ru.Message == "" || ru.Index != 0 {
				t.Fatalf("Parse(%q): rejection %+v", raw, *ru)
			}
			if (ru.Reason == ReasonBadJSON) != (ru.Field == "") {
				t.Fatalf("Parse(%q): rejection %+v: bad_json, and only it, has no field", raw, *ru)
			}
			if unbounded != (Event{}) {
				t.Fatalf("Parse(%q): rejected with %+v, returned %+v", raw, *ru, unbounded)
			}
			return
		}
		checkEvent(t, raw, unbounded)
		if !json.Valid(bytes.TrimSpace(raw)) {
			t.Fatalf("Parse(%q) accepted invalid JSON", raw)
		}
		if r == nil {
			if e.TS.Before(now.Add(-DefaultBounds.MaxAge)) || e.TS.After(now.Add(DefaultBounds.MaxFuture)) {
				t.Fatalf("Parse(%q) accepted ts %s outside DefaultBounds", raw, e.TS)
			}
		}
	})
}

// checkEvent checks that an accepted event keeps the contract and survives the wire.
func checkEvent(t *testing.T, raw []byte, e Event) {
	t.Helper()
	if !ValidID(e.TenantID) || !ValidID(e.AppID) {
		t.Fatalf("Parse(%q) accepted ids %q %q", raw, e.TenantID, e.AppID)
	}
	if !e.Type.Valid() {
		t.Fatalf("Parse(%q) accepted type %s", raw, e.Type)
	}
	if !printable(e.GUID, 1, 128) || !printable(e.EventID, 0, 64) || !printable(e.MiniProgramID, 0, 128) {
		t.Fatalf("Parse(%q) accepted guid %q event_id %q mini_program_id %q", raw, e.GUID, e.EventID, e.MiniProgramID)
	}
	if e.MiniProgramID == "" && e.Type != Search {
		t.Fatalf("Parse(%q) accepted %s without mini_program_id", raw, e.Type)
	}
	b, err := e.AppendBinary(nil)
	if err != nil {
		t.Fatalf("AppendBinary(Parse(%q)): %v", raw, err)
	}
	d, err := Decode(b)
	if err != nil {
		t.Fatalf("Decode(AppendBinary(Parse(%q))): %v", raw, err)
	}
	if diff := diffEvent(d, e); diff != "" {
		t.Fatalf("Decode(AppendBinary(Parse(%q))): %s", raw, diff)
	}
}

func printable(s string, minLen, maxLen int) bool {
	if len(s) < minLen || len(s) > maxLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func FuzzSplitBatch(f *testing.F) {
	e := ev()
	for _, s := range []struct {
		body string
		max  int
	}{
		{"[" + e + "," + e + "]", MaxBatchEvents},
		{e + "\n" + e + "\r\n\r\n" + e[:20] + "\n", MaxBatchEvents},
		{"[" + e + "," + e + "]", 1},
		{e + "\n" + e, 1},
		{"[1,\"x\",null,[],{}]", 0},
		{"{}\n{}", -1},
		{"[\"\xff\", 1e999]", 3},
		{" [ ] ", MaxBatchEvents},
		{"[" + e, MaxBatchEvents},
		{"\n\r\n \t", MaxBatchEvents},
		{strings.Repeat("{}\n", 20), 10},
	} {
		f.Add([]byte(s.body), s.max)
	}
	f.Fuzz(func(t *testing.T, body []byte, maxEvents int) {
		in := bytes.Clone(body)
		items, err := SplitBatch(body, maxEvents)
		if !bytes.Equal(in, body) {
			t.Fatalf("SplitBatch modified its input")
		}
		if err != nil {
			if !errors.Is(err, ErrEmptyBatch) && !errors.Is(err, ErrBadBatch) && !errors.Is(err, ErrBatchTooLarge) {
				t.Fatalf("SplitBatch(%q, %d): error %v is none of the batch errors", body, maxEvents, err)
			}
			if items != nil {
				t.Fatalf("SplitBatch(%q, %d): error %v with %d items", body, maxEvents, err, len(items))
			}
			return
		}
		if len(items) == 0 || len(items) > maxEvents {
			t.Fatalf("SplitBatch(%q, %d): %d items", body, maxEvents, len(items))
		}
		isArray := bytes.HasPrefix(bytes.TrimLeft(body, " \t\r\n"), []byte("["))
		for i, it := range items {
			if len(it) == 0 {
				t.Fatalf("SplitBatch(%q, %d): item %d is empty", body, maxEvents, i)
			}
			if !bytes.Equal(it, bytes.TrimSpace(it)) {
				t.Fatalf("SplitBatch(%q, %d): item %d %q has surrounding blanks", body, maxEvents, i, it)
			}
			if isArray && !json.Valid(it) {
				t.Fatalf("SplitBatch(%q, %d): array item %d %q is not JSON", body, maxEvents, i, it)
			}
			if !isArray && bytes.IndexByte(it, '\n') >= 0 {
				t.Fatalf("SplitBatch(%q, %d): NDJSON item %d %q spans lines", body, maxEvents, i, it)
			}
		}
		// The limit only decides whether a batch is taken, never how it is split.
		if maxEvents > len(items) {
			again, err := SplitBatch(body, len(items))
			if err != nil || len(again) != len(items) {
				t.Fatalf("SplitBatch(%q, %d) gave %d items; with the limit at %d: %d, %v", body, maxEvents, len(items), len(items), len(again), err)
			}
		}
		if _, err := SplitBatch(body, len(items)-1); !errors.Is(err, ErrBatchTooLarge) {
			t.Fatalf("SplitBatch(%q, %d) gave %d items; with one fewer allowed: %v, want ErrBatchTooLarge", body, maxEvents, len(items), err)
		}
	})
}

func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		ev(),
		ev("event", `"search"`, "mini_program_id", absent, "event_id", absent, "ts", `"2026-10-03T12:00:00Z"`),
		ev("event", `"pre_download"`, "ts", `"2026-10-02T18:00:00-18:00"`),
	} {
		e, r := Parse([]byte(s), now, DefaultBounds)
		if r != nil {
			f.Fatal(r)
		}
		b, _ := e.AppendBinary(nil)
		f.Add(b)
		f.Add(b[:len(b)/2])
		f.Add(protowire.AppendString(protowire.AppendTag(b, 99, protowire.BytesType), "unknown"))
	}
	f.Add([]byte{})
	f.Add([]byte{0x28, 0x04})
	f.Add([]byte(ev()))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrDecode) {
				t.Fatalf("Decode(%x): error %v does not wrap ErrDecode", b, err)
			}
			return
		}
		if !e.Type.Valid() || e.TenantID == "" || e.AppID == "" || e.GUID == "" {
			t.Fatalf("Decode(%x) = %+v, want a type, tenant_id, app_id and guid", b, e)
		}
		if _, off := e.TS.Zone(); off < -18*3600 || off > 18*3600 {
			t.Fatalf("Decode(%x) = ts %s, offset beyond ±18h", b, e.TS)
		}
		b2, err := e.AppendBinary(nil)
		if err != nil {
			t.Fatalf("AppendBinary(Decode(%x)): %v", b, err)
		}
		e2, err := Decode(b2)
		if err != nil {
			t.Fatalf("Decode(AppendBinary(Decode(%x))): %v", b, err)
		}
		if d := diffEvent(e2, e); d != "" {
			t.Fatalf("Decode(AppendBinary(Decode(%x))): %s", b, d)
		}
		// The encoding of an event is canonical.
		b3, _ := e2.AppendBinary(nil)
		if !bytes.Equal(b2, b3) {
			t.Fatalf("AppendBinary is not canonical: %x, then %x", b2, b3)
		}
	})
}

func sameJSON(a, b jsonEvent) bool { return showJSON(a) == showJSON(b) }

// showJSON prints the fields of j, telling absent from empty.
func showJSON(j jsonEvent) string {
	var out []string
	for _, f := range []*string{j.EventID, j.TenantID, j.AppID, j.GUID, j.Event, j.MiniProgramID, j.TS} {
		if f == nil {
			out = append(out, "<absent>")
		} else {
			out = append(out, strconv.Quote(*f))
		}
	}
	return strings.Join(out, " ")
}
